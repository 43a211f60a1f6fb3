"""The method contract: how a cell's classifier is trained (``transfer``, ``full``, ``finetune``, ...).

A method gets a :class:`MethodContext` for one run and fills in its :class:`RunRecord`.
The context streams what the method asks for: the cached bottleneck features (computed
once per backbone and dataset, shared by every method and head of the cell) or the
network's model inputs (computed once per cell as well).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from xferbench.errors import UserError
from xferbench.record import RunRecord

if TYPE_CHECKING:
    from xferbench.augment import Augmentation
    from xferbench.backbone import Backbone
    from xferbench.cell import Cell
    from xferbench.context import RunContext
    from xferbench.data import ImageDataset, Split
    from xferbench.extraction import Extraction
    from xferbench.head import Head
    from xferbench.progress import Progress
    from xferbench.specs import HeadSpec


@dataclass(frozen=True)
class TrainingBudget:
    """``--full-epochs`` and ``--full-budget``: how long a method that trains a network may train."""

    epochs: int | None = None
    seconds: float | None = None
    #: epochs when neither limit is given
    default_epochs: int = 30

    @property
    def effective_epochs(self) -> int | None:
        return self.default_epochs if self.epochs is None and self.seconds is None else self.epochs


@dataclass
class SplitData:
    """One split of the shots draw: inputs ``x`` (features or model inputs), labels ``y`` and image keys.

    Images the backbone could not decode are left out (and counted in the record's ``skipped_files``).
    ``x`` of a training split of model inputs is array-like (``len``, ``shape``, indexing), read a batch
    at a time, not a copy.
    """

    x: Any
    y: np.ndarray
    keys: list[str]

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class MethodContext:
    """Everything a method may use for one run."""

    #: the run's record: identity filled in; the method fills in the rest and returns it
    record: RunRecord
    backbone: Backbone
    #: the whole dataset (class subset applied)
    dataset: ImageDataset
    #: the shots draw: the training split cut to ``shots`` images per class (seeded); val and test whole
    subset: ImageDataset
    #: this method's options, validated, defaults filled in
    options: dict[str, Any]
    budget: TrainingBudget
    seed: int
    #: a folder of this run's own (checkpoints, exported head, ...); created on first use by the method
    run_dir: Path
    progress: Progress
    #: True under ``xferbench run --resume``: go on from a checkpoint where there is one
    resume: bool
    #: the invocation's settings: cache dir, ``--weights``, ``--data-dir``, the plugin catalog
    harness: RunContext
    #: the backbone's options, validated (what rebuilds it, e.g. for an exported model)
    backbone_options: dict[str, Any] = field(default_factory=dict)
    #: the dataset's options, validated (what reloads the same splits, e.g. to score an exported model)
    dataset_options: dict[str, Any] = field(default_factory=dict)
    #: for methods with ``uses_heads``: the head of this run
    head_spec: HeadSpec | None = None
    head_options: dict[str, Any] = field(default_factory=dict)
    show_misclassified: bool = False
    cell: Cell | None = field(default=None, repr=False)
    #: ``--augment``: retrain.py's distortions (cached copies for methods on features, on the fly for training)
    augmentation: Augmentation | None = None

    @property
    def class_names(self) -> list[str]:
        return self.dataset.class_names

    @property
    def num_classes(self) -> int:
        return len(self.dataset.class_names)

    # -- data --------------------------------------------------------------------------------
    def features(self, split: Split) -> SplitData:
        """Bottleneck features of ``split`` of the shots draw, from the cache or computed once per cell."""
        assert self.cell is not None
        return self.cell.features(self.subset, split)

    @property
    def extraction(self) -> Extraction:
        """How the cell's features were obtained: cache hits, throughput, failed images."""
        assert self.cell is not None
        return self.cell.extraction()

    def training_features(self) -> SplitData:
        """The training split's features, plus its distorted copies under ``--augment`` (never val or test)."""
        train = self.features("train")
        if self.augmentation is None:
            return train
        assert self.cell is not None
        copies = self.cell.augmented_features(self.subset, self.augmentation, self.seed)
        extraction = self.cell.copy_extraction(self.augmentation, self.seed)
        self.record.augment = {**self.augmentation.describe(), "applied": "cached copies",
                               **(extraction.describe() if extraction is not None else {})}
        return SplitData(np.concatenate([train.x, copies.x]), np.concatenate([train.y, copies.y]),
                         [*train.keys, *copies.keys])

    def inputs(self, split: Split) -> SplitData:
        """The network's preprocessed inputs of ``split`` of the shots draw (for methods that train it)."""
        assert self.cell is not None
        return self.cell.inputs(self.subset, split)

    def make_head(self) -> Head:
        if self.head_spec is None:
            raise UserError(f"method {self.record.method!r} trains a head but the run has none")
        return self.head_spec.load_factory()(self.head_options)

    # -- results -----------------------------------------------------------------------------
    def record_features(self) -> None:
        """Fill in the record's extraction fields (throughput, cache hits, undecodable images, precision)
        for a method that trained on :meth:`features`; with ``train_seconds`` set, its cold and warm cost."""
        extraction = self.extraction
        failed = len(extraction.failed)
        self.record.update(
            skipped_files={**self.dataset.skipped_counts(), **({"decode_error": failed} if failed else {})},
            extract_images_per_second=extraction.images_per_second,
            extract_forward_images_per_second=extraction.forward_images_per_second,
            extract_seconds=extraction.seconds, cache_hits=extraction.cache_hits, extracted=extraction.computed,
            cache_write_errors=extraction.cache_write_errors, precision=self.backbone.precision(),
            backbone_info=self.backbone.info())
        if self.record.train_seconds is not None:
            self.record.update(cold_seconds=extraction.seconds + self.record.train_seconds,
                               warm_seconds=self.record.train_seconds)
        from xferbench.peak import utilisation

        self.record.update(**utilisation(self.backbone, extraction.forward_images_per_second, self.harness.cache_dir))

    def require_splits(self, train: SplitData, test: SplitData) -> None:
        if len(train) == 0 or len(test) == 0:
            raise UserError(f"dataset {self.record.dataset!r} has {len(train)} training and {len(test)} test images; "
                            f"it needs both (add images or change test_pct/val_pct)")

    def score(self, test: SplitData, predicted: np.ndarray) -> None:
        """Fill in the record's test metrics from the predicted classes of the test split."""
        from xferbench import metrics

        summary = metrics.summarize(test.y, np.asarray(predicted), self.class_names, keys=test.keys, seed=self.seed)
        self.record.update(**{k: summary[k] for k in ("test_accuracy", "test_accuracy_ci", "per_class_accuracy",
                                                      "confusion_matrix")})
        self.record.misclassified = summary.get("misclassified", []) if self.show_misclassified else None


class Method(abc.ABC):
    """A way to train a classifier for a (backbone, dataset, shots) cell.

    Subclass it, set the class attributes, implement :meth:`run`, and register a
    :class:`~xferbench.specs.MethodSpec` whose factory builds it from its options.
    """

    #: one run per ``--head`` (the head is in ``context.head_spec``); otherwise one run per cell
    uses_heads: ClassVar[bool] = False
    #: what the backbone must support (``Backbone.supports(name)``), e.g. ``"full"``; None: any backbone
    requires: ClassVar[str | None] = None
    #: whether :meth:`run` reads ``context.features()``: under ``--executor ray`` False extracts no bottlenecks
    #: for its runs (``full`` and ``finetune`` train on ``context.inputs()``)
    uses_features: ClassVar[bool] = True

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options

    def supports(self, backbone: Backbone) -> bool:
        """Whether this method can run on ``backbone``; unsupported runs show ``skipped: not supported``."""
        return self.requires is None or backbone.supports(self.requires)

    @abc.abstractmethod
    def run(self, context: MethodContext) -> RunRecord:
        """Train, evaluate on the test split, and return ``context.record`` filled in (status ``ok``).

        Raise :class:`~xferbench.errors.UserError` for a problem the user can fix; any
        exception fails this run only, with its message in the record.
        """
