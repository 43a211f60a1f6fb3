"""The bottleneck cache: content-addressed, resumable, safe to share, self-healing."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pytest

from xferbench.backbone import Backbone
from xferbench.bottleneck_cache import BottleneckCache, image_digest
from xferbench.data import Example, ImageDataset
from xferbench.extraction import extract_features
from xferbench.progress import Progress


class CountingBackbone(Backbone):
    """Features are a fixed function of the pixels; counts forward passes."""

    feature_dim = 6
    name = "counting"

    def __init__(self, version: str = "1", weights: str = "w1", fail_after_batches: int | None = None) -> None:
        self.preprocessing_version = version
        self._weights = weights
        self.forward_images = 0
        self.batches = 0
        self.fail_after_batches = fail_after_batches

    @property
    def weights_sha256(self) -> str:
        return self._weights

    def extract(self, images):
        if self.fail_after_batches is not None and self.batches >= self.fail_after_batches:
            raise KeyboardInterrupt
        self.batches += 1
        self.forward_images += len(images)
        out = np.empty((len(images), self.feature_dim), dtype=np.float32)
        for i, img in enumerate(images):
            arr = np.asarray(img, dtype=np.float32)
            if arr.max() == 255:  # stands for an undecodable image
                out[i] = np.nan
                continue
            out[i] = [arr.mean(), arr.std(), arr[0, 0], arr[-1, -1], arr.sum() % 97, float(arr.shape[0])]
        return out


def make_dataset(n: int = 50, seed: int = 0, bad: int = 0) -> ImageDataset:
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 250, size=(8, 8), dtype=np.uint8) for _ in range(n)]
    for i in range(bad):
        images[i][0, 0] = 255
    examples = [Example(key=f"c{i % 2}/img{i:03d}.png", label=i % 2, split="train", ref=i) for i in range(n)]
    return ImageDataset(name="synthetic", class_names=["a", "b"], examples=examples, read=lambda ex: images[ex.ref])


def run(backbone: Backbone, dataset: ImageDataset, root: Path, batch_size: int = 8):
    return extract_features(backbone, dataset, root, Progress(quiet=True), batch_size=batch_size)


def test_second_run_does_no_forward_pass(tmp_path):
    dataset = make_dataset()
    first_backbone, second_backbone = CountingBackbone(), CountingBackbone()
    first = run(first_backbone, dataset, tmp_path)
    second = run(second_backbone, dataset, tmp_path)
    assert first_backbone.forward_images == 50 and first.computed == 50 and first.cache_hits == 0
    assert second_backbone.forward_images == 0 and second.cache_hits == 50 and second.computed == 0
    np.testing.assert_array_equal(first.features, second.features)
    assert second.images_per_second is None


def test_key_includes_weights_and_preprocessing(tmp_path):
    dataset = make_dataset(10)
    run(CountingBackbone(), dataset, tmp_path)
    for other in (CountingBackbone(version="2"), CountingBackbone(weights="w2")):
        assert run(other, dataset, tmp_path).computed == 10


def test_identical_images_share_one_entry(tmp_path):
    dataset = make_dataset(4)
    images = [dataset.read(ex) for ex in dataset.examples]
    duplicate = ImageDataset(name="dup", class_names=["a", "b"], examples=dataset.examples,
                             read=lambda ex: images[0])
    backbone = CountingBackbone()
    result = run(backbone, duplicate, tmp_path, batch_size=1)
    assert result.computed == 1 and result.cache_hits == 3


def test_undecodable_images_are_reported_not_cached(tmp_path):
    dataset = make_dataset(20, bad=3)
    result = run(CountingBackbone(), dataset, tmp_path)
    assert sorted(result.failed) == sorted(ex.key for ex in dataset.examples[:3])
    assert np.isnan(result.features[:3]).all() and not np.isnan(result.features[3:]).any()
    again = run(CountingBackbone(), dataset, tmp_path)
    assert again.computed == 0 and again.cache_hits == 17 and len(again.failed) == 3


def test_interrupted_extraction_resumes(tmp_path):
    dataset = make_dataset(40)
    with pytest.raises(KeyboardInterrupt):
        run(CountingBackbone(fail_after_batches=2), dataset, tmp_path, batch_size=8)
    resumed = CountingBackbone()
    result = run(resumed, dataset, tmp_path, batch_size=8)
    assert result.cache_hits == 16 and resumed.forward_images == 24


def _record_spans(pack: Path) -> list[tuple[int, int]]:
    """``(offset, length)`` of every record of a pack, read through its framing."""
    from xferbench.pack_store import record_size, scan_pack

    return [(int(e["offset"]), record_size(int(e["dim"]))) for e in scan_pack(pack).entries]


@pytest.mark.parametrize("damage", ["truncate", "flip", "checksum", "key", "garbage"])
def test_corrupt_entry_is_detected_and_recomputed(tmp_path, damage):
    dataset = make_dataset(5)
    clean = run(CountingBackbone(), dataset, tmp_path)
    packs = sorted(tmp_path.rglob("*.pack"))
    assert len(packs) == 1 and len(list(tmp_path.rglob("*.idx"))) == 1
    pack = packs[0]
    spans = _record_spans(pack)
    assert len(spans) == 5
    blob = bytearray(pack.read_bytes())
    offset, length = spans[2] if damage != "truncate" else spans[-1]
    if damage == "truncate":
        blob = blob[:-3]
    elif damage == "flip":  # a value
        blob[offset + length - 10] ^= 0xFF
    elif damage == "checksum":
        blob[offset + length - 1] ^= 0x01
    elif damage == "key":  # a record that claims another image
        blob[offset + 20] ^= 0x01
    else:
        blob[offset:offset + length] = (b"\x80\x04pickle?" * length)[:length]
    pack.write_bytes(bytes(blob))
    backbone = CountingBackbone()
    healed = run(backbone, dataset, tmp_path)
    assert backbone.forward_images == 1 and healed.corrupt_cache_entries == 1
    np.testing.assert_array_equal(healed.features, clean.features)
    again = CountingBackbone()
    assert run(again, dataset, tmp_path).corrupt_cache_entries == 0 and again.forward_images == 0


def test_cache_file_format_rejects_a_wrong_width(tmp_path):
    cache = BottleneckCache(tmp_path, "ns", 4)
    with pytest.raises(ValueError):
        cache.put("ab" * 32, np.zeros(3))
    cache.put("ab" * 32, np.arange(4))
    assert BottleneckCache(tmp_path, "ns", 5).get("ab" * 32) is None


def test_digest_tells_pixels_shapes_and_bytes_apart():
    a = np.zeros((2, 3), np.uint8)
    assert image_digest(a) != image_digest(a.reshape(3, 2))
    assert image_digest(a) != image_digest(a.astype(np.float32))
    assert image_digest(b"abc") == image_digest(b"abc") != image_digest(b"abd")


def _extract_in_child(root: str, queue) -> None:
    backbone = CountingBackbone()
    result = run(backbone, make_dataset(200), Path(root), batch_size=4)
    queue.put((result.features.tobytes(), result.computed, result.cache_hits))


def test_two_concurrent_runs_on_one_cache_agree(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    workers = [ctx.Process(target=_extract_in_child, args=(str(tmp_path), queue)) for _ in range(2)]
    for worker in workers:
        worker.start()
    outcomes = [queue.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert outcomes[0][0] == outcomes[1][0]
    assert all(computed + hits == 200 for _, computed, hits in outcomes)
    final = run(CountingBackbone(), make_dataset(200), tmp_path)
    assert final.computed == 0 and final.corrupt_cache_entries == 0
    assert not list(tmp_path.rglob(".tmp-*"))
