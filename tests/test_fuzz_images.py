"""Fuzzed images through every built-in backbone's decode path: each decodes or is one counted NaN row.

The corpus (tests/support/image_fuzz.py) is deterministic from ``SEED``: 2,100 mutated JPEG, PNG
and GIF files (bit flips, truncations, wrong headers, huge declared sizes). All of them go through
the shared decoder and through lenet5 by way of the harness's extraction (which counts the NaN
rows); a third each, all three formats mixed, go through keras:MobileNet (alpha 0.25, the shared
ImageNet weights) and inception_2015 (the stand-in graph). The time bound per batch is a hang
guard only, far above what any batch takes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from support.cli import shared_data_dir
from support.hang import hang_guard
from support.image_fuzz import corpus
from xferbench.context import RunContext
from xferbench.data import Example, ImageDataset
from xferbench.extraction import extract_features
from xferbench.plugin_manager import load_catalog
from xferbench.progress import Progress

pytestmark = pytest.mark.slow

SEED = 16
FILES = corpus(2100, seed=SEED)
BATCH = 100
#: a hang guard, not a speed claim: a batch of 100 small images takes well under a second or two
HANG_SECONDS_PER_BATCH = 120




def _context(tmp: Path, weights: Path | None) -> RunContext:
    return RunContext(catalog=load_catalog(), cache_dir=tmp, weights=weights, progress=Progress(quiet=True))


def _backbone(token: str, options: dict[str, str], context: RunContext) -> Any:
    spec, arg = context.catalog.backbones.resolve(token)
    backbone = spec.load_factory()(arg, spec.validate(options), context)
    backbone.prepare(context)
    return backbone


def _extract_in_batches(backbone: Any, files: Sequence[tuple[str, bytes]]) -> np.ndarray:
    rows = []
    for start in range(0, len(files), BATCH):
        chunk = [data for _, data in files[start:start + BATCH]]
        with hang_guard(HANG_SECONDS_PER_BATCH):
            started = time.perf_counter()
            features = np.asarray(backbone.extract(chunk))
            assert time.perf_counter() - started < HANG_SECONDS_PER_BATCH
        assert features.shape == (len(chunk), backbone.feature_dim)
        rows.append(features)
    return np.concatenate(rows)


def _assert_decodes_or_nan(features: np.ndarray, files: Sequence[tuple[str, bytes]]) -> int:
    """Every row is all finite or all NaN; intact files decode; some mutated ones do not. Returns the NaN count."""
    nan = np.isnan(features)
    failed = nan.all(axis=1)
    assert (failed | ~nan.any(axis=1)).all(), "a row is partly NaN"
    assert np.isfinite(features[~failed]).all()
    intact = np.array(["intact" in name for name, _ in files])
    assert intact.any() and not failed[intact].any(), "an intact file did not decode"
    assert 0 < failed.sum() < len(files)
    for fmt in ("jpeg", "png", "gif"):  # every format reaches both verdicts
        of_format = np.array([f"-{fmt}-" in name for name, _ in files])
        assert failed[of_format].any() and (~failed[of_format]).any(), fmt
    return int(failed.sum())


def test_corpus_is_large_deterministic_and_varied():
    assert len(FILES) >= 2000 and FILES == corpus(len(FILES), seed=SEED)
    kinds = {part for name, _ in FILES for part in name.split("-", 2)[2].split("+")}
    assert kinds == {"bitflip", "truncate", "header", "huge", "range", "intact"}


def test_shared_decoder(tmp_path):
    """xferbench.decoding.BatchDecoder, as every built-in backbone uses it: undecodable images are left out."""
    import tensorflow as tf

    from xferbench.decoding import BatchDecoder

    def resize(rgb: Any) -> Any:
        return tf.image.resize(tf.cast(rgb, tf.float32), (32, 32))

    decoder = BatchDecoder(lambda data: resize(tf.io.decode_image(data, channels=3, expand_animations=False)),
                           resize, (32, 32, 3))
    decoded = np.zeros(len(FILES), dtype=bool)
    with hang_guard(HANG_SECONDS_PER_BATCH * (len(FILES) // BATCH)):
        for indices, batch in decoder.batches([data for _, data in FILES], BATCH):
            assert np.isfinite(batch.numpy()).all()
            decoded[indices] = True
    features = np.where(decoded[:, None], 0.0, np.nan)
    print(f"shared decoder: {len(FILES)} files, {_assert_decodes_or_nan(features, FILES)} undecodable")


def test_lenet5_through_the_harness_counts_every_nan_row(tmp_path):
    from xferbench_lenet5.backbone import build_lenet5

    weights = tmp_path / "random.weights.h5"
    build_lenet5(5, seed=0).save_weights(weights)
    context = _context(tmp_path / "cache", weights)
    backbone = _backbone("lenet5", {}, context)
    direct = _extract_in_batches(backbone, FILES)
    failed = _assert_decodes_or_nan(direct, FILES)
    examples = [Example(key=name, label=0, split="train", ref=data) for name, data in FILES]
    dataset = ImageDataset(name="fuzz", class_names=["x"], examples=examples, read=lambda ex: ex.ref)
    extraction = extract_features(backbone, dataset, tmp_path / "cache", context.progress, batch_size=BATCH)
    assert len(extraction.failed) == failed  # each undecodable file is one counted NaN row
    assert extraction.computed + len(extraction.failed) == len(FILES) - extraction.cache_hits
    assert sorted(extraction.failed) == sorted(name for (name, _), row in zip(FILES, direct, strict=True)
                                               if np.isnan(row).all())
    print(f"lenet5: {len(FILES)} files, {failed} NaN rows")


@pytest.mark.realdata
def test_keras_mobilenet(tmp_path):
    files = FILES[0::3][:350] + FILES[1::3][:175] + FILES[2::3][:175]  # all three formats
    weights = shared_data_dir() / "weights" / "mobilenet_2_5_224_tf_no_top.h5"
    context = _context(tmp_path, weights)
    backbone = _backbone("keras:MobileNet", {"alpha": "0.25", "input_size": "128"}, context)
    failed = _assert_decodes_or_nan(_extract_in_batches(backbone, files), files)
    print(f"keras:MobileNet: {len(files)} files, {failed} NaN rows")


def test_inception_2015_standin(tmp_path):
    from support.inception_standin import build_graph, pack

    graph = pack(build_graph("tiny", seed=0).graph_bytes, tmp_path / "tensorflow_inception_graph.pb", "pb")
    context = _context(tmp_path / "cache", graph)
    backbone = _backbone("inception_2015", {"batch_size": "50"}, context)
    files = FILES[1::3][:350] + FILES[2::3][:175] + FILES[0::3][:175]
    failed = _assert_decodes_or_nan(_extract_in_batches(backbone, files), files)
    print(f"inception_2015 (stand-in): {len(files)} files, {failed} NaN rows")
