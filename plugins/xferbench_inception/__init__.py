"""Built-in xferbench plugin: Google's Inception-v3 graph of December 2015 (``inception_2015``).

The graph is the one retrain.py used: ``inception_dec_2015.zip`` (default) or
``inception-2015-12-05.tgz``, or a bare .pb via ``--weights``. It is rewritten on load so that it
runs batched in TF2 (see :mod:`xferbench_inception.graph`). Nothing here imports TensorFlow.
"""

from collections.abc import Callable

from xferbench import BackboneSpec, Option, hookimpl

OPTIONS = (
    Option("precision", str, "float32", "compute precision of the network; features are always float32 "
           "(int8: a full-integer TFLite model in LiteRT, calibrated on training images)",
           choices=("float32", "bfloat16", "int8")),
    Option("int8_calibration_images", int, 100, "precision=int8: training images that calibrate the int8 model",
           min=1),
    Option("batch_size", int, 0, "images per forward pass; 0: 8 on a CPU (larger batches only thrash "
           "its caches), 64 on a GPU", min=0, max=4096),
    Option("archive", str, "zip", "which published archive to download: inception_dec_2015.zip or "
           "inception-2015-12-05.tgz", choices=("zip", "tgz")),
    Option("sha256", str, None, "expected sha256 of the archive or .pb (download, import or --weights)"),
    Option("xla", bool, False, "compile the network with XLA (jit_compile)"),
    Option("prefetch", str, "auto", "decode the next batch while the network runs on this one; auto: only "
           "on a GPU (on a CPU the decoder would compete with the network for the cores)",
           choices=("auto", "yes", "no")),
)


@hookimpl
def xferbench_register_backbones(register: Callable[[BackboneSpec], None]) -> None:
    register(BackboneSpec(
        "inception_2015",
        "Inception-v3 ImageNet graph of Dec 2015 (retrain.py's), pool_3 bottleneck, 2048 features",
        factory="xferbench_inception.backbone:create",
        options=OPTIONS,
        fetcher="xferbench_inception.fetching:fetch",
    ))
