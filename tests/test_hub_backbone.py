"""hub:<dir>: TF-Hub feature-vector SavedModels built here, loaded through the plugin."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
Image = pytest.importorskip("PIL.Image")

import xferbench_keras  # noqa: E402
from support.saved_model import assert_tf_features_round_trip  # noqa: E402
from xferbench.context import RunContext  # noqa: E402
from xferbench.errors import OptionError, UserError  # noqa: E402
from xferbench.plugin_manager import load_catalog  # noqa: E402

FIXED = 32  # input size baked into the fixed-signature test module


class FixedSizeModule(tf.Module):
    """[N, 32, 32, 3] -> [N, 6]: depends on where things are in the image, so resizing shows."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.w = tf.Variable(tf.random.stateless_normal([4 * 4 * 3, 6], seed=[seed, 0]))

    @tf.function(input_signature=[tf.TensorSpec([None, FIXED, FIXED, 3], tf.float32)])
    def __call__(self, images: tf.Tensor) -> tf.Tensor:
        pooled = tf.nn.avg_pool2d(images, ksize=8, strides=8, padding="VALID")  # [N, 4, 4, 3]
        return tf.nn.relu(tf.matmul(tf.reshape(pooled, [-1, 4 * 4 * 3]), self.w))


class TrainingArgModule(tf.Module):
    """Any size; takes ``training`` like modules exported from Keras, and defaults to the wrong mode."""

    def __init__(self) -> None:
        super().__init__()
        self.w = tf.Variable(tf.random.stateless_normal([3, 5], seed=[7, 0]))

    @tf.function
    def __call__(self, images: tf.Tensor, training: bool = True) -> tf.Tensor:
        features = tf.matmul(tf.reduce_mean(images, axis=[1, 2]), self.w)
        return features + 1000.0 if training else features


