"""Images -> the float tensor the 2015 graph's ``Sub`` node receives, a batch at a time.

The graph does ``DecodeJpeg -> Cast(float) -> ExpandDims -> ResizeBilinear`` on one image.
Here each image goes through the same kernels with the same attributes (read from the graph),
a batch at a time, so a batch of results is bit-identical to what the graph computes image by
image; ``Sub``/``Mul`` then run inside the rewritten graph itself.

What the original graph does with other inputs, and what happens here:

* JPEG in any colour space (RGB, grayscale, CMYK/YCCK): the graph's DecodeJpeg with
  ``channels=3`` converts to RGB; here the same op with the same attributes does the same.
* PNG, GIF, BMP: in 2015 DecodeJpeg accepted JPEG only. Current TF lets DecodeJpeg decode
  PNG and GIF (first frame) and rejects BMP. Here all three are decoded to RGB with
  ``tf.io.decode_image(channels=3)`` (grayscale replicated, alpha dropped, first GIF frame),
  then cast/resized/normalised exactly like a JPEG: the reference for them is the graph fed
  the decoded RGB pixels in place of ``DecodeJpeg:0``.
* uint8 arrays (HxW, HxWx1, HxWx3, HxWx4): converted to HxWx3 the same way, then as above.
* Anything that cannot be decoded (corrupt or truncated files, other formats, arrays of other
  dtypes or shapes) yields no row: :meth:`BatchDecoder.batches` leaves its index out, and the caller fills
  NaN.
"""

from __future__ import annotations

from typing import Any

from xferbench.decoding import BatchDecoder
from xferbench_inception.graph import Interface


def _resize(pixels: Any, interface: Interface) -> Any:
    """Cast -> ExpandDims -> ResizeBilinear, with the graph's size and sampling attributes."""
    import tensorflow as tf

    height, width = interface.size
    x = tf.expand_dims(tf.cast(pixels, tf.float32), 0)
    x = tf.raw_ops.ResizeBilinear(images=x, size=tf.constant([height, width], tf.int32),
                                  align_corners=interface.align_corners,
                                  half_pixel_centers=interface.half_pixel_centers)
    return tf.reshape(x, [height, width, 3])


def _decode(contents: Any, interface: Interface) -> Any:
    import tensorflow as tf

    attrs = interface.decode_attrs

    def jpeg() -> Any:
        return tf.io.decode_jpeg(contents, channels=attrs["channels"], ratio=attrs["ratio"],
                                 fancy_upscaling=attrs["fancy_upscaling"],
                                 try_recover_truncated=attrs["try_recover_truncated"],
                                 acceptable_fraction=attrs["acceptable_fraction"], dct_method=attrs["dct_method"])

    def other() -> Any:
        return tf.io.decode_image(contents, channels=3, expand_animations=False)

    return tf.cond(tf.io.is_jpeg(contents), jpeg, other)


def decoder(interface: Interface, *, prefetch: bool = False) -> BatchDecoder:
    """Batches of resized float images ``[n, H, W, 3]`` (0..255) from files or uint8 arrays."""
    height, width = interface.size
    return BatchDecoder(lambda contents: _resize(_decode(contents, interface), interface),
                        lambda pixels: _resize(pixels, interface), (height, width, 3), prefetch=prefetch)
