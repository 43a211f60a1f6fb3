"""``tfds:NAME[/CONFIG][:CLASSES]``: a prepared TensorFlow Datasets dataset, its images streamed from the records.

Loading reads the labels only (the image feature is not even parsed) and keeps, per example,
where it is: a split of the prepared dataset and its index there. :meth:`_ChunkReader.read`
fetches the encoded image (PNG or JPEG, undecoded) in chunks of consecutive records with a
small LRU, so memory stays flat however large the dataset is.

Splits: ``split_train`` / ``split_val`` / ``split_test`` are TFDS split strings. Without a
validation split (the dataset has none and ``split_val`` is not given) ``val_pct`` percent of
each class of the training split is carved out, seeded by ``split_seed`` on the sorted keys,
and the dataset's warnings say so (they go into the results document).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xferbench import __version__
from xferbench.atomic import atomic_write_text
from xferbench.data import Example, ImageDataset, Split, select_classes
from xferbench.errors import UserError, one_line
from xferbench_tfds.transforms import BUILT_IN, LabelTransform, resolve

if TYPE_CHECKING:
    from xferbench.context import RunContext

#: records fetched per read; consecutive reads (the extraction's order) hit the same chunk
CHUNK = 128
#: chunks kept in memory
MAX_CHUNKS = 4


def _tfds() -> Any:
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise UserError("dataset 'tfds' needs tensorflow-datasets: pip install 'xferbench[tfds]'") from None
    return tfds


def parse_arg(arg: str) -> tuple[str, str | None]:
    """``"cifar10:0-4"`` -> ``("cifar10", "0-4")``; ``"sun397/tfds"`` -> ``("sun397/tfds", None)``."""
    name, _, subset = arg.partition(":")
    if not name.strip():
        raise UserError("dataset 'tfds' needs a name: write tfds:NAME, e.g. tfds:cifar10")
    return name.strip(), (subset.strip() or None)


def data_dir_of(context: RunContext) -> str | None:
    """``--data-dir``, else ``$TFDS_DATA_DIR``, else None (TFDS's default, ~/tensorflow_datasets)."""
    if context.data_dir is not None:
        return str(Path(context.data_dir).expanduser())
    return os.environ.get("TFDS_DATA_DIR") or None


def _where(data_dir: str | None) -> str:
    return data_dir or "TFDS's default folder (~/tensorflow_datasets)"


def load_builder(name: str, data_dir: str | None, module: str | None = None) -> Any:
    """The builder of ``name``: the installed one, else one read from the prepared files alone.

    ``name`` may also be the folder of a prepared dataset version (holding dataset_info.json).
    ``module`` is imported first: TFDS registers a builder class when it is defined, so a user's
    builder that is not in TFDS's catalog is found by its name once its module is imported.
    """
    tfds = _tfds()
    if module:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise UserError(f"dataset 'tfds:{name}': module={module!r} cannot be imported ({one_line(exc)}); "
                            f"put its folder on PYTHONPATH") from None
    if Path(name, "dataset_info.json").is_file():
        return tfds.builder_from_directory(name)
    try:
        return tfds.builder(name, data_dir=data_dir)
    except Exception as exc:  # DatasetNotFoundError, a bad config, a broken dataset_info.json ...
        found = _prepared_version(name, data_dir)
        if found is not None:
            return tfds.builder_from_directory(str(found))
        raise UserError(f"dataset 'tfds:{name}': {one_line(exc)}; it is neither an installed TFDS builder nor "
                        f"prepared in {_where(data_dir)}") from None


def _prepared_version(name: str, data_dir: str | None) -> Path | None:
    """``<data_dir>/NAME[/CONFIG]/<newest version>`` if it holds a prepared dataset."""
    root = Path(data_dir).expanduser() if data_dir else Path("~/tensorflow_datasets").expanduser()
    folder = root / name
    if not folder.is_dir():
        return None
    versions = [p for p in folder.iterdir() if (p / "dataset_info.json").is_file()]

    def version_key(path: Path) -> tuple[int, ...]:
        try:
            return tuple(int(part) for part in path.name.split("."))
        except ValueError:
            return (-1,)
    return max(versions, key=version_key) if versions else None


def _feature_key(features: Any, wanted: str | None, kind: str, default: str, option: str) -> str:
    tfds = _tfds()
    cls = tfds.features.Image if kind == "Image" else tfds.features.ClassLabel
    names = list(features.keys())
    if wanted is not None:
        if wanted not in features:
            raise UserError(f"dataset 'tfds': {option}={wanted!r} is not a feature; features: {', '.join(names)}")
        return wanted
    if default in features and isinstance(features[default], cls):
        return default
    matching = [k for k in names if isinstance(features[k], cls)]
    if len(matching) == 1:
        return matching[0]
    raise UserError(f"dataset 'tfds': cannot tell which feature is the {default} ({len(matching)} {kind} features "
                    f"among {', '.join(names)}); set --dataset-opt {option}=NAME")


@dataclass(frozen=True)
class _Part:
    """One split string, as what to read for the labels and where each position lies."""

    spec: str
    #: [(split name, start, stop)] when the dataset's split sizes are known; None under TFDS's mock_data
    absolute: list[tuple[str, int, int]] | None
    limit: int

    def index_spec(self) -> str:
        if self.absolute is None:
            return self.spec
        return "+".join(f"{name}[{start}:{stop}]" for name, start, stop in self.absolute)

    def ref(self, position: int) -> tuple[str, int]:
        """Where the ``position``-th example of this part is: (split name, index) or (spec, position)."""
        if self.absolute is None:
            return self.spec, position
        for name, start, stop in self.absolute:
            if position < stop - start:
                return name, start + position
            position -= stop - start
        raise IndexError(position)


def _part(builder: Any, spec: str, limit: int, option: str) -> _Part:
    tfds = _tfds()
    splits = builder.info.splits
    if not splits:  # sizes unknown: TFDS's mock_data (an unprepared dataset fails when it is read)
        return _Part(spec, None, limit)
    try:
        instructions = tfds.core.ReadInstruction.from_spec(spec).to_absolute(splits)
    except Exception as exc:
        raise UserError(f"dataset 'tfds:{builder.info.full_name}': {option}={spec!r}: {one_line(exc)} "
                        f"(splits: {', '.join(f'{k} ({v.num_examples})' for k, v in splits.items())})") from None
    absolute, left = [], limit or None
    for instruction in instructions:
        size = splits[instruction.splitname].num_examples
        start = instruction.from_ or 0
        stop = size if instruction.to is None else instruction.to
        if left is not None:
            stop = min(stop, start + left)
            left -= stop - start
        if stop > start:
            absolute.append((instruction.splitname, start, stop))
    return _Part(spec, absolute, limit)


class _ChunkReader:
    """Encoded images by (split, index), read ``CHUNK`` records at a time, the last ``MAX_CHUNKS`` kept."""

    def __init__(self, builder: Any, image_key: str) -> None:
        self.builder = builder
        self.image_key = image_key
        self._chunks: OrderedDict[tuple[str, int], list[bytes]] = OrderedDict()
        self._lock = threading.Lock()
        self.chunk_reads = 0

    def read(self, example: Example) -> bytes:
        base, index = example.ref
        chunk_id = (base, index // CHUNK)
        with self._lock:
            chunk = self._chunks.get(chunk_id)
            if chunk is None:
                chunk = self._load(base, chunk_id[1] * CHUNK)
                self._chunks[chunk_id] = chunk
                while len(self._chunks) > MAX_CHUNKS:
                    self._chunks.popitem(last=False)
            else:
                self._chunks.move_to_end(chunk_id)
        return chunk[index % CHUNK]

    def _load(self, base: str, start: int) -> list[bytes]:
        tfds = _tfds()
        decoders = tfds.decode.PartialDecoding({self.image_key: True},
                                               decoders={self.image_key: tfds.decode.SkipDecoding()})
        if self.builder.info.splits:
            size = self.builder.info.splits[base].num_examples
            split, skip = f"{base}[{start}:{min(start + CHUNK, size)}]", 0
        else:  # mock_data: no sizes, read the split string from its start
            split, skip = base, start
        ds = self.builder.as_dataset(split=split, decoders=decoders, shuffle_files=False).skip(skip).take(CHUNK)
        self.chunk_reads += 1
        return [bytes(ex[self.image_key]) for ex in tfds.as_numpy(ds)]


def _labels(builder: Any, part: _Part, label_key: str, transform: LabelTransform | None,
            name: str, data_dir: str | None, context: RunContext) -> list[tuple[str, int]]:
    """The label index of ``part``: from xferbench's cache when the prepared files are unchanged, else scanned.

    Scanning reads every record of the split (images included) just for the labels; a suite, a
    resume, each Ray worker and each later run would do it again.
    """
    key = _label_index_key(builder, part, label_key, transform)
    path = None
    if key is not None:
        try:
            path = context.subdir("tfds-labels") / f"{key}.json"
            stored = json.loads(path.read_text(encoding="utf-8"))
            return list(zip(stored["ids"], stored["labels"], strict=True))
        except (OSError, UserError, ValueError, KeyError, TypeError):
            pass  # not cached yet, unreadable or no cache folder: scan
    rows = _scan_labels(builder, part, label_key, transform, name, data_dir)
    if path is not None:
        with contextlib.suppress(OSError):  # DiskWriteError too: the cache only saves time
            atomic_write_text(path, json.dumps({"ids": [k for k, _ in rows], "labels": [v for _, v in rows]}))
    return rows


def _label_index_key(builder: Any, part: _Part, label_key: str, transform: LabelTransform | None) -> str | None:
    """What a label index depends on, hashed: the prepared files (name, size, mtime), the split, the label.

    None where a cached index could go stale unseen: mock data (no files) or a transform from
    the user's code (it may change; built-in ones are pinned by xferbench's version).
    """
    if part.absolute is None or not builder.data_dir:
        return None
    if transform is not None and BUILT_IN.get(transform.name) is not transform:
        return None
    try:
        folder = Path(os.fspath(builder.data_dir)).resolve()
        files = sorted((f.name, st.st_size, st.st_mtime_ns) for f in folder.iterdir() for st in (f.stat(),))
    except OSError:
        return None
    labelled_by = f"transform:{transform.name}" if transform is not None else label_key
    what = [str(folder), files, part.index_spec(), labelled_by, __version__]
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:32]


def _scan_labels(builder: Any, part: _Part, label_key: str, transform: LabelTransform | None,
                 name: str, data_dir: str | None) -> list[tuple[str, int]]:
    """``[(tfds_id, label)]`` of ``part`` in record order; images are not parsed (but every record is read)."""
    tfds = _tfds()
    reads = dict(transform.reads) if transform is not None else {label_key: True}
    out: list[tuple[str, int]] = []
    try:
        ds = builder.as_dataset(split=part.index_spec(), decoders=tfds.decode.PartialDecoding(reads),
                                read_config=tfds.ReadConfig(add_tfds_id=True), shuffle_files=False)
        if part.absolute is None and part.limit:
            ds = ds.take(part.limit)
        if transform is None:
            for batch in tfds.as_numpy(ds.batch(4096)):
                out.extend((tid.decode(), int(label)) for tid, label in zip(batch["tfds_id"], batch[label_key],
                                                                            strict=True))
        else:
            for ex in tfds.as_numpy(ds):
                out.append((ex["tfds_id"].decode(), transform(ex)))
    except UserError:
        raise
    except Exception as exc:
        raise _read_failure(name, data_dir, part.spec, exc) from None
    return out


def _carve(train: list[tuple[str, int]], val_pct: float, seed: int) -> set[str]:
    """Keys of ``val_pct`` percent of each class (rounded), drawn with ``seed`` from the keys in sorted order."""
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[str]] = {}
    for key, label in train:
        by_class.setdefault(label, []).append(key)
    chosen: set[str] = set()
    for label in sorted(by_class):
        keys = sorted(by_class[label])
        take = int(round(len(keys) * val_pct / 100))
        chosen.update(keys[i] for i in rng.permutation(len(keys))[:take])
    return chosen


