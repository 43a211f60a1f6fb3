"""keras:<Application>: name lookup, options, decoding, weights identity, training models, real data."""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
Image = pytest.importorskip("PIL.Image")

import xferbench_keras  # noqa: E402
from support.saved_model import assert_tf_features_round_trip  # noqa: E402
from xferbench.context import RunContext  # noqa: E402
from xferbench.errors import OptionError, UserError  # noqa: E402
from xferbench.plugin_manager import load_catalog  # noqa: E402
from xferbench_keras.images import resized_batches  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("XFERBENCH_SHARED_DATA") or REPO.parent / "shared" / "data")
MOBILENET_WEIGHTS = SHARED / "weights" / "mobilenet_2_5_224_tf_no_top.h5"
FLOWERS = SHARED / "flower_photos_mini"

needs_weights = pytest.mark.skipif(not MOBILENET_WEIGHTS.is_file(), reason=f"no {MOBILENET_WEIGHTS}")


@pytest.fixture(scope="module")
def catalog():
    # Only this plugin, so a half-written neighbour cannot break these tests.
    return load_catalog(extra_plugins=[("keras", xferbench_keras)], load_entry_points=False)


def make_backbone(catalog, token: str, tmp_path: Path, weights: Path | None = None, **options: str):
    spec, arg = catalog.backbones.resolve(token)
    context = RunContext(catalog=catalog, cache_dir=tmp_path, weights=weights)
    return spec.load_factory()(arg, spec.validate(options), context)


def mobilenet(catalog, tmp_path: Path, **options: str):
    """MobileNet alpha=0.25 with the real ImageNet weights file (2 MB)."""
    options = {"alpha": "0.25", "input_size": "128", **options}
    return make_backbone(catalog, "keras:MobileNet", tmp_path, weights=MOBILENET_WEIGHTS, **options)


