"""``--augment``: retrain.py's four distortions as cached copies (transfer) and on the fly (full, finetune)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from support.cli import run_cli
from xferbench.augment import Augmentation, copy_digest, draw, draw_for_copy, parse_augment
from xferbench.errors import UserError


def test_the_flags_mean_retrain_py_percentages():
    settings = parse_augment("brightness=10, flip,crop=10,scale=20")
    assert settings == Augmentation(flip=True, crop=10, scale=20, brightness=10, copies=5)
    assert settings.spec == "flip,crop=10,scale=20,brightness=10"
    assert parse_augment("crop=5", 3).copies == 3
    assert parse_augment(None) is None
    for bad, fragment in (("rotate=5", "not one of"), ("crop=x", "not one of"), ("brightness=150", "0 to 100"),
                          ("crop=0", "distorts nothing")):
        with pytest.raises(UserError, match=fragment):
            parse_augment(bad)
    with pytest.raises(UserError, match="needs --augment"):
        parse_augment(None, 3)
    with pytest.raises(UserError, match="at least 1"):
        parse_augment("flip", 0)


def test_draws_stay_in_retrain_py_ranges_and_are_seeded_per_image_and_copy():
    settings = Augmentation(flip=True, crop=10, scale=20, brightness=30)
    rng = np.random.default_rng(0)
    draws = np.array([draw(settings, rng) for _ in range(2000)])
    window, top, left, flip, brightness = draws.T
    # retrain.py: precrop = input * (1 + crop/100) * U(1, 1 + scale/100); the window is input / precrop
    assert window.max() <= 1 / 1.1 + 1e-6 and window.min() >= 1 / (1.1 * 1.2) - 1e-6
    assert 0 <= top.min() and top.max() <= 1 and 0 <= left.min() and left.max() <= 1
    assert set(np.unique(flip)) == {0.0, 1.0} and 0.4 < flip.mean() < 0.6
    assert brightness.min() >= 0.7 - 1e-6 and brightness.max() <= 1.3 + 1e-6
    assert not Augmentation(crop=10).flip and set(draw(Augmentation(crop=10), rng)[[3, 4]]) == {0.0, 1.0}

    again = draw_for_copy(settings, 0, "abc", 2)
    np.testing.assert_array_equal(again, draw_for_copy(settings, 0, "abc", 2))
    assert not np.array_equal(again, draw_for_copy(settings, 0, "abc", 3))
    assert not np.array_equal(again, draw_for_copy(settings, 0, "abd", 2))
    assert not np.array_equal(again, draw_for_copy(settings, 1, "abc", 2))
    keys = {copy_digest("abc", s, seed, k) for s in (settings, Augmentation(crop=10)) for seed in (0, 1)
            for k in range(3)}
    assert len(keys) == 12 and "abc" not in keys


def test_the_window_and_flip_cut_the_decoded_pixels_exactly():
    tf = pytest.importorskip("tensorflow")
    from xferbench.augment import tf_window

    rgb = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    half = tf_window(tf.constant(rgb), tf.constant([0.5, 1.0, 0.0, 1.0, 1.0]))  # bottom-left half, mirrored
    np.testing.assert_array_equal(half.numpy(), rgb[2:4, 0:3][:, ::-1])
    whole = tf_window(tf.constant(rgb), tf.constant([1.0, 0.7, 0.3, 0.0, 1.0]))
    np.testing.assert_array_equal(whole.numpy(), rgb)


def test_on_the_fly_distortion_undoes_and_redoes_the_normalisation():
    tf = pytest.importorskip("tensorflow")
    from xferbench.augment import tf_distort_batch
    from xferbench.decoding import Preprocessing

    preprocessing = Preprocessing(size=(8, 8), scale=1 / 127.5, mean=(1.0,))
    pixels = np.random.default_rng(0).uniform(0, 255, (3, 8, 8, 3)).astype(np.float32)
    batch = tf.constant(preprocessing.normalise(pixels))
    identity = tf_distort_batch(batch, preprocessing, Augmentation(crop=0, scale=0, brightness=0),
                                tf.random.Generator.from_seed(0))
    np.testing.assert_allclose(identity.numpy(), batch.numpy(), atol=1e-5)
    brighter = tf_distort_batch(batch, preprocessing, Augmentation(brightness=50), tf.random.Generator.from_seed(1))
    factors = (brighter.numpy() + 1.0) / (batch.numpy() + 1.0)  # back in pixel space: one factor per image
    for factor in factors:
        assert 0.5 - 1e-4 <= factor.min() and factor.max() <= 1.5 + 1e-4 and np.ptp(factor) < 1e-3


def test_all_copies_of_an_image_in_one_call_match_copy_by_copy():
    pytest.importorskip("tensorflow")
    import io

    from PIL import Image

    from xferbench.augment import CopyPreprocessor
    from xferbench.decoding import Preprocessing

    preprocessing = Preprocessing(size=(16, 16), scale=1 / 127.5, mean=(1.0,))
    rgb = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    settings = Augmentation(flip=True, crop=10, scale=20, brightness=30)
    params = np.stack([draw_for_copy(settings, 0, "img", copy) for copy in range(4)])
    preprocessor = CopyPreprocessor(preprocessing)
    for image in (buffer.getvalue(), rgb):
        together = preprocessor.many(image, params)
        assert together.shape == (4, 16, 16, 3)
        np.testing.assert_array_equal(together, np.stack([preprocessor.one(image, row) for row in params]))
    assert preprocessor.many(b"not an image", params) is None


@pytest.mark.slow
def test_cached_copies_end_to_end_and_a_second_run_extracts_nothing(tmp_path):
    common = ["run", "--compare", "transfer", "--backbone-opt", "pretrain_epochs=2", "--augment",
              "flip,crop=10,scale=10,brightness=10", "--augment-copies", "2", "--cache-dir", str(tmp_path / "cache"),
              "--quiet"]
    plain = run_cli("run", "--compare", "transfer", "--backbone-opt", "pretrain_epochs=2", "--cache-dir",
                    str(tmp_path / "cache"), "--quiet", "--output", str(tmp_path / "plain.json"), cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    documents = []
    for name in ("first", "second"):
        result = run_cli(*common, "--output", str(tmp_path / f"{name}.json"), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        documents.append(json.loads((tmp_path / f"{name}.json").read_text()))
    (base,) = json.loads((tmp_path / "plain.json").read_text())["runs"]
    first, second = (document["runs"][0] for document in documents)
    assert documents[0]["options"]["augment"]["spec"] == "flip,crop=10,scale=10,brightness=10"
    assert base["augment"] is None
    # originals + 2 copies each; validation and test untouched
    assert first["n_train"] == 3 * base["n_train"] and first["n_val"] == base["n_val"]
    assert first["n_test"] == base["n_test"]
    assert first["augment"]["copies_total"] == 2 * base["n_train"] == first["augment"]["copies_extracted"]
    assert second["augment"]["copies_from_cache"] == 2 * base["n_train"]
    assert second["augment"]["copies_extracted"] == 0 and second["extracted"] == 0
    assert second["test_accuracy"] == first["test_accuracy"]  # the same copies, so the same head
    assert first["augment"]["applied"] == "cached copies"


@pytest.mark.slow
def test_full_training_distorts_on_the_fly(tmp_path):
    result = run_cli("run", "--compare", "full", "--backbone-opt", "pretrain_epochs=1", "--full-epochs", "1",
                     "--augment", "crop=10,brightness=10", "--cache-dir", str(tmp_path / "cache"), "--quiet",
                     "--output", str(tmp_path / "full.json"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run,) = json.loads(Path(tmp_path / "full.json").read_text())["runs"]
    assert run["status"] == "ok" and run["augment"]["applied"] == "on the fly"
    assert run["augment"]["crop"] == 10 and not run["augment"]["flip"]


def test_augment_errors_are_one_line(tmp_path):
    result = run_cli("run", "--augment", "rotate=5", "--output", str(tmp_path / "r.json"))
    assert result.returncode == 2 and "not one of flip" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
