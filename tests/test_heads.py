"""The built-in heads: accuracy, determinism, model selection on validation, Keras export."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from xferbench.errors import OptionError, UserError
from xferbench.head import Head
from xferbench.plugin_manager import load_catalog

HEADS = ("softmax", "logreg", "mlp")
# Small but real settings so the whole file runs in seconds.
FAST = {"softmax": {"steps": 600}, "logreg": {}, "mlp": {"epochs": 8, "hidden": 64}}


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def make_head(catalog, name: str, **options) -> Head:
    spec, _ = catalog.heads.resolve(name)
    return spec.load_factory()(spec.validate({**FAST[name], **options}))


def blobs(n: int, seed: int, classes: int = 5, dim: int = 64, spread: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs around fixed, well-separated centres (the centres do not depend on ``seed``)."""
    centres = np.random.default_rng(1234).normal(0.0, 3.0, (classes, dim))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    return (centres[y] + rng.normal(0.0, spread, (n, dim))).astype(np.float32), y


@pytest.fixture(scope="module")
def splits():
    return blobs(400, 1), blobs(150, 2), blobs(500, 3)


def test_plugin_registers_three_heads_without_importing_heavy_libraries(catalog) -> None:
    assert {"softmax", "logreg", "mlp"} <= {spec.name for spec in catalog.heads}
    code = ("import sys, xferbench_heads; from xferbench.plugin_manager import load_catalog; load_catalog(); "
            "heavy = [m for m in ('tensorflow', 'keras', 'sklearn') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", HEADS)
