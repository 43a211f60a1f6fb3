"""Benchmark suites: named tasks plus a protocol, run as one ordinary sweep.

A suite run is a plain ``xferbench run`` whose datasets are the suite's tasks: each task is the
dataset token ``suite:SUITE/TASK`` (``suite:FILE.toml#TASK`` for a suite file), which loads the
task's own dataset with the task's options and split rules. So ``--resume``, the results file
and the reporters work as for any run; the results document also holds the suite (``suite``).

Suite files (``--suite FILE.toml``) are documented in docs/suites.md.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xferbench.errors import UserError
from xferbench.specs import SuiteSpec

if TYPE_CHECKING:
    from xferbench.context import RunContext
    from xferbench.data import ImageDataset
    from xferbench.plan import RunRequest
    from xferbench.plugin_manager import Catalog

TASK_DATASET = "suite"


@dataclass(frozen=True)
class Task:
    """One task of a suite: a dataset token, its options, split rules and a group.

    ``train`` / ``val`` / ``test``: keep at most this many images of the split (a seeded draw,
    ``split_seed``, from the keys in sorted order); None keeps them all. Split rules that the
    dataset itself offers (e.g. TFDS split strings) go into ``options``.
    """

    name: str
    dataset: str
    group: str = "all"
    options: Mapping[str, Any] = field(default_factory=dict)
    train: int | None = None
    val: int | None = None
    test: int | None = None
    split_seed: int = 0
    #: one line on where the data comes from (shown by ``xferbench list suites`` and docs)
    note: str = ""

    def describe(self) -> dict[str, Any]:
        limits = {k: v for k, v in (("train", self.train), ("val", self.val), ("test", self.test)) if v}
        return {"name": self.name, "dataset": self.dataset, "group": self.group, "options": dict(self.options),
                **({"limits": limits} if limits else {})}


@dataclass(frozen=True)
class Protocol:
    """How every task is run, unless the command line says otherwise."""

    heads: tuple[str, ...] = ("logreg",)
    head_options: Mapping[str, str] = field(default_factory=dict)
    methods: tuple[str, ...] = ("transfer",)
    shots: tuple[int | str, ...] = ("all",)
    #: used when --backbone is not given
    backbones: tuple[str, ...] = ()
    backbone_options: Mapping[str, str] = field(default_factory=dict)
    description: str = ""

    def describe(self) -> dict[str, Any]:
        return {"heads": list(self.heads), "head_options": dict(self.head_options), "compare": list(self.methods),
                "shots": list(self.shots), "description": self.description}


# -- suite files -------------------------------------------------------------------------------
_TASK_KEYS = {"name", "dataset", "group", "options", "train", "val", "test", "split_seed", "note"}
_PROTOCOL_KEYS = {"heads", "head_options", "compare", "shots", "backbones", "backbone_options", "description"}


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise UserError(f"{where} must be a list of names")
    return tuple(value)


def _options(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise UserError(f"{where} must be a table of KEY = VALUE")
    return {str(k): (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in value.items()}


def load_suite_file(path: Path) -> SuiteSpec:
    """A suite from a TOML file (docs/suites.md); any mistake is one line naming the file and the key."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"--suite {path}: no such file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"--suite {path}: not a readable TOML file ({exc})") from None
    where = f"suite file {path}"
    unknown = sorted(set(data) - {"name", "description", "protocol", "tasks"})
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r} (keys: name, description, protocol, tasks)")
    raw_protocol = data.get("protocol", {})
    if not isinstance(raw_protocol, dict) or (bad := sorted(set(raw_protocol) - _PROTOCOL_KEYS)):
        raise UserError(f"{where}: [protocol] has unknown key {bad[0] if raw_protocol else '?'!r} "
                        f"(keys: {', '.join(sorted(_PROTOCOL_KEYS))})")
    protocol = Protocol(
        heads=_strings(raw_protocol.get("heads", ["logreg"]), f"{where}: protocol.heads"),
        head_options=_options(raw_protocol.get("head_options", {}), f"{where}: protocol.head_options"),
        methods=_strings(raw_protocol.get("compare", ["transfer"]), f"{where}: protocol.compare"),
        shots=tuple(raw_protocol.get("shots", ["all"])),
        backbones=_strings(raw_protocol.get("backbones", []), f"{where}: protocol.backbones"),
        backbone_options=_options(raw_protocol.get("backbone_options", {}), f"{where}: protocol.backbone_options"),
        description=str(raw_protocol.get("description", "")))
    raw_tasks = data.get("tasks")
    if not isinstance(raw_tasks, list) or not raw_tasks:
        raise UserError(f"{where}: no tasks; add [[tasks]] tables with name and dataset")
    tasks = []
    for i, raw in enumerate(raw_tasks, start=1):
        if not isinstance(raw, dict) or "name" not in raw or "dataset" not in raw:
            raise UserError(f"{where}: task {i} needs a name and a dataset")
        if bad := sorted(set(raw) - _TASK_KEYS):
            raise UserError(f"{where}: task {raw['name']!r} has unknown key {bad[0]!r} "
                            f"(keys: {', '.join(sorted(_TASK_KEYS))})")
        for key in ("train", "val", "test"):
            if key in raw and (not isinstance(raw[key], int) or isinstance(raw[key], bool) or raw[key] < 1):
                raise UserError(f"{where}: task {raw['name']!r}: {key} must be a positive number of images")
        tasks.append(Task(name=str(raw["name"]), dataset=str(raw["dataset"]), group=str(raw.get("group", "all")),
                          options=_options(raw.get("options", {}), f"{where}: task {raw['name']!r} options"),
                          train=raw.get("train"), val=raw.get("val"), test=raw.get("test"),
                          split_seed=int(raw.get("split_seed", 0)), note=str(raw.get("note", ""))))
    name = str(data.get("name") or Path(path).stem)
    try:
        return SuiteSpec(name=name, description=str(data.get("description", f"suite file {path}")),
                         tasks=tuple(tasks), protocol=protocol, plugin=str(path))
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None


