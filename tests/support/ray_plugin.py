"""A plugin for the Ray executor tests: a numpy backbone that can hold its work at a known point, and methods
that fail in the two ways a run can fail (a plugin error, a worker that dies).

Ray workers import it by module name (``support.ray_plugin``), with ``tests/`` on their PYTHONPATH.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from xferbench import BackboneSpec, Method, MethodContext, MethodSpec, Option, RunRecord, hookimpl
from xferbench.backbone import Backbone


class BlockMeans(Backbone):
    """Means of 2x2 blocks of an 8x8 digit, plus their square (so rows are not all alike): no TensorFlow.

    With ``hold_dir``, the process's ``hold_at_call``-th ``extract`` call writes ``held-<pid>`` (holding its
    node id) into that folder and waits until a file ``release`` appears there: a test can then kill the
    process, or remove its node, while it is in the middle of a shard.
    """

    feature_dim = 32
    extract_batch_size = 32

    def __init__(self, arg, options, context) -> None:
        self.name = "block_means"
        self.options = options
        self.calls = 0

    @property
    def weights_sha256(self) -> str:
        return "2" * 64

    def extract(self, images):
        self.calls += 1
        hold = self.options.get("hold_dir")
        if hold and self.calls == self.options["hold_at_call"]:
            _hold(Path(hold))
        means = np.stack([np.asarray(img, np.float32).reshape(4, 2, 4, 2).mean(axis=(1, 3)).ravel() / 16
                          for img in images])
        return np.concatenate([means, means ** 2], axis=1)


def _hold(folder: Path) -> None:
    import time

    import ray

    release = folder / "release"
    if release.exists():
        return
    marker = folder / f"held-{os.getpid()}"
    marker.write_text(ray.get_runtime_context().get_node_id())
    while not release.exists():  # the test kills this process, or releases it
        time.sleep(0.05)


class Exploding(Method):
    """A plugin error: recorded in its row, never retried."""

    def run(self, context: MethodContext) -> RunRecord:
        _count(self.options["count_file"])
        raise ZeroDivisionError("the method divided by zero")


class Dying(Method):
    """Its worker process dies at every attempt: Ray retries it, then the run is recorded as failed."""

    def run(self, context: MethodContext) -> RunRecord:
        _count(self.options["count_file"])
        os._exit(3)


def _count(path: str) -> None:
    if path:
        with open(path, "a") as fh:
            fh.write(f"{os.getpid()}\n")


@hookimpl
def xferbench_register_backbones(register):
    register(BackboneSpec("block_means", "2x2 block means and their squares (numpy)", factory=BlockMeans,
                          options=(Option("hold_dir", str, "", "hold the work here (tests)"),
                                   Option("hold_at_call", int, 2, "which extract call holds", min=1))))


@hookimpl
def xferbench_register_methods(register):
    count = (Option("count_file", str, "", "append a line per attempt"),)
    register(MethodSpec("exploding", "raises", factory=Exploding, options=count))
    register(MethodSpec("dying", "kills its worker", factory=Dying, options=count))
