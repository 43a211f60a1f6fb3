"""Backbone ``pixels`` through the public API: the catalog's factory and the Backbone contract."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from xferbench.backbone import Backbone
from xferbench.context import RunContext
from xferbench.errors import UserError


def make_pixels(context: RunContext, arg: str | None = None, **options: str) -> Backbone:
    spec, _ = context.catalog.backbones.resolve("pixels")
    backbone = spec.load_factory()(arg, spec.validate(options), context)
    assert isinstance(backbone, Backbone)
    return backbone


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_features_are_the_resized_grayscale_image_in_0_1(context: RunContext) -> None:
    backbone = make_pixels(context, size="4")
    assert backbone.name == "pixels"
    assert backbone.feature_dim == 16
    top_white = np.zeros((32, 32), dtype=np.uint8)
    top_white[:16] = 255
    features = backbone.extract([top_white])
    assert features.shape == (1, 16)
    assert features.dtype == np.float32
    grid = features[0].reshape(4, 4)
    np.testing.assert_array_equal(grid[0], 1.0)  # rows 0-7 average only white input rows
    np.testing.assert_array_equal(grid[3], 0.0)
    assert grid[1, 0] > grid[2, 0]
    assert np.ptp(grid, axis=1).max() == 0  # nothing varies along a row


def test_encoded_files_and_decoded_pixels_give_the_same_features(context: RunContext) -> None:
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (20, 24), dtype=np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    rgba = np.concatenate([rgb, np.full((20, 24, 1), 255, dtype=np.uint8)], axis=2)
    backbone = make_pixels(context, size="8")
    features = backbone.extract([gray, gray[..., None], rgb, rgba, png_bytes(gray), png_bytes(rgb)])
    assert not np.isnan(features).any()
    for row in features[1:]:
        np.testing.assert_allclose(row, features[0], atol=1 / 255)


def test_color_is_converted_with_the_luma_weights(context: RunContext) -> None:
    red = np.zeros((16, 16, 3), dtype=np.uint8)
    red[..., 0] = 255
    features = make_pixels(context).extract([red])
    np.testing.assert_allclose(features, 76 / 255)  # ITU-R 601: L = 0.299 R + 0.587 G + 0.114 B


@pytest.mark.parametrize("bad", [
    b"",
    b"not an image at all",
    png_bytes(np.zeros((8, 8), dtype=np.uint8))[:40],  # truncated PNG
    np.zeros((8, 8), dtype=np.float64),  # not uint8 pixels
    np.zeros((8, 8, 2), dtype=np.uint8),  # no such channel layout
    np.zeros((0, 8), dtype=np.uint8),
])
def test_an_undecodable_image_gives_a_nan_row_and_spares_the_others(context: RunContext, bad: object) -> None:
    good = np.full((8, 8), 128, dtype=np.uint8)
    features = make_pixels(context, size="8").extract([good, bad, good])
    assert np.isnan(features[1]).all()
    assert not np.isnan(features[[0, 2]]).any()


def test_an_empty_batch(context: RunContext) -> None:
    assert make_pixels(context, size="5").extract([]).shape == (0, 25)


def test_weights_digest_is_a_fixed_digest_of_the_configuration(context: RunContext) -> None:
    default = make_pixels(context)
    assert default.weights_sha256 == hashlib.sha256(b"pixels-v1-size=16").hexdigest()
    assert make_pixels(context).weights_sha256 == default.weights_sha256
    smaller = make_pixels(context, size="8")
    assert smaller.weights_sha256 != default.weights_sha256
    # Different sizes must never share bottleneck cache entries.
    assert smaller.cache_namespace() != default.cache_namespace()


def test_takes_no_argument(context: RunContext) -> None:
    with pytest.raises(UserError, match="takes no argument"):
        make_pixels(context, arg="32")


def test_cannot_be_trained_end_to_end(context: RunContext) -> None:
    backbone = make_pixels(context)
    assert not backbone.supports("full")
    assert not backbone.supports("finetune")
