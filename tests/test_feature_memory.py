"""Large feature matrices stay on disk: extraction writes them to an unlinked scratch file, heads read them there."""

from __future__ import annotations

import numpy as np
import pytest

from test_bottleneck_cache import CountingBackbone, make_dataset, run
from xferbench import extraction as extraction_module
from xferbench.errors import UserError
from xferbench_heads import _dense
from xferbench_heads.logreg import LogRegHead
from xferbench_heads.softmax import SoftmaxHead


def test_large_features_are_memory_mapped_from_an_unlinked_file_and_equal(tmp_path, monkeypatch):
    dataset = make_dataset(30, bad=2)
    in_memory = run(CountingBackbone(), dataset, tmp_path / "a")
    monkeypatch.setattr(extraction_module, "IN_MEMORY_FEATURES_BYTES", 0)
    mapped = run(CountingBackbone(), dataset, tmp_path / "b")
    assert isinstance(mapped.features, np.memmap) and not isinstance(in_memory.features, np.memmap)
    np.testing.assert_array_equal(mapped.features, in_memory.features)  # NaN rows of the bad images included
    assert mapped.failed == in_memory.failed
    assert [p for p in (tmp_path / "tmp").iterdir()] == []  # unlinked from the start: nothing to clean up
    warm = run(CountingBackbone(), dataset, tmp_path / "b")  # from the cache, into the file
    assert warm.cache_hits == 28
    np.testing.assert_array_equal(warm.features, in_memory.features)


def _separable(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    centres = np.random.default_rng(99).standard_normal((3, dim)) * 3  # the same classes in every split
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    return (centres[y] + rng.standard_normal((n, dim))).astype(np.float32), y


def _on_disk(tmp_path, x: np.ndarray) -> np.memmap:
    path = tmp_path / "features.f32"
    x.tofile(path)
    return np.memmap(path, dtype=np.float32, mode="r", shape=x.shape)


def test_softmax_trains_on_a_memory_map_batch_by_batch_with_the_same_result(tmp_path, monkeypatch):
    x, y = _separable(400, 16)
    xv, yv = _separable(60, 16, seed=1)
    options = {"steps": 200}
    in_memory = SoftmaxHead(options)
    in_memory.fit(x, y, xv, yv, num_classes=3, seed=3)
    monkeypatch.setattr(_dense, "IN_MEMORY_TRAINING_BYTES", 0)
    seen = []
    original = _dense.OutOfCoreRows.__getitem__
    monkeypatch.setattr(_dense.OutOfCoreRows, "__getitem__", lambda self, key: seen.append(key) or original(self, key))
    mapped = SoftmaxHead(options)
    mapped.fit(_on_disk(tmp_path, x), y, xv, yv, num_classes=3, seed=3)
    assert len(seen) >= 200 and all(len(np.atleast_1d(key)) <= 100 for key in seen[-200:])  # batches, no copy
    np.testing.assert_array_equal(mapped.layers[0].kernel, in_memory.layers[0].kernel)


def test_logreg_trains_out_of_core_by_sgd_over_chunks(tmp_path, monkeypatch):
    x, y = _separable(3000, 12)
    xv, yv = _separable(300, 12, seed=1)
    monkeypatch.setattr(_dense, "IN_MEMORY_TRAINING_BYTES", 0)
    monkeypatch.setattr(_dense, "ROW_CHUNK", 512)
    monkeypatch.setattr("xferbench_heads.logreg.ROW_CHUNK", 512)
    head = LogRegHead({"grid": "0.1,10"})
    head.fit(_on_disk(tmp_path, x), y, xv, yv, num_classes=3, seed=0)
    assert head.info()["solver"].startswith("sgd log loss, out of core")
    xt, yt = _separable(300, 12, seed=2)
    assert (head.predict(xt) == yt).mean() > 0.95
    with pytest.raises(UserError, match="refit=train[+]val is not available for features larger than memory"):
        LogRegHead({"grid": "1", "refit": "train+val"}).fit(_on_disk(tmp_path, x), y, xv, yv, num_classes=3, seed=0)
