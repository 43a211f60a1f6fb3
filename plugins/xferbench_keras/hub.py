"""``hub:<handle-or-dir>``: a TF-Hub image feature-vector SavedModel.

Loaded with ``tensorflow_hub.load`` (a plain ``tf.saved_model.load`` underneath), never
``hub.KerasLayer``, so Keras 2 (tf_keras) is not involved. Images are scaled to [0, 1] and
resized to the size the module's signature fixes, else ``input_size`` (default 224), which
is the TF-Hub convention for image feature vectors.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xferbench.backbone import NetworkBackbone
from xferbench.decoding import Preprocessing
from xferbench.errors import UserError, one_line

if TYPE_CHECKING:
    from xferbench.context import RunContext

PREPROCESSING_REVISION = "1"
DEFAULT_INPUT_SIZE = 224


def is_remote_handle(handle: str) -> bool:
    """URLs (tfhub.dev, kaggle.com, gs://, ...) are fetched by tensorflow_hub; the rest are paths."""
    return "://" in handle


def sha256_tree(root: Path) -> str:
    """Digest of every file under ``root`` (relative path and content), in a stable order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        with open(path, "rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()


def _signature_size(shape: Any) -> int | None:
    """The square size fixed by an input shape ``[N, H, W, 3]``, or None when it is free."""
    dims = list(shape) if shape.rank is not None else []
    if len(dims) != 4:
        return None
    height, width = dims[1], dims[2]
    if height is None or width is None:
        return None
    if height != width:
        raise UserError(f"TF-Hub module expects {height}x{width} images; only square inputs are supported")
    return int(height)


class HubBackbone(NetworkBackbone):
    """Features from a TF2 SavedModel that maps ``[N, H, W, 3]`` floats in [0, 1] to ``[N, D]``."""

    def __init__(self, arg: str | None, options: Mapping[str, Any], context: RunContext) -> None:
        handle = (arg or "").strip()
        if not handle:
            raise UserError("backbone 'hub' needs a handle or a SavedModel folder: hub:<url-or-dir>")
        if not is_remote_handle(handle):
            folder = Path(handle).expanduser()
            if not folder.is_dir():
                raise UserError(f"TF-Hub module folder {handle!r} does not exist; give a SavedModel folder "
                                f"or a https:// handle")
            if not (folder / "saved_model.pb").is_file() and not (folder / "saved_model.pbtxt").is_file():
                raise UserError(f"{handle!r} is not a SavedModel folder (no saved_model.pb in it)")
            handle = str(folder.resolve())
        self.handle = handle
        self.name = f"hub:{arg}"
        self._size_option: int | None = options.get("input_size")
        self.batch_size = options.get("batch_size") or 32
        self._loaded: Any = None
        self._call: Callable[[Any], Any] | None = None
        self._folder: Path | None = None
        self._input_size: int | None = None
        self._feature_dim: int | None = None
        self._digest: str | None = None

    # -- loading --------------------------------------------------------------------------
    def _load(self) -> None:
        if self._call is not None:
            return
        import tensorflow as tf

        try:
            with warnings.catch_warnings():
                # tensorflow_hub 0.16 imports pkg_resources, which warns of its own deprecation.
                warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
                import tensorflow_hub as hub
        except ImportError as exc:
            if is_remote_handle(self.handle):
                raise UserError(f"hub:{self.handle} needs the tensorflow_hub package ({one_line(exc)}); "
                                f"install it, or download the module and pass its folder") from None
            hub = None  # a local folder loads the same way without it
        try:
            folder = hub.resolve(self.handle) if hub is not None else self.handle
        except Exception as exc:  # network and cache errors come in many types
            raise UserError(f"cannot fetch TF-Hub module {self.handle!r} ({one_line(exc)}); download it "
                            f"elsewhere and pass hub:/path/to/folder") from None
        try:
            loaded = hub.load(folder) if hub is not None else tf.saved_model.load(folder)
        except Exception as exc:
            raise UserError(f"cannot load TF-Hub module {self.handle!r}: {one_line(exc)}") from None
        self._folder = Path(os.fsdecode(folder))
        call, fixed_size = self._entry_point(loaded)
        if fixed_size is not None and self._size_option not in (None, fixed_size):
            raise UserError(f"TF-Hub module {self.handle!r} takes {fixed_size}x{fixed_size} images; "
                            f"drop input_size={self._size_option} or set it to {fixed_size}")
        self._input_size = fixed_size or self._size_option or DEFAULT_INPUT_SIZE
        probe = call(tf.zeros((1, self._input_size, self._input_size, 3), tf.float32))
        if probe.shape.rank != 2:
            raise UserError(f"TF-Hub module {self.handle!r} returns shape {probe.shape.as_list()}, not "
                            f"[batch, features]; use an image feature-vector module")
        self._loaded = loaded  # keeps the variables alive
        self._feature_dim = int(probe.shape[-1])
        self._call = call

    def _entry_point(self, loaded: Any) -> tuple[Callable[[Any], Any], int | None]:
        """How to call the module, and the input size its signature fixes (if any)."""
        import tensorflow as tf

        function = loaded.__call__ if callable(loaded) else None
        concrete = list(getattr(function, "concrete_functions", None) or [])
        if concrete:
            args, kwargs = concrete[0].structured_input_signature
            size = _signature_size(args[0].shape) if args and isinstance(args[0], tf.TensorSpec) else None
            # Modules exported from Keras models take ``training``; they must run in inference mode.
            takes_training = any(len(c.structured_input_signature[0]) > 1 or "training" in
                                 c.structured_input_signature[1] for c in concrete)
            if takes_training:
                return (lambda x: loaded(x, training=False)), size
            return loaded, size
        signatures = getattr(loaded, "signatures", {})
        if "serving_default" in signatures:
            serving = signatures["serving_default"]
            _, inputs = serving.structured_input_signature
            outputs = serving.structured_outputs
            if len(inputs) != 1 or len(outputs) != 1:
                raise UserError(f"TF-Hub module {self.handle!r}: its serving signature must have one input "
                                f"and one output, not {sorted(inputs)} -> {sorted(outputs)}")
            (input_name, spec), = inputs.items()
            (output_name,) = outputs
            return (lambda x: serving(**{input_name: x})[output_name]), _signature_size(spec.shape)
        raise UserError(f"TF-Hub module {self.handle!r} is neither callable nor has a serving signature; "
                        f"use a TF2 image feature-vector SavedModel")

    def prepare(self, context: RunContext) -> None:
        self._load()

    # -- identity -------------------------------------------------------------------------
    @property
    def input_size(self) -> int:
        self._load()
        assert self._input_size is not None
        return self._input_size

    @property
    def feature_dim(self) -> int:  # type: ignore[override]
        self._load()
        assert self._feature_dim is not None
        return self._feature_dim

    @property
    def weights_sha256(self) -> str:
        if self._digest is None:
            self._load()
            assert self._folder is not None
            self._digest = sha256_tree(self._folder)
        return self._digest

    @property
    def preprocessing(self) -> Preprocessing:  # type: ignore[override]
        """Bilinear resize to the module's size, then scaled to [0, 1] (the TF-Hub convention)."""
        return Preprocessing(size=(self.input_size, self.input_size), divide_by=255.0)

    @property
    def preprocessing_version(self) -> str:  # type: ignore[override]
        # The input size may come from the module rather than the options, so it is only
        # known after loading; it changes the features, so it is part of the cache key.
        return f"{PREPROCESSING_REVISION}-{self.input_size}px-unit"

    def flops_per_image(self) -> float:
        """FLOPs of one forward pass, counted from the loaded module's graph as ``keras:`` counts (:mod:`xferbench.flops`).

        The module's restored functions are traced into one graph and counted through; a module whose
        graph hides a counted op's shape raises, which the harness records as unknown (MFU ``-``).
        """
        from xferbench.flops import function_flops

        self._load()
        return function_flops(self._call, (self.input_size, self.input_size, 3))

    def info(self) -> dict[str, Any]:
        return {"handle": self.handle, "folder": str(self._folder) if self._folder else None,
                "input_size": self._input_size, "input_range": "[0, 1]"}

    # -- features -------------------------------------------------------------------------
    def forward(self, batch: Any) -> Any:
        self._load()
        assert self._call is not None
        return self._call(batch)

    def exported_network(self) -> Any:
        self._load()
        return self._loaded


def _saved_model_root(folder: Path) -> Path | None:
    """``folder`` or its only subfolder, whichever holds ``saved_model.pb``."""
    if (folder / "saved_model.pb").is_file():
        return folder
    children = [p for p in folder.iterdir() if p.is_dir()]
    if len(children) == 1 and (children[0] / "saved_model.pb").is_file():
        return children[0]
    return None


def fetch_module(arg: str | None, options: Mapping[str, Any], context: RunContext, source: Path | None) -> Path:
    """``xferbench fetch hub:<handle>``: download into the TF-Hub cache; ``--from ARCHIVE`` unpacks a copy.

    The archive is what tfhub.dev serves (``?tf-hub-format=compressed``): a ``.tar.gz`` of the
    SavedModel folder. It is unpacked under the xferbench cache; use the printed folder as
    ``hub:<folder>``.
    """
    import shutil
    import tarfile
    import tempfile

    handle = (arg or "").strip()
    if source is None:
        if not is_remote_handle(handle):
            raise UserError(f"hub:{handle} is a local folder already; nothing to fetch")
        backbone = HubBackbone(handle, options, context)
        backbone.prepare(context)
        assert backbone._folder is not None
        return backbone._folder
    source = Path(source).expanduser()
    with open(source, "rb") as handle_file:
        digest = hashlib.file_digest(handle_file, "sha256").hexdigest()
    target = context.subdir("hub") / digest[:16]
    if target.is_dir() and (target / "saved_model.pb").is_file():
        return target
    # The unpacked folder is moved away at the end, so cleanup may find nothing to remove.
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".unpack-", ignore_cleanup_errors=True) as scratch:
        try:
            with tarfile.open(source) as archive:
                archive.extractall(scratch, filter="data")  # refuses absolute paths and ../ escapes
        except (tarfile.TarError, OSError) as exc:
            raise UserError(f"cannot unpack {source} as a TF-Hub module archive (.tar.gz): {one_line(exc)}") from None
        root = _saved_model_root(Path(scratch))
        if root is None:
            raise UserError(f"{source} holds no saved_model.pb; it is not a TF2 SavedModel archive")
        if target.exists():  # left over from an interrupted older version of this step
            shutil.rmtree(target)
        os.replace(root, target)  # atomic: a half-unpacked module is never visible
    return target
