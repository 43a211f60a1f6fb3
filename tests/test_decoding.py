"""``xferbench.decoding.BatchDecoder``: the batched image decoding that backbones share."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from xferbench.decoding import BatchDecoder, to_rgb

tf = pytest.importorskip("tensorflow")


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def _resize(rgb):
    return tf.image.resize(tf.cast(rgb, tf.float32), (4, 4), method="bilinear", antialias=False)


def _decoder(prefetch: bool) -> BatchDecoder:
    return BatchDecoder(lambda data: _resize(tf.io.decode_image(data, channels=3, expand_animations=False)),
                        _resize, (4, 4, 3), prefetch=prefetch)


def _inputs() -> tuple[list[object], dict[int, np.ndarray]]:
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 256, (9, 7, 3), np.uint8), rng.integers(0, 256, (5, 5, 3), np.uint8)
    gray, rgba = rng.integers(0, 256, (6, 8), np.uint8), rng.integers(0, 256, (5, 5, 4), np.uint8)
    images = [_png(a), b"not an image", b, _png(b)[:40], gray, rgba, "a str is not image data", bytearray(_png(a)),
              np.zeros((5, 5, 3), np.float32), b]
    rgb = {0: a, 2: b, 4: np.dstack([gray] * 3), 5: rgba[:, :, :3], 7: a, 9: b}
    return images, rgb


@pytest.mark.parametrize("prefetch", [False, True])
def test_batches_keep_input_order_and_leave_out_only_bad_images(prefetch: bool) -> None:
    images, rgb = _inputs()
    batches = list(_decoder(prefetch).batches(images, 3))
    # Batches of 3 inputs; within each, indices ascend even though files and arrays are decoded apart.
    assert [idx.tolist() for idx, _ in batches] == [[0, 2], [4, 5], [7], [9]]
    for indices, pixels in batches:
        assert pixels.shape == (len(indices), 4, 4, 3) and pixels.dtype == tf.float32
        for index, got in zip(indices, pixels.numpy(), strict=True):
            np.testing.assert_allclose(got, _resize(rgb[int(index)]).numpy(), rtol=0, atol=1e-4)


def test_nothing_decodable_yields_nothing() -> None:
    decoder = _decoder(prefetch=True)
    assert list(decoder.batches([], 4)) == []
    assert list(decoder.batches([b"", b"junk", np.zeros((3, 3, 2), np.uint8)], 2)) == []


def test_to_rgb_accepts_only_uint8_images() -> None:
    gray = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert to_rgb(gray).shape == (2, 3, 3) and (to_rgb(gray)[:, :, 2] == gray).all()
    assert to_rgb(np.zeros((2, 3, 4), np.uint8)).shape == (2, 3, 3)
    for bad in (np.zeros((2, 3), np.float32), np.zeros((0, 3), np.uint8), np.zeros((2, 3, 2), np.uint8), b"x"):
        assert to_rgb(bad) is None


@pytest.mark.parametrize("shape", [(9, 7), (5, 12), (6, 6), (1, 40)])
def test_crop_to_aspect_ratio_is_keras_resizings_centre_crop(shape: tuple[int, int]) -> None:
    """The crop KerasHub's image converters make (keras.layers.Resizing(crop_to_aspect_ratio=True)), bit for bit,
    in TensorFlow, and the same box in Pillow; the digest of settings without it is as before the field existed."""
    import keras

    from xferbench.decoding import Preprocessing, decoder_for

    rgb = np.random.default_rng(1).integers(0, 256, (*shape, 3), np.uint8)
    for size in ((4, 4), (3, 5)):
        cropped = Preprocessing(size=size, crop_to_aspect_ratio=True)
        want = keras.layers.Resizing(*size, crop_to_aspect_ratio=True)(rgb.astype(np.float32)[None])[0]
        (_, got), = decoder_for(cropped).batches([_png(rgb)], 4)
        np.testing.assert_array_equal(np.asarray(got)[0], np.asarray(want))
        top, left, height, width = cropped.crop_box(*shape)
        box = rgb[top:top + height, left:left + width]
        nearest = Preprocessing(size=(height, width), crop_to_aspect_ratio=True, resize="nearest", library="pillow")
        (_, pillow), = decoder_for(nearest).batches([rgb], 1)
        np.testing.assert_array_equal(pillow[0], box.astype(np.float32))
    assert "crop_to_aspect_ratio" not in Preprocessing(size=(4, 4)).describe()
    assert Preprocessing(size=(4, 4)).digest() != Preprocessing(size=(4, 4), crop_to_aspect_ratio=True).digest()