def test_head_separates_gaussian_blobs(catalog, splits, name: str) -> None:
    (xt, yt), (xv, yv), (xs, ys) = splits
    head = make_head(catalog, name)
    head.fit(xt, yt, xv, yv, num_classes=5, seed=0)
    probs = head.predict_proba(xs)
    assert probs.shape == (len(xs), 5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    assert np.mean(head.predict(xs) == ys) >= 0.99
    json.dumps(head.info())  # goes into the results document as it is


@pytest.mark.parametrize("name", HEADS)
def test_to_keras_reproduces_predict_proba(catalog, name: str) -> None:
    # Noisier blobs, so probabilities are not all saturated at 0 or 1 and the check has teeth.
    (xt, yt), (xv, yv), (xs, _) = blobs(300, 4, spread=4.0), blobs(100, 5, spread=4.0), blobs(200, 6, spread=4.0)
    xt, xv, xs = xt + 5.0, xv + 5.0, xs + 5.0  # a non-zero mean exercises the folded scaler
    head = make_head(catalog, name)
    head.fit(xt, yt, xv, yv, num_classes=5, seed=0)
    probs = head.predict_proba(xs)
    assert 0.05 < probs.max(axis=1).mean() < 0.999
    model = head.to_keras(64)
    np.testing.assert_allclose(np.asarray(model(xs)), probs, atol=1e-5)
    with pytest.raises(UserError):
        head.to_keras(63)


@pytest.mark.parametrize("name", HEADS)
def test_same_seed_gives_identical_probabilities(catalog, splits, name: str) -> None:
    (xt, yt), (xv, yv), (xs, _) = splits
    first, second = make_head(catalog, name), make_head(catalog, name)
    first.fit(xt, yt, xv, yv, num_classes=5, seed=7)
    second.fit(xt, yt, xv, yv, num_classes=5, seed=7)
    np.testing.assert_array_equal(first.predict_proba(xs), second.predict_proba(xs))


@pytest.mark.parametrize("name", ["softmax", "mlp"])
def test_different_seed_gives_different_weights(catalog, splits, name: str) -> None:
    (xt, yt), (xv, yv), (xs, _) = splits
    first, second = make_head(catalog, name), make_head(catalog, name)
    first.fit(xt, yt, xv, yv, num_classes=5, seed=1)
    second.fit(xt, yt, xv, yv, num_classes=5, seed=2)
    assert not np.allclose(first.predict_proba(xs), second.predict_proba(xs))


def test_softmax_reports_progress_every_eval_every_steps(catalog, splits) -> None:
    (xt, yt), (xv, yv), _ = splits
    calls: list[tuple[int, float | None, float]] = []
    head = make_head(catalog, "softmax", steps=95, eval_every=10)
    head.fit(xt, yt, xv, yv, num_classes=5, seed=0, on_progress=lambda *a: calls.append(a))
    assert [c[0] for c in calls] == [10, 20, 30, 40, 50, 60, 70, 80, 90, 95]
    assert all(0.0 <= c[1] <= 1.0 for c in calls)
    assert [c[2] for c in calls] == sorted(c[2] for c in calls)
    assert calls[-1][1] == head.info()["final_val_accuracy"]


def test_softmax_starts_like_retrain_py(catalog, splits) -> None:
    """One step of a negligible learning rate leaves retrain.py's initial weights: |w| <= 2 * 0.001, zero bias."""
    (xt, yt), (xv, yv), _ = splits
    head = make_head(catalog, "softmax", steps=1, learning_rate=1e-30)  # the rate must be > 0
    head.fit(xt, yt, xv, yv, num_classes=5, seed=0)
    (layer,) = head.layers
    assert np.abs(layer.kernel).max() <= 0.002
    assert 0.0005 < layer.kernel.std() < 0.001  # a 2-sigma truncated normal has std 0.88 sigma
    assert np.abs(layer.bias).max() < 1e-20  # zero at the start; one step of 1e-30 moves it by ~1e-30


def test_softmax_early_stopping_keeps_the_best_weights(catalog, splits) -> None:
    (xt, yt), (xv, yv), _ = splits
    accs: list[float] = []
    head = make_head(catalog, "softmax", steps=5000, eval_every=5, early_stopping=True, patience=3)
    head.fit(xt, yt, xv, yv, num_classes=5, seed=0, on_progress=lambda s, a, t: accs.append(a))
    info = head.info()
    assert info["early_stopped"] and info["steps"] < 5000
    assert info["final_val_accuracy"] == max(accs)
    assert len(accs) - 1 - accs.index(max(accs)) == 3  # stopped after exactly `patience` evaluations


def _prior_trap_data() -> tuple[np.ndarray, ...]:
    """Imbalanced train (80% class 0); class 1 sits at x0 = +2, class 0 at x0 = -2.

    ``val_trap`` holds class-0 points that look like class 1: only a model that is
    regularised into predicting the prior (the smallest C) gets them right.
    """
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(80, int), np.ones(20, int)]
    x = np.c_[np.where(y == 1, 2.0, -2.0), np.zeros(100)] + rng.normal(0, 0.7, (100, 2))
    x_trap = np.c_[np.full(20, 2.0), np.zeros(20)] + rng.normal(0, 0.7, (20, 2))
    y_fair = np.r_[np.zeros(10, int), np.ones(10, int)]
    x_fair = np.c_[np.where(y_fair == 1, 2.0, -2.0), np.zeros(20)] + rng.normal(0, 0.7, (20, 2))
    return x, y, x_trap, np.zeros(20, int), x_fair, y_fair


def test_logreg_chooses_c_on_the_validation_split(catalog) -> None:
    x, y, x_trap, y_trap, x_fair, y_fair = _prior_trap_data()
    trapped = make_head(catalog, "logreg")
    trapped.fit(x, y, x_trap, y_trap, num_classes=2, seed=0)
    fair = make_head(catalog, "logreg")
    fair.fit(x, y, x_fair, y_fair, num_classes=2, seed=0)
    assert trapped.info()["C"] == 1e-5  # the smallest C of the grid
    assert trapped.info()["val_accuracy"] == 1.0
    assert fair.info()["C"] >= 1.0
    assert fair.info()["selected_on"] == "validation" and fair.info()["refit"] == "train"
    assert len(fair.info()["grid"]) == 21  # one curve point each: at least 20
    custom = make_head(catalog, "logreg", grid="0.5, 0.01")
    custom.fit(x, y, x_trap, y_trap, num_classes=2, seed=0)
    assert custom.info()["C"] == 0.01


