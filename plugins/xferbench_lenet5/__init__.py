"""Built-in backbone ``lenet5``: a LeNet-5 style CNN, pretrained by xferbench itself."""

from xferbench import BackboneSpec, Option, hookimpl


@hookimpl
def xferbench_register_backbones(register):
    register(BackboneSpec(
        "lenet5",
        "LeNet-5 style CNN (28x28 grayscale, 84-wide bottleneck), pretrained on a source dataset",
        factory="xferbench_lenet5.backbone:LeNet5",
        options=(
            Option("pretrain_on", str, "digits:0-4", "source dataset (and class subset) to pretrain on"),
            Option("pretrain_epochs", int, 20, "epochs of pretraining", min=1),
            Option("learning_rate", float, 0.003, "Adam learning rate of pretraining", gt=0),
            Option("batch_size", int, 256, "images per extraction batch", min=1),
            Option("precision", str, "float32", "compute precision of extraction (bfloat16: mixed precision; int8: "
                   "a full-integer TFLite model in LiteRT, calibrated on training images)",
                   choices=("float32", "bfloat16", "int8")),
            Option("int8_calibration_images", int, 100,
                   "precision=int8: training images that calibrate the int8 model", min=1),
        ),
    ))