def _read_failure(name: str, data_dir: str | None, spec: str, exc: Exception) -> UserError:
    return UserError(f"dataset 'tfds:{name}': cannot read split {spec!r} from {_where(data_dir)} "
                     f"({one_line(exc)[:300]}); is it prepared? run `xferbench fetch tfds:{name}`, or point "
                     f"--data-dir / $TFDS_DATA_DIR at the folder that holds it")


def create(arg: str | None, options: Mapping[str, Any], context: RunContext) -> ImageDataset:
    """Factory of ``tfds:NAME[/CONFIG][:CLASSES]``."""
    name, subset = parse_arg(arg or "")
    data_dir = data_dir_of(context)
    builder = load_builder(name, data_dir, options.get("module"))
    features = builder.info.features
    image_key = _feature_key(features, options.get("image_key"), "Image", "image", "image_key")
    transform = resolve(options["label_transform"]) if options.get("label_transform") else None
    if transform is not None:
        label_key, class_names = transform.name, list(transform.class_names)
    else:
        label_key = _feature_key(features, options.get("label_key"), "ClassLabel", "label", "label_key")
        feature = features[label_key]
        if not hasattr(feature, "names"):
            raise UserError(f"dataset 'tfds:{name}': feature {label_key!r} is a {type(feature).__name__}, not a "
                            f"ClassLabel; pick another label_key or give a label_transform")
        class_names = list(feature.names)
    split_names = set(builder.info.splits.keys()) if builder.info.splits else None
    warnings: list[str] = []
    split_val = options.get("split_val")
    if split_val is None and split_names is not None and "validation" in split_names:
        split_val = "validation"
    parts: dict[Split, _Part] = {"train": _part(builder, options["split_train"], options["train_examples"],
                                                "split_train"),
                                 "test": _part(builder, options["split_test"], 0, "split_test")}
    if split_val is not None:
        parts["val"] = _part(builder, split_val, options["val_examples"], "split_val")
    labelled = {split: _labels(builder, part, label_key, transform, name, data_dir, context)
                for split, part in parts.items()}
    carved: set[str] = set()
    if split_val is None:
        carved = _carve(labelled["train"], options["val_pct"], options["split_seed"])
        if options["val_examples"]:
            carved = set(sorted(carved)[:options["val_examples"]])
        warnings.append(f"tfds:{name} has no validation split: {options['val_pct']:g}% of each class of "
                        f"{options['split_train']!r} ({len(carved)} images) was carved out for validation "
                        f"(seeded stratified, split_seed={options['split_seed']})")
    examples: list[Example] = []
    for split, rows in labelled.items():
        part = parts[split]
        for position, (key, label) in enumerate(rows):
            which: Split = "val" if split == "train" and key in carved else split
            if not 0 <= label < len(class_names):
                raise UserError(f"dataset 'tfds:{name}': example {key} has label {label}, outside the "
                                f"{len(class_names)} classes of {label_key!r}")
            examples.append(Example(key, label, which, part.ref(position)))
    reader = _ChunkReader(builder, image_key)
    dataset = ImageDataset(name=f"tfds:{name}", class_names=class_names, examples=examples, read=reader.read,
                           root=Path(builder.data_dir) if builder.data_dir else None, warnings=warnings)
    return select_classes(dataset, subset) if subset else dataset


