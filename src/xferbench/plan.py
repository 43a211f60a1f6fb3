"""From what ``xferbench run`` was asked to the list of runs: every name and option checked first.

Typos fail here, in a fraction of a second, before TensorFlow is imported or any work starts.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xferbench.augment import Augmentation
from xferbench.errors import OptionError, UserError
from xferbench.method import Method
from xferbench.plugin_manager import Catalog
from xferbench.record import RunRecord
from xferbench.registry import Registry
from xferbench.specs import ComponentSpec

#: ``--compare`` when it is not given; a method the backbone cannot do is skipped, not an error
DEFAULT_METHODS = ("transfer", "full")
NO_HEAD = "-"


@dataclass
class RunRequest:
    """Everything ``xferbench run`` was asked to do."""

    backbones: list[str]
    datasets: list[str]
    heads: list[str]
    #: ``--compare``; None: the default (transfer, plus full where the backbone supports it)
    methods: list[str] | None = None
    shots: list[int | None] = field(default_factory=lambda: [None])
    backbone_options: dict[str, str] = field(default_factory=dict)
    dataset_options: dict[str, str] = field(default_factory=dict)
    head_options: dict[str, str] = field(default_factory=dict)
    method_options: dict[str, str] = field(default_factory=dict)
    full_epochs: int | None = None
    full_budget_seconds: float | None = None
    show_misclassified: bool = False
    #: ``--target-accuracy``: the validation accuracy the comparison times each method to; None: the lower final one
    target_accuracy: float | None = None
    command: list[str] = field(default_factory=list)
    #: ``--suite``: what the results document records about it (xferbench.suites.describe_suite), else None
    suite: dict[str, Any] | None = None
    #: ``--augment`` / ``--augment-copies``; None: no distortions
    augmentation: Augmentation | None = None

    @property
    def explicit_methods(self) -> bool:
        return self.methods is not None

    @property
    def method_names(self) -> list[str]:
        return list(DEFAULT_METHODS) if self.methods is None else self.methods


Resolved = dict[str, tuple[Any, dict[str, Any]]]


@dataclass
class Plan:
    """The validated request: each token's spec and options, each method built, the runs in order."""

    backbones: Resolved
    datasets: Resolved
    heads: Resolved
    methods: dict[str, tuple[Any, dict[str, Any], Method]]
    records: list[RunRecord]

    def cell(self, backbone: str, dataset: str) -> list[RunRecord]:
        return [r for r in self.records if r.backbone == backbone and r.dataset == dataset]


def make_plan(request: RunRequest, catalog: Catalog, data_dir: Path | None = None,
              weights: Path | None = None) -> Plan:
    backbones = validated(catalog.backbones, request.backbones, request.backbone_options)
    datasets = validated(catalog.datasets, request.datasets, request.dataset_options)
    heads = validated(catalog.heads, request.heads, request.head_options)
    for token, (spec, _) in heads.items():
        if catalog.heads.resolve(token)[1]:
            raise UserError(f"head {spec.name!r} takes no argument, got {token!r}")
    names = request.method_names
    if not names:
        raise UserError("--compare is empty; name at least one method (see xferbench list methods)")
    resolved = validated(catalog.methods, names, request.method_options)
    methods = {}
    for name, (spec, options) in resolved.items():
        method = spec.load_factory()(options)
        if not isinstance(method, Method):
            raise UserError(f"method {spec.name!r} (plugin {spec.plugin}) built a {type(method).__name__}, "
                            f"not a xferbench Method")
        methods[name] = (spec, options, method)
    if any(m.uses_heads for _, _, m in methods.values()) and not heads:
        raise UserError("--head is empty; name at least one head (see xferbench list heads)")
    if data_dir is not None and not Path(data_dir).is_dir():
        raise UserError(f"--data-dir {data_dir}: no such directory")
    if weights is not None and not Path(weights).exists():
        raise UserError(f"--weights {weights}: no such file")
    records = []
    for dataset in request.datasets:
        for backbone in request.backbones:
            for shots in request.shots:
                for name in names:
                    for head in (request.heads if methods[name][2].uses_heads else [NO_HEAD]):
                        records.append(RunRecord(backbone=backbone, dataset=dataset, method=name, head=head,
                                                 shots="all" if shots is None else shots,
                                                 method_options=dict(methods[name][1]),
                                                 augment=request.augmentation.describe()
                                                 if request.augmentation is not None else None))
    return Plan(backbones, datasets, heads, methods, records)


def validated(registry: Registry[Any], tokens: list[str], given: dict[str, str]) -> Resolved:
    """Resolve each token and validate the options it receives.

    In a sweep (several tokens) each component takes the options it declares, so
    ``--backbone-opt pretrain_epochs=5`` can go with ``--backbone lenet5,keras:MobileNet``;
    a key that no component declares is still an error.
    """
    specs: dict[str, ComponentSpec] = {token: registry.resolve(token)[0] for token in tokens}
    if len(specs) <= 1:
        return {token: (spec, spec.validate(given)) for token, spec in specs.items()}
    declared = {opt.name for spec in specs.values() for opt in spec.options}
    unknown = sorted(set(given) - declared)
    if unknown:
        hint = difflib.get_close_matches(unknown[0], sorted(declared), n=1)
        did_you_mean = f"; did you mean {hint[0]!r}?" if hint else ""
        raise OptionError(f"unknown option {unknown[0]!r} for the {registry.kind}s {', '.join(specs)}{did_you_mean} "
                          f"(known options: {', '.join(sorted(declared)) or 'none'})")
    result = {}
    for token, spec in specs.items():
        own = {opt.name for opt in spec.options}
        result[token] = (spec, spec.validate({k: v for k, v in given.items() if k in own}))
    return result
