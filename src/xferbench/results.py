"""The results document: versioned JSON, written atomically after every finished cell."""

from __future__ import annotations

import datetime as dt
import functools
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
    """Write ``document`` to ``path`` atomically.

    When that fails (a full disk, a read-only folder), ``path`` keeps its last good copy, the
    document goes to a rescue file (in the cache, else the temp folder) and a UserError names both.
    """
    text = to_json(document)
    try:
        atomic_write_text(path, text)
    except OSError as exc:
        rescue = _write_rescue(path, text, document)
        reason = exc.strerror or type(exc).__name__
        kept = "it keeps its last complete version" if Path(path).is_file() else "it was not created"
        if rescue is None:
            saved = "the finished runs could not be saved anywhere else either (cache and temp folder refused them)"
        else:
            saved = f"the finished runs are saved in {rescue}; go on with: xferbench run --resume {rescue}"
        raise UserError(f"cannot write results to {path}: {reason}; {kept}; {saved}") from None


def _write_rescue(path: Path, text: str, document: dict[str, Any]) -> Path | None:
    """``text`` in ``<cache>/rescue/`` or the temp folder, whichever takes it first; None if neither does."""
    import os
    import tempfile

    # One name per process: a second failed write (the sweep's last) replaces the first rescue copy.
    stamp = os.getpid()
    cache_dir = (document.get("options") or {}).get("cache_dir")
    folders = ([Path(str(cache_dir)) / "rescue"] if cache_dir else []) + [Path(tempfile.gettempdir())]
    for folder in folders:
        rescue = folder / f"xferbench-rescue-{Path(path).stem}-{stamp}.json"
        try:
            atomic_write_text(rescue, text)
        except OSError:
            continue
        return rescue
    return None


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
    document["properties"]["executor"] = {
        "type": "object", "required": ["name"],
        "description": "where the runs executed (--executor; docs/scaling.md)",
        "properties": {"name": {"enum": ["local", "ray"]},
                       "ray_version": {"type": "string"},
                       "address": {"type": "string", "description": "the Ray cluster, or 'local' for one started "
                                                                    "for the run"},
                       "nodes": {"type": "integer", "minimum": 0, "description": "alive nodes of the cluster"},
                       "nodes_used": {"type": "integer", "minimum": 0},
                       "workers_used": {"type": "integer", "minimum": 0,
                                        "description": "worker processes that ran runs or extraction shards"}}}
    document["$defs"]["run"] = run_schema()
    return document


def schema() -> dict[str, Any]:
    """The JSON Schema of the results document (docs/results.md explains the fields)."""
    from importlib import resources

    return json.loads(resources.files("xferbench").joinpath(SCHEMA_FILE).read_text())


@functools.cache
def _schema(version: int) -> dict[str, Any]:
    from importlib import resources

    return json.loads(resources.files("xferbench").joinpath(f"schema/results-v{version}.schema.json").read_text())


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
    """A results file, checked against the schema: anything else is a one-line UserError."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"no results file at {path}") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a folder, not a results file") from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not a results JSON file: {exc}") from None
    except (ValueError, RecursionError) as exc:  # e.g. nesting too deep, numbers too long
        raise UserError(f"{path} is not a results JSON file: {type(exc).__name__}") from None
    if not isinstance(document, dict) or "schema_version" not in document:
        raise UserError(f"{path} is not an xferbench results file (no schema_version)")
    version = document["schema_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise UserError(f"{path} has an invalid schema_version {version!r}; it is not an xferbench results file")
    if version > SCHEMA_VERSION:
        raise UserError(f"{path} has schema_version {version}; this xferbench reads up to "
                        f"{SCHEMA_VERSION}: upgrade xferbench")
    # Checked as written (an old file against its own version's schema), then migrated.
    problem = schema_problem(document, version)
    if problem:
        raise UserError(f"{path} is not a valid xferbench results file: {problem}")
    try:
        return migrate(document)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None


def schema_problem(document: Any, version: int = SCHEMA_VERSION) -> str | None:
    """The first place where ``document`` breaks schema ``version``, as ``"document.runs[2].shots ..."``, or None.

    A small validator for the JSON Schema keywords the results schemas use, so reading a file
    needs no jsonschema at run time.
    """
    root = _schema(version)
    # The document's own keys may be missing (each reader says what it needs, as --resume does);
    # what is there must have its type.
    top = {**root, "required": [key for key in root.get("required", ()) if key == "schema_version"]}
    return _check(document, top, root, "document")


_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "integer": (int,), "number": (int, float),
    "boolean": (bool,), "null": (type(None),),
}


def _is_type(value: Any, name: str) -> bool:
    if name in ("integer", "number") and isinstance(value, bool):
        return False
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES[name])


def _check(value: Any, rule: dict[str, Any], root: dict[str, Any], where: str) -> str | None:
    if "$ref" in rule:
        target: Any = root
        for part in rule["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        problem = _check(value, target, root, where)
        if problem:
            return problem
    if "type" in rule:
        names = rule["type"] if isinstance(rule["type"], list) else [rule["type"]]
        if not any(_is_type(value, name) for name in names):
            return f"{where} is {_json_type(value)}, expected {' or '.join(names)}"
    if "const" in rule and not _same(value, rule["const"]):
        return f"{where} must be {json.dumps(rule['const'])}"
    if "enum" in rule and not any(_same(value, item) for item in rule["enum"]):
        return f"{where} must be one of {', '.join(map(json.dumps, rule['enum']))}"
    if _is_type(value, "number"):
        if "minimum" in rule and value < rule["minimum"]:
            return f"{where} must be >= {rule['minimum']}"
        if "maximum" in rule and value > rule["maximum"]:
            return f"{where} must be <= {rule['maximum']}"
    if isinstance(value, list):
        if "minItems" in rule and len(value) < rule["minItems"]:
            return f"{where} needs at least {rule['minItems']} items"
        if "maxItems" in rule and len(value) > rule["maxItems"]:
            return f"{where} takes at most {rule['maxItems']} items"
        if "items" in rule:
            for i, item in enumerate(value):
                if problem := _check(item, rule["items"], root, f"{where}[{i}]"):
                    return problem
    if isinstance(value, dict):
        for key in rule.get("required", ()):
            if key not in value:
                return f"{where} has no {key!r}"
        properties = rule.get("properties", {})
        for key, item in value.items():
            sub = properties.get(key, rule.get("additionalProperties"))
            if isinstance(sub, dict) and (problem := _check(item, sub, root, f"{where}.{key}")):
                return problem
    for combinator in ("anyOf", "oneOf"):
        if combinator in rule:
            problems = [_check(value, option, root, where) for option in rule[combinator]]
            passed = sum(p is None for p in problems)
            if passed == 0 or (combinator == "oneOf" and passed > 1):
                return problems[0] or f"{where} matches more than one allowed form"
    for part in rule.get("allOf", ()):
        if "if" in part:
            applies = _check(value, part["if"], root, where) is None
            if applies and (problem := _check(value, part.get("then", {}), root, where)):
                return problem
        elif problem := _check(value, part, root, where):
            return problem
    return None


def _same(value: Any, expected: Any) -> bool:
    """JSON equality: ``true`` is not ``1``."""
    return value == expected and isinstance(value, bool) == isinstance(expected, bool)


def _json_type(value: Any) -> str:
    for name in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _is_type(value, name):
            return "an integer" if name == "integer" else f"{'an' if name in ('array', 'object') else 'a'} {name}" \
                if name != "null" else "null"
    return type(value).__name__
