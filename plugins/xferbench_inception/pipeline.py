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

from xferbench.decoding import JpegDecoding, Preprocessing
from xferbench_inception.graph import Interface


def preprocessing(interface: Interface) -> Preprocessing:
    """The graph's decoding (DecodeJpeg's attributes) and resizing (ResizeBilinear's), as data."""
    attrs = {key: value for key, value in interface.decode_attrs.items() if key != "channels"}  # always 3
    return Preprocessing(size=interface.size, resize="bilinear", align_corners=interface.align_corners,
                         half_pixel_centers=interface.half_pixel_centers, jpeg=JpegDecoding(**attrs))
