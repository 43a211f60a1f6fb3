"""Built-in dataset ``digits``: scikit-learn's 1797 handwritten 8x8 digits (ships with a dependency)."""

from xferbench import DatasetSpec, Option, hookimpl


@hookimpl
def xferbench_register_datasets(register):
    register(DatasetSpec(
        "digits",
        "scikit-learn's handwritten digits: 1797 8x8 grayscale images, 10 classes, no download",
        factory="xferbench_digits.dataset:load_digits_dataset",
        options=(
            Option("test_pct", float, 10.0, "percent of images in the test split", min=0, max=100),
            Option("val_pct", float, 10.0, "percent of images in the validation split", min=0, max=100),
        ),
    ))
