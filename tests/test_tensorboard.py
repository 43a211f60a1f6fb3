"""xferbench run --tensorboard DIR: the event files, read back with TensorBoard's own reader, hold the results."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402

from xferbench.record import RunRecord  # noqa: E402
from xferbench.tensorboard import run_name  # noqa: E402


def _scalars(accumulator: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    import tensorflow as tf

    return [(event.step, float(tf.make_ndarray(event.tensor_proto))) for event in accumulator.Tensors(tag)]


@pytest.mark.realdata
def test_run_writes_curves_accuracy_throughput_and_hparams(cli, tmp_path):
    result = cli("run", "--backbone", "lenet5", "--dataset", "digits:0-4", "--head", "softmax,logreg",
                 "--head-opt", "steps=60", "--compare", "transfer", "--shots", "5,all", "--seed", "3",
                 "--output", "r.json", "--tensorboard", "tb", "--quiet")
    assert result.returncode == 0, result.stderr
    runs = json.loads((tmp_path / "r.json").read_text())["runs"]
    assert len(runs) == 4
    assert sorted(p.name for p in (tmp_path / "tb").iterdir()) == sorted(run_name(RunRecord.from_dict(r))
                                                                          for r in runs)
    for run in runs:
        # size_guidance 0: keep every event (the default samples 10 per tag; logreg alone has 21 points)
        accumulator = EventAccumulator(str(tmp_path / "tb" / run_name(RunRecord.from_dict(run))),
                                       size_guidance={"tensors": 0})
        accumulator.Reload()
        curve = [p for p in run["curve"] if p["val_accuracy"] is not None]
        assert curve
        assert _scalars(accumulator, "curve/val_accuracy") == [
            (p["step"], pytest.approx(p["val_accuracy"], abs=1e-6)) for p in curve]
        last = run["curve"][-1]["step"]
        assert _scalars(accumulator, "test/accuracy") == [(last, pytest.approx(run["test_accuracy"], abs=1e-6))]
        for tag, field in (("extract/images_per_second", "extract_images_per_second"),
                           ("extract/network_images_per_second", "extract_forward_images_per_second"),
                           ("extract/mfu", "mfu")):
            if run[field] is None:
                assert tag not in accumulator.Tags()["tensors"]
            else:
                assert _scalars(accumulator, tag) == [(last, pytest.approx(run[field], rel=1e-6))]
        # one HParams record per run, with its identity
        content = accumulator.PluginTagToContent("hparams")
        start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
        hparams = {k: v.string_value or v.number_value for k, v in start.session_start_info.hparams.items()}
        assert hparams == {"backbone": "lenet5", "dataset": "digits:0-4", "method": "transfer",
                           "head": run["head"], "shots": str(run["shots"]), "seed": 3}
