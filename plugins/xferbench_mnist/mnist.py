"""``mnist``: the four IDX files, the official train/test split and a seeded validation carve-out.

Where the files come from, first match wins: ``--data-dir`` (the four files, .gz or unpacked),
the download cache, a download (``$XFERBENCH_MIRROR``, the ``mirror`` option, then the built-in
mirrors). Downloads must be the canonical files; a user's own copies in ``--data-dir`` are
only parsed strictly and get a warning when they are not canonical.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xferbench.atomic import atomic_write_text
from xferbench.data import Example, ImageDataset
from xferbench.errors import UserError
from xferbench_mnist.idx import IdxError, IdxFile, read_idx

if TYPE_CHECKING:
    from xferbench.context import RunContext

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)


@dataclass(frozen=True)
class MnistFile:
    name: str  # as published, with .gz
    kind: str  # "images" or "labels"
    split: str  # "train" or "test"
    count: int
    gz_md5: str
    content_md5: str | None  # None: pinned on first verified use


FILES = (
    MnistFile("train-images-idx3-ubyte.gz", "images", "train", 60000, "f68b3c2dcbeaaa9fbdd348bbdeb94873", None),
    MnistFile("train-labels-idx1-ubyte.gz", "labels", "train", 60000, "d53e105ee54ea40749a09fcbcd1e9432",
              "a25bea736e30d166cdddb491f175f624"),
    MnistFile("t10k-images-idx3-ubyte.gz", "images", "test", 10000, "9fb629c4189551a2d022fa330f9573f3",
              "2646ac647ad5339dbf082846283269ea"),
    MnistFile("t10k-labels-idx1-ubyte.gz", "labels", "test", 10000, "ec29112dd5afa0611ce80d1b7f02629c",
              "27ae3e4e09519cfbb04c329615203637"),
)
CLASS_NAMES = [str(d) for d in range(10)]


class _Pins:
    """``cache/datasets/mnist/pins.json``: unpacked-content MD5s learnt on first verified use."""

    def __init__(self, cache_dir: Path) -> None:
        self.path = Path(cache_dir) / "datasets" / "mnist" / "pins.json"

    def load(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read {self.path} ({exc}); delete it to re-pin the MNIST files") from None
        return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}

    def add(self, name: str, md5: str) -> None:
        pins = self.load()
        pins[name] = md5
        atomic_write_text(self.path, json.dumps(pins, indent=2, sort_keys=True) + "\n")


def canonical_problem(spec: MnistFile, parsed: IdxFile, pins: Mapping[str, str]) -> str | None:
    """None if ``parsed`` is the published file (by .gz or content MD5), else what differs."""
    if parsed.file_md5 == spec.gz_md5:
        return None
    wanted = spec.content_md5 or pins.get(spec.name)
    if wanted is not None:
        return None if parsed.content_md5 == wanted else f"content MD5 {parsed.content_md5}, expected {wanted}"
    # No known content digest (train-images): the right structure and count, then pinned.
    count = parsed.data.shape[0]
    return None if count == spec.count else f"{count} {spec.kind}, expected {spec.count}"


def verify_file(spec: MnistFile, path: Path, cache_dir: Path) -> IdxFile:
    """Parse ``path`` and insist on the canonical file; pins train-images' content MD5 on first use."""
    parsed = read_idx(path, spec.kind)
    pins = _Pins(cache_dir)
    known = pins.load()
    problem = canonical_problem(spec, parsed, known)
    if problem is not None:
        raise IdxError(f"{path} is not the canonical MNIST {spec.name} ({problem}); it was not used")
    if spec.content_md5 is None and spec.name not in known and parsed.file_md5 != spec.gz_md5:
        pins.add(spec.name, parsed.content_md5)
    return parsed


def _spec(name: str) -> MnistFile:
    for spec in FILES:
        if name in (spec.name, spec.name.removesuffix(".gz")):
            return spec
    names = ", ".join(s.name for s in FILES)
    raise UserError(f"{name!r} is not an MNIST file; expected one of: {names}")


def _artifact(spec: MnistFile, mirror: str | None) -> Any:
    from xferbench.download import Artifact

    prefixes = ([mirror] if mirror else []) + list(MIRRORS)
    return Artifact(spec.name, tuple(p.rstrip("/") + "/" + spec.name for p in prefixes), component="mnist")


def _verifier(spec: MnistFile, cache_dir: Path) -> Callable[[Path], None]:
    """The ``verify`` callback for xferbench.download: raises unless the file is canonical."""
    def verify(path: Path) -> None:
        verify_file(spec, path, cache_dir)
    return verify


def _download(spec: MnistFile, mirror: str | None, cache_dir: Path, progress: bool) -> Path:
    from xferbench.download import fetch as fetch_artifact

    return fetch_artifact(_artifact(spec, mirror), cache_dir, progress=progress, verify=_verifier(spec, cache_dir))


