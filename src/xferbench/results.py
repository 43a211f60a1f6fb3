"""The results document: versioned JSON, written atomically after every finished cell."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

from xferbench.atomic import atomic_write_text
from xferbench.errors import UserError

SCHEMA_VERSION = 1

#: fields every entry of ``runs`` has (see docs/results.md)
RUN_FIELDS = (
    "backbone", "dataset", "head", "method", "shots", "status", "error",
    "n_train", "n_val", "n_test", "skipped_files",
    "test_accuracy", "test_accuracy_ci", "extract_images_per_second", "extract_seconds",
    "train_seconds", "cache_hits",
)


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


def schema() -> dict[str, Any]:
    """The JSON Schema of the results document (docs/results.md explains the fields)."""
    from importlib import resources

    text = resources.files("xferbench").joinpath(f"schema/results-v{SCHEMA_VERSION}.schema.json").read_text()
    return json.loads(text)


def validate_document(document: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` when ``document`` breaks the schema."""
    import jsonschema

    jsonschema.validate(_clean(document), schema())


def load_document(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"no results file at {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not a results JSON file: {exc}") from None
    if not isinstance(document, dict) or "schema_version" not in document:
        raise UserError(f"{path} is not an xferbench results file (no schema_version)")
    if document["schema_version"] > SCHEMA_VERSION:
        raise UserError(f"{path} has schema_version {document['schema_version']}; this xferbench reads up to "
                        f"{SCHEMA_VERSION}: upgrade xferbench")
    return document
