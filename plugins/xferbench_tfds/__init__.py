"""Built-in xferbench plugin: TensorFlow Datasets (``tfds:NAME[/CONFIG][:SUBSET]``).

Reads datasets that TFDS prepared (``xferbench fetch tfds:NAME`` or TFDS itself), also ones whose
builder is not installed. Nothing heavy is imported here, so ``xferbench list`` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable

from xferbench import DatasetSpec, Option, hookimpl

TFDS_OPTIONS = (
    Option("image_key", str, None, "the image feature (default: 'image', else the only Image feature)"),
    Option("label_key", str, None, "the label feature (default: 'label', else the only ClassLabel feature)"),
    Option("split_train", str, "train", "TFDS split string of the training images, e.g. train[:800]"),
    Option("split_val", str, None, "TFDS split string of the validation images (default: 'validation' if the "
                                   "dataset has it, else a seeded stratified carve-out of val_pct of split_train)"),
    Option("split_test", str, "test", "TFDS split string of the test images"),
    Option("train_examples", int, 0, "keep only the first N images of split_train (0: all)", min=0),
    Option("val_examples", int, 0, "keep only the first N images of the validation split (0: all)", min=0),
    Option("val_pct", float, 10.0, "percent of each class of split_train carved out for validation when the "
                                   "dataset has no validation split", min=0, lt=100),
    Option("split_seed", int, 0, "seed of that carve-out (not the run seed, so it stays put)"),
    Option("label_transform", str, None, "derive the label from the example's features: a built-in name "
                                         "(see docs/suites.md) or module:attr of a LabelTransform"),
    Option("module", str, None, "import this module first: it defines the TFDS builder of a dataset that is not "
                                "in TFDS's catalog (e.g. my_datasets.flowers; its folder on PYTHONPATH)"),
    Option("manual_dir", str, None, "xferbench fetch: the folder holding files you downloaded by hand "
                                    "(default: DATA_DIR/downloads/manual)"),
    Option("retries", int, 3, "xferbench fetch: retries of a failed connection (TFDS's own default is 10, "
                              "minutes of waiting when offline)", min=0),
)


@hookimpl
def xferbench_register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    register(DatasetSpec(
        "tfds", "a TensorFlow Datasets dataset prepared in --data-dir, $TFDS_DATA_DIR or ~/tensorflow_datasets "
                "(tfds:NAME, tfds:NAME/CONFIG, tfds:NAME:CLASSES); needs the tfds extra",
        factory="xferbench_tfds.reader:create", fetcher="xferbench_tfds.reader:fetch", options=TFDS_OPTIONS,
        parametric=True,
    ))