def encode(pixels: np.ndarray, fmt: str, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(pixels)
    if mode:
        image = image.convert(mode)
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def random_pixels(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def direct_features(model, size: int, pixels: np.ndarray) -> np.ndarray:
    """The reference: bilinear resize, the family's preprocess_input, the Keras model itself."""
    resized = tf.image.resize(pixels[None], (size, size), method="bilinear", antialias=False).numpy()
    return model(keras.applications.mobilenet.preprocess_input(resized), training=False).numpy()


# -- registration and options ---------------------------------------------------------------

def test_plugin_import_and_listing_do_not_import_tensorflow() -> None:
    code = ("import sys, xferbench_keras\n"
            "from xferbench.plugin_manager import load_catalog\n"
            "c = load_catalog(extra_plugins=[('keras', xferbench_keras)], load_entry_points=False)\n"
            "print(sorted(s.label for s in c.backbones))\n"
            "print(sorted(m for m in ('tensorflow', 'keras', 'sklearn', 'tensorflow_hub') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["['hub:<arg>', 'keras:<arg>']", "[]"]


def test_keras_plugin_is_an_entry_point() -> None:
    from importlib.metadata import entry_points

    assert any(ep.value == "xferbench_keras" for ep in entry_points(group="xferbench"))


def test_options_are_validated_by_the_schema(catalog) -> None:
    spec, _ = catalog.backbones.resolve("keras:MobileNet")
    opts = spec.validate({"alpha": "0.5", "input_size": "160", "batch_size": "8", "precision": "bfloat16"})
    assert opts == {"alpha": 0.5, "input_size": 160, "batch_size": 8, "precision": "bfloat16",
                    "int8_calibration_images": 100}
    with pytest.raises(OptionError, match="did you mean 'alpha'"):
        spec.validate({"alpah": "0.5"})
    with pytest.raises(OptionError, match="must be one of: float32, bfloat16"):
        spec.validate({"precision": "float16"})
    with pytest.raises(OptionError, match="is not an integer"):
        spec.validate({"input_size": "big"})


def test_unknown_application_suggests_the_closest_name(catalog, tmp_path) -> None:
    with pytest.raises(UserError) as info:
        make_backbone(catalog, "keras:MobileNetV4", tmp_path)
    message = str(info.value)
    assert "did you mean 'MobileNetV2'?" in message and "ResNet50" in message and "\n" not in message
    with pytest.raises(UserError, match="did you mean 'ResNet50'"):
        make_backbone(catalog, "keras:Resnet5", tmp_path)


def test_application_lookup_and_default_sizes(catalog, tmp_path) -> None:
    assert make_backbone(catalog, "keras:mobilenetv2", tmp_path).name == "keras:MobileNetV2"
    assert make_backbone(catalog, "keras:InceptionV3", tmp_path).input_size == 299
    assert make_backbone(catalog, "keras:Xception", tmp_path).input_size == 299
    assert make_backbone(catalog, "keras:EfficientNetB3", tmp_path).input_size == 300
    assert make_backbone(catalog, "keras:ResNet50", tmp_path).input_size == 224
    assert make_backbone(catalog, "keras:InceptionV3", tmp_path, input_size="150").input_size == 150


def test_default_size_matches_what_keras_builds_with_its_top(catalog, tmp_path) -> None:
    # With include_top=True Keras forces its default input size: the table must agree.
    for name in ("InceptionV3",):
        model = getattr(keras.applications, name)(weights=None)
        assert make_backbone(catalog, f"keras:{name}", tmp_path).input_size == model.input_shape[1]


def test_alpha_is_refused_for_applications_without_it(catalog, tmp_path) -> None:
    with pytest.raises(OptionError, match="not to ResNet50"):
        make_backbone(catalog, "keras:ResNet50", tmp_path, alpha="0.5")


def test_missing_weights_file_is_a_user_error(catalog, tmp_path) -> None:
    with pytest.raises(UserError, match="does not exist; check --weights"):
        make_backbone(catalog, "keras:MobileNet", tmp_path, weights=tmp_path / "nope.h5")


@needs_weights
def test_weights_file_of_another_width_is_a_one_line_user_error(catalog, tmp_path) -> None:
    backbone = make_backbone(catalog, "keras:MobileNet", tmp_path, weights=MOBILENET_WEIGHTS, alpha="0.5",
                             input_size="128")
    with pytest.raises(UserError, match="cannot build keras:MobileNet \\(alpha=0.5") as info:
        backbone.prepare(RunContext(catalog=catalog, cache_dir=tmp_path))
    assert "\n" not in str(info.value)


def test_failed_imagenet_download_asks_for_a_weights_file(catalog, tmp_path, monkeypatch,
                                                         without_packaged_weights) -> None:
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/x.h5: None -- no network")

    monkeypatch.setattr(file_utils, "get_file", offline)
    backbone = make_backbone(catalog, "keras:MobileNet", tmp_path, alpha="0.25", input_size="128")
    with pytest.raises(UserError, match="cannot download its ImageNet weights .*pass --weights FILE") as info:
        backbone.prepare(RunContext(catalog=catalog, cache_dir=tmp_path))
    assert "\n" not in str(info.value)


@pytest.mark.slow
@needs_weights
def test_imagenet_weights_are_identified_by_keras_cached_file(catalog, tmp_path, monkeypatch,
                                                             without_packaged_weights) -> None:
    from keras.src.utils import file_utils

    requested: list[str] = []

    def cached(fname, *args, **kwargs):  # stands in for ~/.keras/models/<fname>
        requested.append(fname)
        return str(MOBILENET_WEIGHTS)

    monkeypatch.setattr(file_utils, "get_file", cached)
    imagenet = make_backbone(catalog, "keras:MobileNet", tmp_path, alpha="0.25", input_size="128")
    from_file = mobilenet(catalog, tmp_path)
    expected = hashlib.sha256(MOBILENET_WEIGHTS.read_bytes()).hexdigest()

    assert imagenet.weights_sha256 == expected == from_file.weights_sha256
    assert requested == ["mobilenet_2_5_128_tf_no_top.h5"]
    assert imagenet.info()["weights_cache_file"] == str(MOBILENET_WEIGHTS)
    pixels = [random_pixels(90, 70, seed=5)]
    np.testing.assert_allclose(imagenet.extract(pixels), from_file.extract(pixels), rtol=1e-6)


@pytest.fixture
def without_packaged_weights(monkeypatch) -> None:
    """As for a width xferbench ships no weights of: the next place looked is Keras's own download."""
    from xferbench_keras import applications

    monkeypatch.setattr(applications, "packaged_weights", lambda application, alpha: None)


@pytest.fixture
def keras_home(tmp_path, monkeypatch) -> Path:
    """An empty Keras cache, so imports never touch ~/.keras."""
    from keras.src.backend import config

    home = tmp_path / "keras-home"
    home.mkdir()
    monkeypatch.setattr(config, "_KERAS_DIR", str(home))
    return home


@needs_weights
@pytest.mark.slow
def test_fetch_from_file_puts_the_weights_where_keras_looks(catalog, tmp_path, keras_home, monkeypatch,
                                                           without_packaged_weights) -> None:
    spec, arg = catalog.backbones.resolve("keras:MobileNet")
    options = spec.validate({"alpha": "0.25", "input_size": "128"})
    context = RunContext(catalog=catalog, cache_dir=tmp_path)
    path = spec.load_fetcher()(arg, options, context, MOBILENET_WEIGHTS)

    assert path == keras_home / "models" / "mobilenet_2_5_128_tf_no_top.h5"
    assert path.read_bytes() == MOBILENET_WEIGHTS.read_bytes()

    # A plain ImageNet run now loads the imported file, with no network at all.
    from keras.src.utils import file_utils

    def no_download(*args, **kwargs):
        raise AssertionError("Keras tried to download although the weights are in its cache")

    monkeypatch.setattr(file_utils, "urlretrieve", no_download)
    imagenet = spec.load_factory()(arg, options, context)
    assert imagenet.weights_sha256 == hashlib.sha256(MOBILENET_WEIGHTS.read_bytes()).hexdigest()
    assert imagenet.info()["weights_cache_file"] == str(path)
    pixels = [random_pixels(40, 60, seed=9)]
    np.testing.assert_allclose(imagenet.extract(pixels), mobilenet(catalog, tmp_path).extract(pixels), rtol=1e-6)


@needs_weights
def test_fetch_refuses_a_file_that_does_not_fit_and_leaves_no_copy(catalog, tmp_path, keras_home) -> None:
    spec, arg = catalog.backbones.resolve("keras:MobileNet")
    options = spec.validate({"alpha": "0.5", "input_size": "128"})
    with pytest.raises(UserError, match="does not fit keras:MobileNet \\(alpha=0.5.*check alpha") as info:
        spec.load_fetcher()(arg, options, RunContext(catalog=catalog, cache_dir=tmp_path), MOBILENET_WEIGHTS)
    assert "\n" not in str(info.value)
    assert not list(keras_home.rglob("*.h5"))


def test_fetch_refuses_a_file_with_the_wrong_checksum(catalog, tmp_path, keras_home) -> None:
    # MobileNetV3's weights are pinned by a checksum in Keras; any other file is refused up front.
    bogus = tmp_path / "weights.h5"
    bogus.write_bytes(b"not the weights")
    spec, arg = catalog.backbones.resolve("keras:MobileNetV3Small")
    options = spec.validate({})
    with pytest.raises(UserError, match="is not Keras's ImageNet file .* use it with --weights FILE"):
        spec.load_fetcher()(arg, options, RunContext(catalog=catalog, cache_dir=tmp_path), bogus)
    assert not list(keras_home.rglob("*.h5"))


# -- decoding -----------------------------------------------------------------------------

def test_every_image_form_decodes_to_the_same_pixels() -> None:
    rgb = random_pixels(37, 53, seed=1)
    gray = rgb[:, :, 0]
    rgba = np.dstack([rgb, np.full(gray.shape, 200, np.uint8)])
    gif = encode(rgb, "GIF")
    gif_rgb = np.asarray(Image.open(io.BytesIO(gif)).convert("RGB"))
    inputs = [rgb, encode(rgb, "PNG"), encode(rgb, "BMP"), rgba, encode(rgba, "PNG"),  # same colours
              gray, gray[:, :, None], encode(gray, "PNG"), np.dstack([gray] * 3),  # same grey image
              gif, gif_rgb]  # palette image
    rows = {}
    for indices, pixels in resized_batches(inputs, 24, batch_size=4):
        for index, image in zip(indices, pixels, strict=True):
            rows[int(index)] = image
    assert sorted(rows) == list(range(len(inputs)))
    for group in ((0, 1, 2, 3, 4), (5, 6, 7, 8), (9, 10)):
        for index in group[1:]:
            np.testing.assert_array_equal(rows[index], rows[group[0]], err_msg=f"input {index}")
    expected = tf.image.resize(rgb[None], (24, 24), method="bilinear", antialias=False).numpy()[0]
    np.testing.assert_allclose(rows[0], expected, rtol=0, atol=1e-4)
    assert not np.array_equal(rows[0], rows[5])


def test_undecodable_inputs_are_left_out_in_order() -> None:
    good = random_pixels(20, 20, seed=2)
    inputs = [b"garbage", good, b"", encode(good, "PNG")[:30], np.zeros((5, 5, 2), np.uint8),
              good.astype(np.float32), encode(good, "PNG")]
    indices = np.concatenate([i for i, _ in resized_batches(inputs, 16, batch_size=2)])
    assert indices.tolist() == [1, 6]


@needs_weights
def test_extract_gives_nan_rows_only_for_bad_images(catalog, tmp_path) -> None:
    backbone = mobilenet(catalog, tmp_path, batch_size="3")
    good = [random_pixels(60 + i, 80, seed=i) for i in range(4)]
    features = backbone.extract([good[0], b"not a jpeg", good[1], good[2], np.zeros((3, 3, 7), np.uint8), good[3]])

    assert features.shape == (6, 256) and features.dtype == np.float32
    assert np.isnan(features[[1, 4]]).all()
    np.testing.assert_allclose(features[[0, 2, 3, 5]], backbone.extract(good), rtol=1e-5, atol=1e-6)
    assert np.isfinite(features[[0, 2, 3, 5]]).all()


# -- cache identity and precision ------------------------------------------------------------

@needs_weights
def test_cache_namespace_separates_settings_that_change_features(catalog, tmp_path) -> None:
    namespaces = {mobilenet(catalog, tmp_path).cache_namespace(),
                  mobilenet(catalog, tmp_path, input_size="160").cache_namespace(),
                  mobilenet(catalog, tmp_path, precision="bfloat16").cache_namespace()}
    assert len(namespaces) == 3
    assert mobilenet(catalog, tmp_path).cache_namespace() == mobilenet(catalog, tmp_path, batch_size="7").cache_namespace()
    assert all(hashlib.sha256(MOBILENET_WEIGHTS.read_bytes()).hexdigest() in ns for ns in namespaces)


@pytest.mark.slow
@needs_weights
def test_bfloat16_features_track_float32_ones(catalog, tmp_path) -> None:
    pixels = [random_pixels(100, 100, seed=s) for s in range(4)]
    full = mobilenet(catalog, tmp_path).extract(pixels)
    half_backbone = mobilenet(catalog, tmp_path, precision="bfloat16")
    half = half_backbone.extract(pixels)

    assert half_backbone.precision() == "bfloat16" and half.dtype == np.float32
    assert not np.array_equal(full, half)  # it really computed in bfloat16
    assert np.corrcoef(full.ravel(), half.ravel())[0, 1] > 0.98
    assert keras.config.dtype_policy().name == "float32"  # the global policy was restored


# -- full retraining and fine-tuning ----------------------------------------------------------

@needs_weights
def test_model_inputs_are_preprocessed_resized_images(catalog, tmp_path) -> None:
    backbone = mobilenet(catalog, tmp_path)
    pixels = random_pixels(50, 90, seed=3)
    inputs = backbone.model_inputs([encode(pixels, "PNG"), b"bad"])

    assert inputs.shape == (2, 128, 128, 3) and inputs.dtype == np.float32
    resized = tf.image.resize(pixels[None], (128, 128), method="bilinear", antialias=False).numpy()
    np.testing.assert_allclose(inputs[0], keras.applications.mobilenet.preprocess_input(resized)[0], atol=1e-6)
    assert inputs[0].min() >= -1.0 and inputs[0].max() <= 1.0
    assert np.isnan(inputs[1]).all()
    assert backbone.supports("full") and backbone.supports("finetune") and not backbone.supports("other")


@pytest.mark.slow
@needs_weights
def test_build_model_pretrained_and_from_scratch(catalog, tmp_path) -> None:
    backbone = mobilenet(catalog, tmp_path)
    pixels = [random_pixels(64, 64, seed=s) for s in range(4)]
    inputs = backbone.model_inputs(pixels)
    labels = np.array([0, 1, 2, 0])

    finetune = backbone.build_model(3, pretrained=True, seed=0)
    assert finetune.output_shape == (None, 3)
    np.testing.assert_allclose(finetune(inputs).numpy().sum(axis=1), 1.0, rtol=1e-5)
    assert all(layer.trainable for layer in finetune.layers)
    # The pretrained base is the feature extractor: same weights, same pooled features.
    base = finetune.layers[1]
    np.testing.assert_allclose(base(inputs).numpy(), backbone.extract(pixels), rtol=1e-4, atol=1e-5)

    def first_kernel(model) -> np.ndarray:
        return next(w for w in model.layers[1].weights if w.path.endswith("conv1/kernel")).numpy()

    pretrained_kernel = first_kernel(finetune)
    scratch_a = backbone.build_model(3, pretrained=False, seed=1)
    scratch_b = backbone.build_model(3, pretrained=False, seed=1)
    assert not np.allclose(pretrained_kernel, first_kernel(scratch_a))
    for wa, wb in zip(scratch_a.weights, scratch_b.weights, strict=True):
        np.testing.assert_array_equal(wa.numpy(), wb.numpy())  # seeded

    # Fine-tuning reaches the unfrozen base: its first kernel is trained and gets a gradient.
    # (A compiled train step would take ~10 s to trace on a busy CPU; the eager tape is enough.)
    with tf.GradientTape() as tape:
        loss = keras.losses.sparse_categorical_crossentropy(labels, finetune(inputs, training=True))
    variables = finetune.trainable_variables
    grads = dict(zip([v.path for v in variables], tape.gradient(loss, variables), strict=True))
    kernel_path = next(p for p in grads if p.endswith("conv1/kernel"))
    assert np.abs(grads[kernel_path].numpy()).max() > 0


# -- real data --------------------------------------------------------------------------------

def _is_test_file(name: str) -> bool:
    """retrain.py's rule: hash the file name without its ``_nohash_`` part; ~25% are test."""
    stem = re.sub(r"_nohash_.*$", "", name)
    return int(hashlib.sha1(stem.encode()).hexdigest(), 16) % 100 < 25


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.skipif(not (MOBILENET_WEIGHTS.is_file() and FLOWERS.is_dir()), reason="no shared data")
def test_real_flowers_with_real_imagenet_mobilenet(catalog, tmp_path) -> None:
    from sklearn.linear_model import LogisticRegression

    classes = sorted(p.name for p in FLOWERS.iterdir() if p.is_dir())
    files = [(path, label) for label, name in enumerate(classes) for path in sorted((FLOWERS / name).glob("*.jpg"))]
    assert len(files) == 500 and len(classes) == 5
    images = [path.read_bytes() for path, _ in files]
    labels = np.array([label for _, label in files])
    is_test = np.array([_is_test_file(path.name) for path, _ in files])

    # 128 px (one of the sizes these weights were trained at) keeps the test fast on 2 busy cores.
    backbone = mobilenet(catalog, tmp_path, input_size="128", batch_size="50")
    started = time.perf_counter()
    features = backbone.extract(images)
    seconds = time.perf_counter() - started
    assert features.shape == (500, 256) and np.isfinite(features).all()

    head = LogisticRegression(max_iter=2000).fit(features[~is_test], labels[~is_test])
    accuracy = float((head.predict(features[is_test]) == labels[is_test]).mean())
    print(f"\nkeras:MobileNet alpha=0.25 128px: {len(images)} flowers in {seconds:.1f}s, "
          f"logistic regression test accuracy {accuracy:.3f} on {is_test.sum()} images")
    assert accuracy > 0.6  # chance is 0.2

    model = keras.applications.MobileNet(include_top=False, weights=str(MOBILENET_WEIGHTS), alpha=0.25,
                                         pooling="avg", input_shape=(128, 128, 3))
    for index in (0, 137, 499):
        pixels = tf.io.decode_jpeg(images[index], channels=3).numpy()
        np.testing.assert_allclose(features[index], direct_features(model, 128, pixels)[0], atol=1e-4, rtol=0)


# -- export ---------------------------------------------------------------------------------

@pytest.mark.slow
@needs_weights
def test_tf_features_match_extract_and_survive_saving(catalog, tmp_path) -> None:
    backbone = mobilenet(catalog, tmp_path)
    backbone.prepare(RunContext(catalog=catalog, cache_dir=tmp_path))
    pixels = [random_pixels(70, 50, seed=s) for s in range(3)]
    files = [encode(pixels[0], "PNG"), encode(pixels[1], "JPEG"), encode(pixels[2][:, :, 0], "GIF")]
    expected = backbone.extract(files)

    assert_tf_features_round_trip(backbone, files, expected, tmp_path, rtol=1e-4)