def fetch(arg: str | None, options: Mapping[str, Any], context: RunContext, source: Path | None) -> Path:
    """``xferbench fetch tfds:NAME [--data-dir DIR] [--from DIR | --opt manual_dir=DIR]``: TFDS's own
    download_and_prepare, its progress on stdout (stderr keeps the one line of a failure)."""
    tfds = _tfds()
    name, _ = parse_arg(arg or "")
    data_dir = data_dir_of(context)
    builder = load_builder(name, data_dir, options.get("module"))
    if source is not None:
        source = source if source.is_dir() else source.parent  # TFDS looks files up by name in the manual dir
    manual_dir = options.get("manual_dir") or (str(source) if source is not None else None)
    config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
    if context.progress.quiet:
        tfds.disable_progress_bar()
    try:
        with _download_retries(options["retries"]), contextlib.redirect_stderr(sys.stdout):
            builder.download_and_prepare(download_config=config)
    except Exception as exc:
        target = manual_dir or str(Path(builder.data_dir_root) / "downloads" / "manual")
        if getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None):
            how = "it needs files downloaded by hand (its TFDS catalog page says which)"
        else:
            how = "download its files on a machine with internet access"
        raise UserError(f"tfds:{name}: download_and_prepare failed ({_reason(exc)}); {how}, put them in "
                        f"{target} and run `xferbench fetch tfds:{name} --opt manual_dir={target}` (or prepare "
                        f"it where there is internet and copy {builder.data_dir} here)") from None
    return Path(builder.data_dir)


fetch.accepts_folders = True  # type: ignore[attr-defined]  # --from DIR: the manual dir


def _reason(exc: Exception) -> str:
    """A failed download names its URL (requests' errors carry the request); anything else its message."""
    url = getattr(getattr(exc, "request", None), "url", None)
    if url:
        return f"cannot download {url}: {type(exc).__name__}"
    return one_line(exc)[:240]


@contextlib.contextmanager
def _download_retries(retries: int) -> Iterator[None]:
    """TFDS retries a refused connection 10 times with backoff (minutes offline); ``retries`` sets how often."""
    from tensorflow_datasets.core.download import downloader

    saved = downloader.MAX_RETRIES
    downloader.MAX_RETRIES = retries
    try:
        yield
    finally:
        downloader.MAX_RETRIES = saved