# -- from a suite to a run ---------------------------------------------------------------------
def find_suite(text: str, catalog: Catalog) -> tuple[SuiteSpec, str]:
    """``--suite NAME`` or ``--suite FILE.toml`` -> (the suite, the reference its task tokens use)."""
    if text.endswith(".toml"):
        path = Path(text).expanduser().resolve()
        return load_suite_file(path), str(path)
    spec, _ = catalog.suites.resolve(text)
    return spec, spec.name


def task_token(reference: str, task: Task) -> str:
    separator = "#" if reference.endswith(".toml") else "/"
    return f"{TASK_DATASET}:{reference}{separator}{task.name}"


def check_suite(suite: SuiteSpec, catalog: Catalog) -> None:
    """Every task names a known dataset with valid options, and task names are unique."""
    names = [task.name for task in suite.tasks]
    if len(set(names)) != len(names):
        raise UserError(f"suite {suite.name!r}: two tasks have the same name; task names must be unique")
    if not suite.tasks:
        raise UserError(f"suite {suite.name!r} has no tasks")
    for task in suite.tasks:
        try:
            spec, _ = catalog.datasets.resolve(task.dataset)
            spec.validate(task.options)
        except UserError as exc:
            raise UserError(f"suite {suite.name!r}, task {task.name!r}: {exc}") from None


def apply_suite(request: RunRequest, suite: SuiteSpec, reference: str, given: set[str]) -> RunRequest:
    """The request with the suite's tasks as datasets and its protocol where the command line is silent.

    ``given``: the ``run`` options the user wrote (``head``, ``compare``, ``shots``, ``backbone``, ...).
    """
    from xferbench.runner import parse_shots

    protocol: Protocol = suite.protocol or Protocol()
    changes: dict[str, Any] = {"datasets": [task_token(reference, task) for task in suite.tasks],
                               "suite": describe_suite(suite, reference)}
    if "head" not in given:
        changes["heads"] = list(protocol.heads)
    if "compare" not in given:
        changes["methods"] = list(protocol.methods)
    if "shots" not in given:
        changes["shots"] = parse_shots(",".join(str(s) for s in protocol.shots))
    if "backbone" not in given and protocol.backbones:
        changes["backbones"] = list(protocol.backbones)
        changes["backbone_options"] = {**protocol.backbone_options, **request.backbone_options}
    changes["head_options"] = {**protocol.head_options, **request.head_options}
    if request.dataset_options:
        raise UserError("--dataset-opt does not apply to a suite: each task sets its dataset's options "
                        "(write your own suite file to change them, see docs/suites.md)")
    return replace(request, **changes)


def describe_suite(suite: SuiteSpec, reference: str) -> dict[str, Any]:
    """What the results document records about the suite (``document["suite"]``)."""
    return {"name": suite.name, "description": suite.description, "source": reference,
            "protocol": (suite.protocol or Protocol()).describe(),
            "tasks": [{**task.describe(), "token": task_token(reference, task)} for task in suite.tasks]}


# -- the ``suite:`` dataset ----------------------------------------------------------------------
def _find_task(arg: str, catalog: Catalog) -> tuple[SuiteSpec, Task]:
    reference, sep, task_name = arg.rpartition("#") if ".toml#" in arg else arg.partition("/")
    if not sep or not task_name:
        raise UserError(f"dataset 'suite:{arg}': write suite:SUITE/TASK or suite:FILE.toml#TASK")
    suite = load_suite_file(Path(reference)) if reference.endswith(".toml") else catalog.suites.resolve(reference)[0]
    for task in suite.tasks:
        if task.name == task_name:
            return suite, task
    raise UserError(f"suite {suite.name!r} has no task {task_name!r}; tasks: {', '.join(t.name for t in suite.tasks)}")


def limit_split(dataset: ImageDataset, split: str, limit: int | None, seed: int) -> ImageDataset:
    """Keep ``limit`` images of ``split``: a seeded draw from the keys in sorted order (the others stay)."""
    members = sorted(ex.key for ex in dataset.examples if ex.split == split)
    if limit is None or len(members) <= limit:
        return dataset
    rng = np.random.default_rng(seed)
    keep = {members[i] for i in rng.permutation(len(members))[:limit]}
    return replace(dataset, examples=[ex for ex in dataset.examples if ex.split != split or ex.key in keep])


def load_task(arg: str | None, options: Mapping[str, Any], context: RunContext) -> ImageDataset:
    """Factory of the ``suite:SUITE/TASK`` dataset: the task's dataset with its options and split rules."""
    suite, task = _find_task(arg or "", context.catalog)
    dataset = context.load_dataset(task.dataset, task.options)
    for split, limit in (("train", task.train), ("val", task.val), ("test", task.test)):
        dataset = limit_split(dataset, split, limit, task.split_seed)
    return replace(dataset, name=f"{suite.name}/{task.name}")
