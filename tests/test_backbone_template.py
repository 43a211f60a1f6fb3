"""The backbone template (``NetworkBackbone`` + ``Preprocessing``) through the plugin API, and
``net img/s`` for backbones that do not time their forward passes."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xferbench import BackboneSpec, hookimpl
from xferbench.backbone import Backbone, NetworkBackbone
from xferbench.context import RunContext
from xferbench.decoding import Preprocessing
from xferbench.plugin_manager import load_catalog
from xferbench.progress import Progress
from xferbench.results import validate_document
from xferbench.runner import Runner, RunRequest


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


# -- net img/s -------------------------------------------------------------------------------------
class UntimedBlockMeans(Backbone):
    """Means of 2x2 blocks of an 8x8 digit, in one extract() that never touches network_seconds."""

    feature_dim = 16
    weights_sha256 = "0" * 64

    def __init__(self, arg, options, context) -> None:
        self.name = "untimed"

    def extract(self, images):
        return np.stack([np.asarray(img, np.float32).reshape(4, 2, 4, 2).mean(axis=(1, 3)).ravel() / 255
                         for img in images])


class TemplateBlockMeans(NetworkBackbone):
    """The same features through the template (Pillow preprocessing, a numpy forward): always timed."""

    feature_dim = 16
    weights_sha256 = "1" * 64
    preprocessing = Preprocessing(size=(8, 8), channels=1, resize="bilinear", divide_by=255.0, library="pillow")

    def __init__(self, arg, options, context) -> None:
        self.name = "template"

    def forward(self, batch):
        return batch.reshape(len(batch), 4, 2, 4, 2).mean(axis=(2, 4)).reshape(len(batch), -1)


@hookimpl(specname="xferbench_register_backbones")
def register_block_means(register):
    register(BackboneSpec("untimed", "extract() without timing", factory=UntimedBlockMeans))
    register(BackboneSpec("template", "the template, Pillow only", factory=TemplateBlockMeans))


def _render(catalog, document, reporter: str) -> str:
    spec, _ = catalog.reporters.resolve(reporter)
    stream = io.StringIO()
    spec.load_factory()(spec.validate({})).report(document, stream)
    return stream.getvalue()


def test_a_backbone_that_does_not_time_its_forward_passes_shows_no_network_figure(tmp_path):
    plugin = types.SimpleNamespace(xferbench_register_backbones=register_block_means)
    catalog = load_catalog(extra_plugins=[("blocks", plugin)])
    context = RunContext(catalog=catalog, cache_dir=tmp_path / "cache", progress=Progress(quiet=True))
    request = RunRequest(backbones=["untimed", "template"], datasets=["digits:0-4"], heads=["logreg"],
                         methods=["transfer"], head_options={"grid": "1"})
    document = Runner(request, context, tmp_path / "results.json").run()
    validate_document(document)
    runs = {run["backbone"]: run for run in document["runs"]}
    assert all(run["status"] == "ok" and run["extracted"] > 0 for run in runs.values()), runs
    assert runs["untimed"]["extract_forward_images_per_second"] is None
    assert runs["untimed"]["extract_images_per_second"] > 0  # end to end is still measured
    assert runs["template"]["extract_forward_images_per_second"] > 0

    rows = {row["backbone"]: row for row in csv.DictReader(io.StringIO(_render(catalog, document, "csv")))}
    assert rows["untimed"]["net img/s"] == "-"
    assert float(rows["template"]["net img/s"]) > 0
    table = _render(catalog, document, "table")
    untimed_line = next(line for line in table.splitlines() if "untimed" in line)
    cells = [cell.strip() for cell in untimed_line.split("│")[1:-1]]
    assert cells[7] == "-" and float(cells[6]) > 0  # net img/s, img/s


# -- the template with TensorFlow preprocessing ----------------------------------------------------
class TinyNetwork(NetworkBackbone):
    """Caffe-style preprocessing (BGR, mean subtracted) and then /std, into a fixed linear layer."""

    name = "tiny:net"
    feature_dim = 5
    weights_sha256 = "2" * 64
    batch_size = 3

    def __init__(self, size=(12, 10)) -> None:
        import tensorflow as tf

        self.preprocessing = Preprocessing(size=size, reverse_channels=True, mean=(100.0, 110.0, 120.0),
                                           std=(58.0, 57.0, 57.5))
        self.weights = tf.Variable(tf.random.stateless_normal([size[0] * size[1] * 3, 5], seed=[1, 2]))
        self.seen: list[int] = []

    def forward(self, batch):
        import tensorflow as tf

        self.seen.append(batch.shape[0])  # None while traced for export
        return tf.matmul(tf.reshape(batch, [tf.shape(batch)[0], -1]), self.weights)

    def exported_network(self):
        return self.weights


def test_the_template_batches_times_and_leaves_nan_rows_for_bad_images():
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (30, 17, 3), np.uint8)
    gray = rng.integers(0, 256, (9, 40), np.uint8)
    images = [png(rgb), b"not an image", rgb, gray, np.zeros((4, 4), np.float32), png(gray), png(rgb)[:40], rgb]
    backbone = TinyNetwork()
    features = backbone.extract(images)

    assert features.shape == (8, 5) and features.dtype == np.float32
    bad = np.isnan(features).all(axis=1)
    assert bad.tolist() == [False, True, False, False, True, False, True, False]
    assert np.isfinite(features[~bad]).all()
    assert max(backbone.seen) <= 3 and sum(backbone.seen) == 5 and backbone.network_seconds > 0

    inputs = backbone.model_inputs(images)
    assert inputs.shape == (8, 12, 10, 3) and np.isnan(inputs[bad]).all()
    # The data says: bilinear resize (no antialiasing), RGB -> BGR, minus mean, over std. Bit for bit.
    resized = tf.image.resize(rgb, (12, 10), method="bilinear", antialias=False).numpy()
    want = (resized[..., ::-1] - np.float32([100, 110, 120])) / np.float32([58, 57, 57.5])
    for index in (0, 2, 7):
        np.testing.assert_array_equal(inputs[index], want)
    np.testing.assert_array_equal(inputs[3], inputs[5])  # arrays and files decode alike
    np.testing.assert_allclose(features[~bad], backbone.forward(tf.constant(inputs[~bad])).numpy(), rtol=1e-6)


def test_the_template_exports_the_same_preprocessing_and_network(tmp_path):
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(1)
    files = [png(rng.integers(0, 256, (20 + i, 25, 3), np.uint8)) for i in range(4)]
    backbone = TinyNetwork()
    expected = backbone.extract(files)

    features = backbone.tf_features()
    serve = tf.function(features, input_signature=[tf.TensorSpec([None], tf.string)])
    holder = tf.Module()
    holder.features, holder.serve = features, serve
    tf.saved_model.save(holder, str(tmp_path / "exported"))  # fails if the weights were not tracked
    restored = tf.saved_model.load(str(tmp_path / "exported"))
    np.testing.assert_allclose(restored.serve(tf.constant(files)).numpy(), expected, rtol=1e-6)


def test_the_cache_key_holds_the_preprocessing_unless_the_backbone_names_a_version():
    pytest.importorskip("tensorflow")
    small, large = TinyNetwork(), TinyNetwork(size=(14, 10))
    assert small.cache_namespace() == f"tiny:net|{'2' * 64}|pre{small.preprocessing.digest()}"
    assert small.cache_namespace() != large.cache_namespace()
    assert small.cache_namespace() == TinyNetwork().cache_namespace()
    large.preprocessing_version = "7"
    assert large.cache_namespace() == f"tiny:net|{'2' * 64}|pre7"


# -- Preprocessing as data -------------------------------------------------------------------------
def test_preprocessing_is_validated_and_compares_by_value():
    assert Preprocessing(size=[4, 5], mean=[1, 2, 3]) == Preprocessing(size=(4, 5), mean=(1.0, 2.0, 3.0))
    assert Preprocessing(size=(4, 5)).digest() == Preprocessing(size=(4, 5)).digest()
    assert Preprocessing(size=(4, 5)).digest() != Preprocessing(size=(4, 5), scale=1 / 255).digest()
    assert Preprocessing(size=(4, 5), channels=1).input_shape == (4, 5, 1)
    for bad, message in (({"size": (0, 4)}, "size"), ({"size": (4, 4), "channels": 2}, "channels"),
                         ({"size": (4, 4), "mean": (1, 2)}, "mean needs 1 or 3"),
                         ({"size": (4, 4), "std": (0,)}, "must not be 0"),
                         ({"size": (4, 4), "library": "opencv"}, "library"),
                         ({"size": (4, 4), "resize": "area", "align_corners": True}, "bilinear without antialias"),
                         ({"size": (4, 4), "library": "pillow", "resize": "area"}, "Pillow"),
                         ({"size": (4, 4), "library": "pillow", "antialias": True}, "TensorFlow settings")):
        with pytest.raises(ValueError, match=message):
            Preprocessing(**bad)


def test_normalising_in_numpy_and_in_a_traced_function_gives_the_same_bits():
    tf = pytest.importorskip("tensorflow")
    pixels = np.random.default_rng(2).uniform(0, 255, (3, 7, 5, 3)).astype(np.float32)
    for preprocessing in (Preprocessing(size=(7, 5), divide_by=255.0, mean=(0.485, 0.456, 0.406),
                                        std=(0.229, 0.224, 0.225)),
                          Preprocessing(size=(7, 5), divide_by=127.5, mean=(1.0,)),
                          Preprocessing(size=(7, 5), scale=1 / 255)):
        traced = tf.function(preprocessing.normalise)(tf.constant(pixels)).numpy()
        np.testing.assert_array_equal(traced, preprocessing.normalise(pixels))
    # Why it needs care: Grappler turns a traced x / 255 into x * (1 / 255), which rounds differently.
    assert not np.array_equal(tf.function(lambda x: x / 255.0)(tf.constant(pixels)).numpy(), pixels / np.float32(255))


def test_pillow_preprocessing_needs_no_tensorflow_and_cannot_be_exported(tmp_path):
    code = textwrap.dedent("""
        import io, sys
        import numpy as np
        from PIL import Image
        from xferbench.backbone import NetworkBackbone
        from xferbench.decoding import Preprocessing
        from xferbench.errors import UserError

        class Flat(NetworkBackbone):
            name, feature_dim, weights_sha256 = "flat", 12, "0" * 64
            preprocessing = Preprocessing(size=(2, 2), library="pillow", divide_by=255.0)

            def forward(self, batch):
                return batch.reshape(len(batch), -1)

        buffer = io.BytesIO()
        Image.fromarray(np.full((5, 5, 3), 51, np.uint8)).save(buffer, "PNG")
        backbone = Flat()
        features = backbone.extract([buffer.getvalue(), b"junk", np.full((3, 3), 102, np.uint8)])
        print([round(float(value), 3) for value in features[:, 0]], backbone.network_seconds > 0)
        print(backbone.model_inputs([b"junk"]).shape)
        try:
            backbone.tf_features()
        except UserError as exc:
            print(exc)
        print("tensorflow" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    lines = out.stdout.splitlines()
    assert lines[0] == "[0.2, nan, 0.4] True"
    assert lines[1] == "(1, 2, 2, 3)"
    assert "backbone 'flat' cannot be exported (its preprocessing runs in pillow" in lines[2]
    assert lines[3] == "False"


# -- the built-in backbones' preprocessing ---------------------------------------------------------
def test_keras_normalisation_is_the_familys_preprocess_input_bit_for_bit(tmp_path):
    tf = pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    import xferbench_keras

    catalog = load_catalog(extra_plugins=[("keras", xferbench_keras)], load_entry_points=False)
    rgb = np.random.default_rng(3).integers(0, 256, (41, 29, 3), np.uint8)
    resized = tf.image.resize(rgb[None], (32, 32), method="bilinear", antialias=False).numpy()
    for application, family, normalisation in (("MobileNetV2", "mobilenet_v2", "tf"),
                                               ("DenseNet121", "densenet", "torch"),
                                               ("ResNet50", "resnet", "caffe"),
                                               ("EfficientNetB0", "efficientnet", "none")):
        spec, arg = catalog.backbones.resolve(f"keras:{application}")
        backbone = spec.load_factory()(arg, spec.validate({"input_size": "32"}), RunContext(catalog=catalog, cache_dir=tmp_path))
        assert backbone.info()["normalisation"] == normalisation
        want = getattr(keras.applications, family).preprocess_input(resized.copy())[0]
        np.testing.assert_array_equal(backbone.model_inputs([png(rgb)])[0], want)


def test_builtin_preprocessing_is_pinned_to_the_cache_version_it_is_stored_under(tmp_path):
    """Changing a built-in backbone's preprocessing must bump its ``preprocessing_version``.

    The built-ins keep the cache keys they had before the template, so their caches stay valid;
    the key then says nothing about the preprocessing itself. If this fails, bump the backbone's
    version (``preprocessing_version`` / ``PREPROCESSING_REVISION``) and then update the digest here.
    """
    pytest.importorskip("tensorflow")
    import xferbench_keras
    from support.inception_standin import cached_standin
    from xferbench_inception.backbone import Inception2015
    from xferbench_lenet5.backbone import LeNet5

    inception = Inception2015({})
    inception.load(cached_standin("tiny", archive="pb"))
    catalog = load_catalog(extra_plugins=[("keras", xferbench_keras)], load_entry_points=False)
    spec, arg = catalog.backbones.resolve("keras:MobileNet")
    mobilenet = spec.load_factory()(arg, spec.validate({"input_size": "128", "alpha": "0.25"}),
                                    RunContext(catalog=catalog, cache_dir=tmp_path))
    pinned = {
        "lenet5": (LeNet5.preprocessing_version, LeNet5.preprocessing.digest()),
        "keras:MobileNet": (mobilenet.preprocessing_version.split("-")[0], mobilenet.preprocessing.digest()),
        "inception_2015": (inception.preprocessing_version, inception.preprocessing.digest()),
    }
    assert pinned == {
        "lenet5": ("2", "50175c4e81c042a7"),
        "keras:MobileNet": ("1", "a47bdf1b7c67ce83"),
        "inception_2015": ("1", "9cb2f36c4e7c8fe9"),
    }


# -- the documented example ---------------------------------------------------------------------
def _documented_module(first_line: str) -> types.ModuleType:
    """The Python block of docs/plugins.md that starts with ``first_line``, imported as a module."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
    block = next(part.split("```", 1)[0] for part in text.split("```python\n")[1:] if part.startswith(first_line))
    module = types.ModuleType("documented_backbone")
    exec(compile(block, "docs/plugins.md", "exec"), module.__dict__)  # noqa: S102 - our own documentation
    return module


def test_the_documented_template_example_runs(tmp_path):
    tf = pytest.importorskip("tensorflow")
    module = _documented_module("# my_plugin/random_cnn.py")

    @hookimpl(specname="xferbench_register_backbones")
    def register(register):
        register(BackboneSpec("random_cnn", "the documented example", factory=module.RandomCNN))

    catalog = load_catalog(extra_plugins=[("doc", types.SimpleNamespace(xferbench_register_backbones=register))],
                           load_entry_points=False)
    spec, arg = catalog.backbones.resolve("random_cnn")
    context = RunContext(catalog=catalog, cache_dir=tmp_path)
    backbone = spec.load_factory()(arg, spec.validate({}), context)
    rng = np.random.default_rng(4)
    images = [png(rng.integers(0, 256, (70, 50, 3), np.uint8)), b"broken", rng.integers(0, 256, (20, 20), np.uint8)]
    features = backbone.extract(images)
    assert features.shape == (3, 32) and np.isnan(features[1]).all() and np.isfinite(features[[0, 2]]).all()
    assert backbone.network_seconds > 0 and backbone.cache_namespace().endswith(backbone.preprocessing.digest())
    exported = backbone.tf_features()(tf.constant([images[0]])).numpy()
    np.testing.assert_allclose(exported[0], features[0], rtol=1e-5, atol=1e-6)
