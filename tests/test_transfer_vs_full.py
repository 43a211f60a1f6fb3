"""The claim xferbench exists to measure, measured on real photos with a real ImageNet backbone.

keras:MobileNet (alpha 0.25, the original Keras ImageNet weights) on 500 real flower photos:
with 5 and 10 images per class, a new head on frozen features must beat the same network
trained from scratch on the same images, clearly.
"""

from __future__ import annotations

import json

import pytest

from xferbench.results import validate_document


@pytest.mark.slow
@pytest.mark.realdata
def test_transfer_beats_full_retraining_at_few_shots(cli, shared_data, tmp_path):
    weights = shared_data / "weights" / "mobilenet_2_5_224_tf_no_top.h5"
    photos = shared_data / "flower_photos_mini"
    result = cli("run", "--backbone", "keras:MobileNet", "--backbone-opt", "alpha=0.25",
                 "--backbone-opt", "input_size=128", "--weights", str(weights), "--dataset", f"folder:{photos}",
                 "--compare", "transfer,full", "--shots", "5,10", "--head", "logreg", "--full-epochs", "8",
                 "--output", "flowers.json", "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads((tmp_path / "flowers.json").read_text())
    validate_document(document)
    runs = {(run["method"], run["shots"]): run for run in document["runs"]}
    assert set(runs) == {("transfer", 5), ("transfer", 10), ("full", 5), ("full", 10)}
    for shots in (5, 10):
        transfer, full = runs["transfer", shots], runs["full", shots]
        assert transfer["n_train"] == full["n_train"] == 5 * shots
        assert transfer["n_test"] == full["n_test"] > 40
        # "Clearly": the transfer run's lower CI bound is above the full run's accuracy.
        assert transfer["test_accuracy"] > 0.45, transfer["test_accuracy"]  # chance: 0.2
        assert transfer["test_accuracy_ci"][0] > full["test_accuracy"], (transfer, full)
        assert transfer["train_seconds"] < full["train_seconds"]
        assert full["training"]["epochs"] == pytest.approx(8, abs=0.01)