class SpatialOutputModule(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def __call__(self, images: tf.Tensor) -> tf.Tensor:
        return images  # a feature map, not a vector


class ServingOnlyModule(tf.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = tf.Variable(tf.random.stateless_normal([3, 4], seed=[3, 0]))

    @tf.function(input_signature=[tf.TensorSpec([None, 16, 16, 3], tf.float32, name="images")])
    def features(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"feature_vector": tf.matmul(tf.reduce_mean(images, axis=[1, 2]), self.w)}


def _save(module: tf.Module, folder: Path, **kwargs: object) -> Path:
    tf.saved_model.save(module, str(folder), **kwargs)
    return folder


@pytest.fixture(scope="module")
def modules(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hub")
    training = TrainingArgModule()
    spec = tf.TensorSpec([None, None, None, 3], tf.float32)
    for flag in (False, True):
        training.__call__.get_concrete_function(spec, training=flag)
    serving = ServingOnlyModule()
    return {
        "fixed": _save(FixedSizeModule(seed=1), root / "fixed"),
        "fixed_other": _save(FixedSizeModule(seed=2), root / "fixed_other"),
        "training": _save(training, root / "training"),
        "spatial": _save(SpatialOutputModule(), root / "spatial"),
        "serving": _save(serving, root / "serving", signatures={"serving_default": serving.features}),
    }


@pytest.fixture(scope="module")
def catalog():
    # Only this plugin, so a half-written neighbour cannot break these tests.
    return load_catalog(extra_plugins=[("keras", xferbench_keras)], load_entry_points=False)


def make_backbone(catalog, folder: Path | str, tmp_path: Path, **options: str):
    spec, arg = catalog.backbones.resolve(f"hub:{folder}")
    context = RunContext(catalog=catalog, cache_dir=tmp_path)
    return spec.load_factory()(arg, spec.validate(options), context)


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _expected_input(pixels: np.ndarray, size: int) -> np.ndarray:
    """What the module must see: bilinear resize without antialiasing, scaled to [0, 1]."""
    resized = tf.image.resize(pixels[None], (size, size), method="bilinear", antialias=False)
    return resized.numpy() / 255.0


def _images(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (40 + 7 * i, 56 - 3 * i, 3), dtype=np.uint8) for i in range(count)]


def test_hub_is_registered_as_parametric(catalog) -> None:
    spec, arg = catalog.backbones.resolve("hub:/some/dir")
    assert spec.parametric and arg == "/some/dir"
    with pytest.raises(OptionError, match="unknown option 'alpha'"):
        spec.validate({"alpha": "1"})


def test_features_are_the_module_applied_to_scaled_resized_images(catalog, modules, tmp_path) -> None:
    backbone = make_backbone(catalog, modules["fixed"], tmp_path, batch_size="2")
    pixels = _images(5)
    features = backbone.extract([_png(p) for p in pixels])

    assert backbone.input_size == FIXED  # read from the module's signature
    assert backbone.feature_dim == 6
    assert features.shape == (5, 6) and features.dtype == np.float32
    module = tf.saved_model.load(str(modules["fixed"]))
    expected = np.concatenate([module(_expected_input(p, FIXED).astype(np.float32)).numpy() for p in pixels])
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-5)
    assert np.abs(features).sum() > 0


def test_undecodable_image_gives_a_nan_row_only(catalog, modules, tmp_path) -> None:
    backbone = make_backbone(catalog, modules["fixed"], tmp_path)
    pixels = _images(3, seed=1)
    features = backbone.extract([_png(pixels[0]), b"not an image", pixels[1], _png(pixels[2])[:40]])

    assert np.isnan(features[1]).all() and np.isnan(features[3]).all()
    reference = backbone.extract([pixels[0], pixels[1]])
    np.testing.assert_allclose(features[[0, 2]], reference, rtol=1e-6)


def test_module_that_fixes_its_size_rejects_another_input_size(catalog, modules, tmp_path) -> None:
    backbone = make_backbone(catalog, modules["fixed"], tmp_path, input_size="64")
    with pytest.raises(UserError, match="takes 32x32 images"):
        backbone.extract(_images(1))


def test_free_size_module_uses_option_or_224_and_runs_in_inference_mode(catalog, modules, tmp_path) -> None:
    pixels = _images(2, seed=2)
    default = make_backbone(catalog, modules["training"], tmp_path)
    assert default.input_size == 224
    sized = make_backbone(catalog, modules["training"], tmp_path, input_size="48")
    assert sized.input_size == 48

    module = tf.saved_model.load(str(modules["training"]))
    for backbone, size in ((default, 224), (sized, 48)):
        features = backbone.extract(pixels)
        inputs = np.concatenate([_expected_input(p, size) for p in pixels]).astype(np.float32)
        np.testing.assert_allclose(features, module(inputs, training=False).numpy(), rtol=1e-5, atol=1e-5)
    assert default.cache_namespace() != sized.cache_namespace()


def test_serving_signature_module_is_called_by_its_input_name(catalog, modules, tmp_path) -> None:
    backbone = make_backbone(catalog, modules["serving"], tmp_path)
    pixels = _images(2, seed=3)
    features = backbone.extract(pixels)

    assert backbone.input_size == 16 and features.shape == (2, 4)
    serving = tf.saved_model.load(str(modules["serving"])).signatures["serving_default"]
    inputs = np.concatenate([_expected_input(p, 16) for p in pixels]).astype(np.float32)
    np.testing.assert_allclose(features, serving(images=inputs)["feature_vector"].numpy(), rtol=1e-5, atol=1e-5)


def test_weights_digest_follows_the_saved_variables(catalog, modules, tmp_path) -> None:
    first = make_backbone(catalog, modules["fixed"], tmp_path).weights_sha256
    again = make_backbone(catalog, modules["fixed"], tmp_path).weights_sha256
    other = make_backbone(catalog, modules["fixed_other"], tmp_path).weights_sha256
    assert first == again
    assert first != other
    assert len(first) == 64


def test_module_without_a_feature_vector_is_rejected(catalog, modules, tmp_path) -> None:
    with pytest.raises(UserError, match="not \\[batch, features\\]"):
        make_backbone(catalog, modules["spatial"], tmp_path).extract(_images(1))


def test_bad_folders_are_one_line_user_errors(catalog, tmp_path) -> None:
    with pytest.raises(UserError, match="does not exist") as missing:
        make_backbone(catalog, tmp_path / "nowhere", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a SavedModel folder") as empty:
        make_backbone(catalog, tmp_path / "empty", tmp_path)
    assert "\n" not in str(missing.value) + str(empty.value)


def test_unreachable_handle_is_a_user_error(catalog, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "hub-cache"))
    backbone = make_backbone(catalog, "https://example.invalid/no-such-module/1", tmp_path)
    with pytest.raises(UserError, match="cannot fetch TF-Hub module") as info:
        backbone.prepare(RunContext(catalog=catalog, cache_dir=tmp_path))
    assert "\n" not in str(info.value)


def test_tf_features_match_extract_and_survive_saving(catalog, modules, tmp_path) -> None:
    backbone = make_backbone(catalog, modules["training"], tmp_path, input_size="40")
    backbone.prepare(RunContext(catalog=catalog, cache_dir=tmp_path))
    files = [_png(p) for p in _images(3, seed=4)]
    expected = backbone.extract(files)

    assert_tf_features_round_trip(backbone, files, expected, tmp_path, rtol=1e-5)


def _tar_gz(folder: Path, archive: Path, nested: bool) -> Path:
    import tarfile

    with tarfile.open(archive, "w:gz") as tar:
        if nested:
            tar.add(folder, arcname="module")
        else:
            for child in folder.iterdir():
                tar.add(child, arcname=child.name)
    return archive


@pytest.mark.parametrize("nested", [False, True])
def test_fetch_unpacks_a_module_archive_for_offline_use(catalog, modules, tmp_path, nested) -> None:
    archive = _tar_gz(modules["fixed"], tmp_path / "module.tar.gz", nested)
    spec, arg = catalog.backbones.resolve("hub:https://tfhub.dev/some/module/1")
    context = RunContext(catalog=catalog, cache_dir=tmp_path / "cache")
    folder = spec.load_fetcher()(arg, spec.validate({}), context, archive)

    assert folder.parent == tmp_path / "cache" / "hub" and (folder / "saved_model.pb").is_file()
    assert spec.load_fetcher()(arg, spec.validate({}), context, archive) == folder  # idempotent
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no scratch left behind
    pixels = _images(2, seed=6)
    unpacked = make_backbone(catalog, folder, tmp_path).extract(pixels)
    np.testing.assert_array_equal(unpacked, make_backbone(catalog, modules["fixed"], tmp_path).extract(pixels))


def test_fetch_refuses_archives_without_a_saved_model(catalog, tmp_path) -> None:
    spec, arg = catalog.backbones.resolve("hub:https://tfhub.dev/some/module/1")
    context = RunContext(catalog=catalog, cache_dir=tmp_path / "cache")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "readme.txt").write_text("hello")
    with pytest.raises(UserError, match="holds no saved_model.pb"):
        spec.load_fetcher()(arg, {}, context, _tar_gz(tmp_path / "junk", tmp_path / "junk.tar.gz", False))
    (tmp_path / "broken.tar.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(UserError, match="cannot unpack .* as a TF-Hub module archive"):
        spec.load_fetcher()(arg, {}, context, tmp_path / "broken.tar.gz")
    spec, arg = catalog.backbones.resolve(f"hub:{tmp_path}")
    with pytest.raises(UserError, match="local folder already"):
        spec.load_fetcher()(arg, {}, context, None)


def test_flops_are_counted_from_the_loaded_graph_as_keras_backbones_count_them(catalog, modules, tmp_path) -> None:
    """2 FLOPs per multiply-add of the module's convolutions and matrix products, per image."""
    import keras

    from xferbench.flops import model_flops
    from xferbench.peak import utilisation

    assert make_backbone(catalog, modules["fixed"], tmp_path).flops_per_image() == 2 * (4 * 4 * 3) * 6
    assert make_backbone(catalog, modules["serving"], tmp_path).flops_per_image() == 2 * 3 * 4
    # A conv net exported from Keras as a SavedModel: its restored functions are counted through,
    # and give what the Keras model itself counts (as keras: backbones do), which is this by hand.
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((24, 24, 3)), keras.layers.Conv2D(8, 3, activation="relu"),
                              keras.layers.DepthwiseConv2D(3), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(5)])
    model.export(str(tmp_path / "exported"), verbose=False)
    backbone = make_backbone(catalog, tmp_path / "exported", tmp_path)
    by_hand = 2 * (22 * 22 * 8 * (3 * 3 * 3) + 20 * 20 * 8 * (3 * 3) + 8 * 5)
    assert backbone.flops_per_image() == model_flops(model) == by_hand
    assert utilisation(backbone, None, tmp_path)["gflops_per_image"] == pytest.approx(by_hand / 1e9)