@pytest.mark.parametrize("refit", ["train", "train+val"])
def test_logreg_fits_only_on_train_and_val(catalog, splits, monkeypatch, refit: str) -> None:
    """Head.fit has no test argument; here we also see every matrix L-BFGS is given."""
    from sklearn.linear_model import LogisticRegression

    seen: list[int] = []
    original = LogisticRegression.fit

    def spy(self, x, y, *args, **kwargs):
        seen.append(len(x))
        return original(self, x, y, *args, **kwargs)

    monkeypatch.setattr(LogisticRegression, "fit", spy)
    (xt, yt), (xv, yv), _ = splits
    head = make_head(catalog, "logreg", grid="0.1,1", refit=refit)
    head.fit(xt, yt, xv, yv, num_classes=5, seed=0)
    expected = [len(xt), len(xt)] + ([len(xt) + len(xv)] if refit == "train+val" else [])
    assert seen == expected
    assert head.info()["refit"] == refit
    import inspect

    assert list(inspect.signature(Head.fit).parameters)[:5] == ["self", "x_train", "y_train", "x_val", "y_val"]


def test_logreg_handles_classes_missing_from_training(catalog) -> None:
    (xt, yt), (xv, yv), (xs, _) = blobs(200, 1, classes=3), blobs(60, 2, classes=3), blobs(50, 3, classes=3)
    head = make_head(catalog, "logreg", grid="1")
    head.fit(xt, yt, xv, yv, num_classes=5, seed=0)  # classes 3 and 4 never occur
    probs = head.predict_proba(xs)
    assert probs.shape == (50, 5) and probs[:, 3:].max() == 0.0
    np.testing.assert_allclose(np.asarray(head.to_keras(64)(xs)), probs, atol=1e-5)
    assert head.info()["selected_on"] == "fixed"


def test_logreg_needs_validation_to_choose(catalog, splits) -> None:
    (xt, yt), _, _ = splits
    empty_x, empty_y = np.zeros((0, 64), np.float32), np.zeros(0, int)
    with pytest.raises(UserError, match="validation"):
        make_head(catalog, "logreg").fit(xt, yt, empty_x, empty_y, num_classes=5, seed=0)
    single = make_head(catalog, "logreg", grid="1")
    single.fit(xt, yt, empty_x, empty_y, num_classes=5, seed=0)
    assert single.info()["C"] == 1.0


def test_mlp_sgd_without_dropout_learns(catalog, splits) -> None:
    (xt, yt), (xv, yv), (xs, ys) = splits
    head = make_head(catalog, "mlp", optimizer="sgd", learning_rate=0.05, dropout=0.0, keep_best=False)
    head.fit(xt, yt, xv, yv, num_classes=5, seed=0)
    assert np.mean(head.predict(xs) == ys) >= 0.99
    assert "best_epoch" not in head.info()


@pytest.mark.parametrize("name", HEADS)
def test_nan_features_are_a_user_error(catalog, splits, name: str) -> None:
    (xt, yt), (xv, yv), _ = splits
    bad = xt.copy()
    bad[3] = np.nan
    with pytest.raises(UserError, match="NaN"):
        make_head(catalog, name).fit(bad, yt, xv, yv, num_classes=5, seed=0)


@pytest.mark.parametrize(("name", "options", "message"), [
    ("softmax", {"learning_rate": "fast"}, "learning_rate='fast' is not a number"),
    ("softmax", {"stpes": "10"}, "did you mean 'steps'"),
    ("softmax", {"early_stopping": "maybe"}, "is not true/false"),
    ("mlp", {"optimizer": "rmsprop"}, "must be one of: adam, sgd"),
    ("mlp", {"dropout": "1.5"}, "must be <="),
    ("logreg", {"grid": "1,abc"}, "'abc' is not a number"),
    ("logreg", {"grid": "0,1"}, "must be a positive"),
    ("logreg", {"refit": "val"}, "must be one of"),
])
def test_bad_options_are_one_line_option_errors(catalog, name: str, options: dict, message: str) -> None:
    spec, _ = catalog.heads.resolve(name)
    with pytest.raises(OptionError, match=message) as err:
        spec.load_factory()(spec.validate(options))
    assert "\n" not in str(err.value)
    # Built directly, without the registry, a head still validates its options.
    with pytest.raises(OptionError, match=message):
        spec.load_factory()(options)
