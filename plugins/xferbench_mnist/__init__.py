"""Built-in xferbench plugin: the MNIST handwritten digits (``mnist``, ``mnist:5-9`` for a class subset).

Nothing heavy is imported here, so ``xferbench list`` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable

from xferbench import DatasetSpec, Option, hookimpl


@hookimpl
def xferbench_register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    register(DatasetSpec(
        "mnist", "MNIST handwritten digits, 28x28 grayscale: 60000 train (val carved out), 10000 test",
        factory="xferbench_mnist.mnist:create", fetcher="xferbench_mnist.mnist:fetch",
        options=(
            Option("val_size", int, 5000, "training images held out for validation", min=0),
            Option("split_seed", int, 0, "seed of the validation carve-out (not the run seed, so it stays put)"),
            Option("mirror", str, None, "extra URL prefix for the four .gz files, tried before the built-in mirrors"),
        ),
    ))
