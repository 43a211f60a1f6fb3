"""The results document: versioned JSON, written atomically after every finished cell."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

from xferbench.atomic import atomic_write_text
from xferbench.errors import UserError

SCHEMA_VERSION = 2
SCHEMA_FILE = f"schema/results-v{SCHEMA_VERSION}.schema.json"


def default_output_path(now: dt.datetime | None = None) -> Path:
    now = now or dt.datetime.now()
    return Path("xferbench-results") / f"{now:%Y%m%d-%H%M%S}.json"


def check_writable(path: Path) -> None:
    """Fail before any work is done when the results cannot be written."""
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot write results to {path}: {exc.strerror or exc}; choose another --output") from None
    if path.is_dir():
        raise UserError(f"--output {path} is a directory; give a file name ending in .json")
    import os
    import tempfile

    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".xferbench-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"cannot write results to {path}: {exc.strerror or exc}; choose another --output") from None


def _clean(value: Any) -> Any:
    """JSON has no NaN or numpy types."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, str):
        return _clean(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def to_json(document: dict[str, Any]) -> str:
    """The document as JSON text (paths as strings, NaN as null)."""
    return json.dumps(_clean(document), indent=2, sort_keys=False) + "\n"


def write_document(path: Path, document: dict[str, Any]) -> None:
    atomic_write_text(path, to_json(document))


def build_schema() -> dict[str, Any]:
    """The JSON Schema of the results document, its runs generated from :class:`RunRecord`.

    The committed copy (``SCHEMA_FILE``) is for readers outside Python; a test keeps it equal.
    """
    from importlib import resources

    from xferbench.record import run_schema

    document = json.loads(resources.files("xferbench").joinpath("schema/results-v1.schema.json").read_text())
    document["$id"] = f"https://xferbench.invalid/schema/results-v{SCHEMA_VERSION}.json"
    document["title"] = f"xferbench results document, schema_version {SCHEMA_VERSION}"
    document["properties"]["schema_version"] = {"const": SCHEMA_VERSION}
    options = document["properties"]["options"]
    options["properties"]["compare"] = {"type": "array", "items": {"type": "string"},
                                        "description": "the methods that ran (--compare)"}
    options["properties"]["method_options"] = {"type": "object"}
    options["properties"]["target_accuracy"] = {"type": ["number", "null"]}
    document["properties"]["comparison"] = {
        "type": "object", "required": ["target_accuracy", "groups"],
        "description": "transfer against full retraining and fine-tuning per backbone and dataset "
                       "(xferbench.comparison; docs/results.md)",
        "properties": {"target_accuracy": {"type": ["number", "null"]},
                       "groups": {"type": "array", "items": {
                           "type": "object", "required": ["backbone", "dataset", "head", "by_shots", "data_needed",
                                                          "verdict"],
                           "properties": {"by_shots": {"type": "array"}, "data_needed": {"type": "object"},
                                          "verdict": {"type": "string"}}}}}}
    document["$defs"]["run"] = run_schema()
    return document


def schema() -> dict[str, Any]:
    """The JSON Schema of the results document (docs/results.md explains the fields)."""
    from importlib import resources

    return json.loads(resources.files("xferbench").joinpath(SCHEMA_FILE).read_text())


def validate_document(document: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` when ``document`` breaks the schema."""
    import jsonschema

    jsonschema.validate(_clean(document), schema())


def migrate(document: dict[str, Any]) -> dict[str, Any]:
    """A results document of an older schema_version, as the current version has it.

    Version 1 -> 2: every run gets every field of :class:`RunRecord` (defaults where it had none);
    a v1 ``head`` of ``"-"`` and the method names are kept as they were.
    """
    from xferbench.record import RunRecord

    version = document.get("schema_version")
    if version == SCHEMA_VERSION:
        return document
    if version != 1:
        raise UserError(f"results schema_version {version!r} is unknown; this xferbench reads 1 to {SCHEMA_VERSION}")
    runs = document.get("runs", [])
    if not isinstance(runs, list) or not all(isinstance(run, dict) for run in runs):
        raise UserError("the results file's 'runs' is not a list of runs")
    migrated = dict(document)
    migrated["schema_version"] = SCHEMA_VERSION
    migrated["migrated_from"] = version
    options = dict(migrated.get("options") or {})
    options.setdefault("method_options", {})
    migrated["options"] = options
    migrated["runs"] = [{**RunRecord.from_dict(run).to_dict(), **run} for run in runs]
    return migrated


def load_document(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"no results file at {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not a results JSON file: {exc}") from None
    if not isinstance(document, dict) or "schema_version" not in document:
        raise UserError(f"{path} is not an xferbench results file (no schema_version)")
    version = document["schema_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise UserError(f"{path} has an invalid schema_version {version!r}; it is not an xferbench results file")
    if version > SCHEMA_VERSION:
        raise UserError(f"{path} has schema_version {version}; this xferbench reads up to "
                        f"{SCHEMA_VERSION}: upgrade xferbench")
    try:
        return migrate(document)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
