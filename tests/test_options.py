"""Option bounds: inclusive (min, max) and exclusive (gt, lt), checked, listed, and used by the built-ins."""

from __future__ import annotations

import pytest

from support.cli import assert_one_line_error, run_cli
from xferbench import BackboneSpec, Option, hookimpl
from xferbench.errors import OptionError
from xferbench.plugin_manager import load_catalog


def _spec_with(*options: Option):
    @hookimpl
    def xferbench_register_backbones(register):
        register(BackboneSpec("bounded", "a test backbone", factory="builtins:object", options=options))

    plugin = type("Plugin", (), {"xferbench_register_backbones": staticmethod(xferbench_register_backbones)})
    return load_catalog(extra_plugins=[("mine", plugin)], load_entry_points=False).backbones.resolve("bounded")[0]


def test_exclusive_bounds_refuse_the_bound_itself():
    spec = _spec_with(Option("rate", float, 0.1, "step size", gt=0, lt=1))
    assert spec.validate({"rate": "1e-9"}) == {"rate": 1e-9}
    with pytest.raises(OptionError, match=r"option rate='0' must be > 0"):
        spec.validate({"rate": "0"})
    with pytest.raises(OptionError, match=r"option rate='1' must be < 1"):
        spec.validate({"rate": "1"})
    with pytest.raises(OptionError, match="must be > 0"):
        spec.validate({"rate": "nan"})


def test_inclusive_bounds_accept_the_bound_and_refuse_nan():
    spec = _spec_with(Option("dropout", float, 0.5, "rate", min=0, max=0.95))
    assert spec.validate({"dropout": "0"}) == {"dropout": 0.0}
    assert spec.validate({"dropout": "0.95"}) == {"dropout": 0.95}
    with pytest.raises(OptionError, match="must be <= 0.95"):
        spec.validate({"dropout": "0.96"})
    with pytest.raises(OptionError, match="must be >= 0"):
        spec.validate({"dropout": "nan"})


def test_validated_options_validate_again_with_unset_defaults():
    """What validate returns (a run record's options, None for 'not set') is accepted again, as export does."""
    spec = _spec_with(Option("size", int, None, min=1), Option("mode", str, None, choices=("a", "b")),
                      Option("steps", int, 5, min=1))
    first = spec.validate({})
    assert first == {"size": None, "mode": None, "steps": 5}
    assert spec.validate(first) == first
    with pytest.raises(OptionError, match="steps=None"):
        spec.validate({"steps": None})  # an option with a default of its own is never 'not set'


def test_describe_shows_the_bounds():
    assert Option("rate", float, 0.1, "step size", gt=0).describe() == "rate=0.1 (float, > 0) step size"
    assert Option("n", int, 3, "count", min=1, lt=10).describe() == "n=3 (int, >= 1, < 10) count"
    assert Option("mode", str, "a", "how", choices=("a", "b")).describe() == "mode=a (a|b) how"


def test_contradictory_or_untyped_bounds_are_refused_when_declared():
    with pytest.raises(TypeError, match="min or gt"):
        Option("rate", float, 0.1, min=0, gt=0)
    with pytest.raises(TypeError, match="need type int or float"):
        Option("name", str, "x", min=1)


@pytest.mark.parametrize("kind,token,option,value,message", [
    ("heads", "softmax", "learning_rate", "0", "must be > 0"), ("heads", "mlp", "learning_rate", "0", "must be > 0"),
    ("backbones", "lenet5", "learning_rate", "0", "must be > 0"), ("backbones", "keras:MobileNet", "alpha", "0", "must be > 0"),
    ("methods", "full", "learning_rate", "0", "must be > 0"), ("methods", "finetune", "probe_learning_rate", "0", "must be > 0"),
    ("methods", "full", "ema_decay", "1", "must be < 1"),
])
def test_built_in_options_that_mean_positive_refuse_the_bound(kind, token, option, value, message):
    spec = getattr(load_catalog(), kind).resolve(token)[0]
    with pytest.raises(OptionError, match=f"option {option}='{value}' {message}"):
        spec.validate({option: value})


def test_a_zero_learning_rate_is_a_one_line_cli_error_and_list_shows_the_bound(tmp_path):
    result = run_cli("run", "--head-opt", "learning_rate=0", "--output", str(tmp_path / "r.json"),
                     "--cache-dir", str(tmp_path / "cache"), timeout=120)
    assert_one_line_error(result, "learning_rate='0' must be > 0")
    listing = run_cli("list", "heads", env={"COLUMNS": "400"}, timeout=120)
    assert listing.returncode == 0, listing.stderr
    assert "learning_rate=0.01 (float, > 0)" in listing.stdout