def _in_data_dir(data_dir: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    missing: list[str] = []
    for spec in FILES:
        for candidate in (data_dir / spec.name, data_dir / spec.name.removesuffix(".gz")):
            if candidate.is_file():
                found[spec.name] = candidate
                break
        else:
            missing.append(spec.name)
    if missing:
        raise UserError(f"--data-dir {data_dir} lacks the MNIST file(s) {', '.join(missing)}; "
                        f"put all four IDX files there (.gz or unpacked), or leave out --data-dir to download")
    return found


def _load_files(options: Mapping[str, Any], context: RunContext) -> tuple[dict[str, IdxFile], list[str]]:
    cache_dir = Path(context.cache_dir)
    warnings: list[str] = []
    parsed: dict[str, IdxFile] = {}
    if context.data_dir is not None:
        paths = _in_data_dir(Path(context.data_dir))
        pins = _Pins(cache_dir).load()
        problems: list[str] = []
        for spec in FILES:
            parsed[spec.name] = read_idx(paths[spec.name], spec.kind)
            problem = canonical_problem(spec, parsed[spec.name], pins)
            if problem is not None:
                problems.append(f"{paths[spec.name].name}: {problem}")
        if problems:
            warnings.append(f"{len(problems)} of the 4 MNIST files in {context.data_dir} are not the canonical "
                            f"ones ({'; '.join(problems)}); results are not comparable with published MNIST numbers")
        return parsed, warnings
    quiet = getattr(context.progress, "quiet", False)
    for spec in FILES:
        path = _download(spec, options.get("mirror"), cache_dir, progress=not quiet)
        parsed[spec.name] = read_idx(path, spec.kind)
    return parsed, warnings


def create(arg: str | None, options: Mapping[str, Any], context: RunContext) -> ImageDataset:
    """Factory of ``mnist`` (``arg`` is a class subset, applied by the harness)."""
    files, warnings = _load_files(options, context)
    arrays: dict[str, np.ndarray] = {}
    labels: dict[str, np.ndarray] = {}
    for split in ("train", "test"):
        images_spec, labels_spec = (s for s in FILES if s.split == split)
        images, label_file = files[images_spec.name], files[labels_spec.name]
        if images.data.shape[0] != label_file.data.shape[0]:
            raise UserError(f"{images.path} holds {images.data.shape[0]} images but {label_file.path} "
                            f"{label_file.data.shape[0]} labels; they must be a matching pair")
        arrays[split], labels[split] = images.data, label_file.data

    n_train = arrays["train"].shape[0]
    val_size = int(options.get("val_size", 5000))
    if val_size >= n_train:
        raise UserError(f"dataset 'mnist': val_size={val_size} leaves no training images "
                        f"(the train file has {n_train}); use a smaller val_size")
    # Seeded by the dataset's own split_seed, not the run seed, so the carve-out never moves.
    rng = np.random.default_rng(int(options.get("split_seed", 0)))
    is_val = np.zeros(n_train, dtype=bool)
    is_val[rng.permutation(n_train)[:val_size]] = True

    examples = [Example(f"train/{i:05d}", int(labels["train"][i]), "val" if is_val[i] else "train", ("train", i))
                for i in range(n_train)]
    examples += [Example(f"test/{i:05d}", int(labels["test"][i]), "test", ("test", i))
                 for i in range(arrays["test"].shape[0])]

    def read(example: Example) -> np.ndarray:
        """The 28x28 uint8 image (read-only)."""
        source, index = example.ref
        return arrays[source][index]

    root = Path(context.data_dir) if context.data_dir is not None else Path(context.cache_dir) / "downloads"
    return ImageDataset(name="mnist", class_names=list(CLASS_NAMES), examples=examples, read=read,
                        root=root, warnings=warnings)


def fetch(arg: str | None, options: Mapping[str, Any], context: RunContext, source: Path | None) -> Path:
    """``xferbench fetch mnist [--from FILE]``: download the four files, or import one of them."""
    cache_dir = Path(context.cache_dir)
    if source is not None:
        from xferbench.download import import_file

        spec = _spec(Path(source).name)
        if spec.name != Path(source).name:
            raise UserError(f"--from {source}: import the .gz file as published ({spec.name})")
        return import_file(_artifact(spec, options.get("mirror")), source, cache_dir,
                           verify=_verifier(spec, cache_dir))
    quiet = getattr(context.progress, "quiet", False)
    paths = [_download(spec, options.get("mirror"), cache_dir, progress=not quiet) for spec in FILES]
    return paths[0].parent


__all__ = ["FILES", "MIRRORS", "IdxError", "create", "fetch", "verify_file"]
