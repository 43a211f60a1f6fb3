"""One (backbone, dataset) cell: its features and model inputs, each computed at most once.

Every method and head of a cell shares them: bottlenecks come from the cache or are
extracted once, and the network's inputs for full training or fine-tuning are prepared
once, only for the images some shots draw uses.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xferbench.augment import Augmentation, CopyExtraction, extract_copies
from xferbench.backbone import Backbone
from xferbench.context import RunContext
from xferbench.data import Example, ImageDataset, Split
from xferbench.extraction import Extraction, extract_features
from xferbench.method import SplitData

#: inputs for full retraining larger than this go to a temporary file on disk instead of memory
IN_MEMORY_INPUTS_BYTES = 1 << 30
_INPUT_CHUNK = 256


class Cell:
    """The shared data of one backbone on one dataset. Use as a context manager (it may hold a temp file)."""

    def __init__(self, backbone: Backbone, dataset: ImageDataset, context: RunContext,
                 draws: Iterable[ImageDataset], extraction: Extraction | None = None) -> None:
        self.backbone = backbone
        self.dataset = dataset
        self.context = context
        self._draws = list(draws)  # every shots draw of the sweep: what model inputs must cover
        #: given: extracted elsewhere (a Ray executor's extraction stage); else extracted here on first use
        self._extraction: Extraction | BaseException | None = extraction
        self._inputs: _Inputs | BaseException | None = None
        self._scratch = contextlib.ExitStack()
        self._position = {ex.key: i for i, ex in enumerate(dataset.examples)}
        self._copies: dict[tuple[Augmentation, int], CopyExtraction] = {}

    def __enter__(self) -> Cell:
        return self

    def __exit__(self, *exc: object) -> None:
        self._scratch.close()

    # -- bottleneck features -----------------------------------------------------------------
    def extraction(self) -> Extraction:
        """The cell's bottlenecks, extracted (or read from the cache) on first use; a failure is kept."""
        if self._extraction is None:
            try:
                self._extraction = extract_features(self.backbone, self.dataset, self.context.subdir("bottlenecks"),
                                                    self.context.progress, batch_size=self.backbone.extract_batch_size)
            except Exception as exc:
                self._extraction = exc
        if isinstance(self._extraction, BaseException):
            raise self._extraction
        return self._extraction

    def features(self, subset: ImageDataset, split: Split) -> SplitData:
        extraction = self.extraction()
        failed = set(extraction.failed)
        position = self._position
        examples = [ex for ex in subset.split(split) if ex.key not in failed]
        index = np.array([position[ex.key] for ex in examples], dtype=np.int64)
        features = extraction.features
        # Memory-mapped features (a large dataset): the training split stays on disk, read a batch at a time.
        x = _Rows(features, index) if split == "train" and isinstance(features, np.memmap) else features[index]
        return SplitData(x, np.array([ex.label for ex in examples], dtype=np.int64), [ex.key for ex in examples])

    def augmented_features(self, subset: ImageDataset, settings: Augmentation, seed: int) -> SplitData:
        """The distorted copies of ``subset``'s training images (``--augment``), each computed once per cell.

        Copies of every training image any shots draw uses are extracted (or read from the cache)
        on first use; each draw takes the rows of its own images.
        """
        copies = self._copies.get((settings, seed))
        if copies is None:
            keys: set[str] = set()
            for draw in self._draws:
                keys.update(ex.key for ex in draw.split("train"))
            examples = [ex for ex in self.dataset.split("train") if ex.key in keys]
            copies = extract_copies(self.backbone, self.dataset, examples, settings, seed,
                                    self.context.subdir("bottlenecks"), self.context.progress)
            self._copies[(settings, seed)] = copies
        wanted = {ex.key for ex in subset.split("train")}
        rows = np.array([i for i, key in enumerate(copies.keys) if key.rpartition("#copy")[0] in wanted],
                        dtype=np.int64)
        return SplitData(copies.features[rows], copies.labels[rows], [copies.keys[i] for i in rows])

    def copy_extraction(self, settings: Augmentation, seed: int) -> CopyExtraction | None:
        """How the copies of ``settings`` were obtained (cache hits, extracted), once extracted."""
        return self._copies.get((settings, seed))

    # -- model inputs ------------------------------------------------------------------------
    def inputs(self, subset: ImageDataset, split: Split) -> SplitData:
        if self._inputs is None:
            try:
                self._inputs = self._prepare_inputs()
            except Exception as exc:
                self._inputs = exc
        if isinstance(self._inputs, BaseException):
            raise self._inputs
        inputs, position = self._inputs.array, self._inputs.position
        examples = subset.split(split)
        index = np.array([position[ex.key] for ex in examples], dtype=np.int64)
        ok = _decodable_rows(inputs, index)
        # The training split is read a batch at a time rather than copied: it is most of the data.
        x = _Rows(inputs, index[ok]) if split == "train" else np.asarray(inputs[index[ok]])
        return SplitData(x, np.array([ex.label for ex in examples], dtype=np.int64)[ok],
                         [ex.key for ex, good in zip(examples, ok, strict=True) if good])

    def _prepare_inputs(self) -> _Inputs:
        """The inputs of every image some shots draw uses, a chunk at a time (NaN rows: undecodable).

        Above IN_MEMORY_INPUTS_BYTES (all 3670 flowers at 299 px take 3.9 GB) they go to a
        temporary .npy file mapped into memory, so the page cache, not the process, holds them.
        """
        keys: set[str] = set()
        for draw in self._draws:
            keys.update(ex.key for ex in draw.examples)
        examples: list[Example] = [ex for ex in self.dataset.examples if ex.key in keys]

        def chunk(start: int) -> np.ndarray:
            part = examples[start:start + _INPUT_CHUNK]
            return np.asarray(self.backbone.model_inputs([self.dataset.read(ex) for ex in part]))

        first = chunk(0)
        shape = (len(examples), *first.shape[1:])
        if first.nbytes * (len(examples) / max(len(first), 1)) <= IN_MEMORY_INPUTS_BYTES:
            inputs = np.empty(shape, dtype=first.dtype)
        else:
            folder = self._scratch.enter_context(tempfile.TemporaryDirectory(
                prefix="model-inputs-", dir=self.context.subdir("tmp"), ignore_cleanup_errors=True))
            inputs = np.lib.format.open_memmap(Path(folder) / "inputs.npy", mode="w+", dtype=first.dtype,
                                               shape=shape)
        inputs[:len(first)] = first
        for start in range(_INPUT_CHUNK, len(examples), _INPUT_CHUNK):
            inputs[start:start + _INPUT_CHUNK] = chunk(start)
        return _Inputs(inputs, {ex.key: i for i, ex in enumerate(examples)})


@dataclass
class _Inputs:
    """Network inputs of some examples: row ``position[key]`` of ``array``."""

    array: np.ndarray
    position: dict[str, int]


class _Rows:
    """Rows ``index`` of ``base`` (an array or a memmap) as an array-like that copies only what is asked for."""

    def __init__(self, base: np.ndarray, index: np.ndarray) -> None:
        self.base, self.index = base, index
        self.shape = (len(index), *base.shape[1:])
        self.dtype = base.dtype

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self.base[self.index[key]])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """All rows at once (what a method that needs the whole matrix in memory gets)."""
        return np.asarray(self.base[self.index], dtype=dtype)


def _decodable_rows(inputs: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Which of ``inputs[index]`` hold no NaN (NaN rows are images the backbone could not decode)."""
    ok = np.empty(len(index), dtype=bool)
    for start in range(0, len(index), _INPUT_CHUNK):
        rows = np.asarray(inputs[index[start:start + _INPUT_CHUNK]])
        ok[start:start + _INPUT_CHUNK] = ~np.isnan(rows.reshape(len(rows), -1)).any(axis=1)
    return ok
