"""The hooks a plugin may implement: the whole plugin API in one place.

A plugin is a module (or object) with functions marked ``@xferbench.hookimpl`` whose names
match these. Plugins reach xferbench through the ``xferbench`` entry-point group; the
built-in backbones, datasets, heads, methods and reporters come in the same way. Hooks are
called through pluggy, so ``tryfirst``, ``trylast`` and ``wrapper`` implementations work.

Two kinds of hooks:

* ``xferbench_register_*(register)``: called once when the plugins are loaded. Call
  ``register(spec)`` once per component. The return value is ignored.
* lifecycle hooks (``xferbench_sweep_started`` ... ``xferbench_sweep_finished``): called
  during ``xferbench run`` in this order: sweep_started, then for each planned run
  run_started and run_finished, then sweep_finished. Return values are ignored. They
  must not change what they receive. An exception in one stops the sweep with a one-line
  error that names the plugin; every finished run is already in the results file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

from xferbench.specs import (
    BackboneSpec,
    CommandSpec,
    DatasetSpec,
    HeadSpec,
    MethodSpec,
    ReporterSpec,
    SuiteSpec,
)

if TYPE_CHECKING:
    from xferbench.record import RunRecord
    from xferbench.sweep import Sweep

PROJECT = "xferbench"
#: the plugin API this xferbench implements; each hook says in which version it appeared
PLUGIN_API_VERSION = 2
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- registration ------------------------------------------------------------------------------
@hookspec
def xferbench_register_backbones(register: Callable[[BackboneSpec], None]) -> None:
    """Register feature extractors (pretrained networks cut at their bottleneck).

    :param register: call ``register(BackboneSpec(...))`` once per backbone.

    Since API version 1.
    """


@hookspec
def xferbench_register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    """Register labelled image sets with a stable train/val/test split.

    :param register: call ``register(DatasetSpec(...))`` once per dataset.

    Since API version 1.
    """


@hookspec
def xferbench_register_heads(register: Callable[[HeadSpec], None]) -> None:
    """Register classifiers that are trained on bottleneck features.

    :param register: call ``register(HeadSpec(...))`` once per head.

    Since API version 1.
    """


@hookspec
def xferbench_register_methods(register: Callable[[MethodSpec], None]) -> None:
    """Register ways to train a classifier for a cell, as ``transfer``, ``full`` and ``finetune`` are.

    :param register: call ``register(MethodSpec(...))`` once per method; ``--compare`` takes its name.

    Since API version 2.
    """


@hookspec
def xferbench_register_reporters(register: Callable[[ReporterSpec], None]) -> None:
    """Register result sinks: they see each run as it finishes and the whole document at the end.

    :param register: call ``register(ReporterSpec(...))`` once per reporter; ``--report`` takes its name.

    Since API version 1 (lifecycle methods and options since 2).
    """


@hookspec
def xferbench_register_commands(register: Callable[[CommandSpec], None]) -> None:
    """Register subcommands: ``xferbench NAME ...``.

    :param register: call ``register(CommandSpec(...))`` once per subcommand. A name that a
        built-in command has is an error that names the plugin.

    Since API version 2.
    """


@hookspec
def xferbench_register_suites(register: Callable[[SuiteSpec], None]) -> None:
    """Register benchmark suites: named lists of tasks plus a protocol (``xferbench run --suite NAME``).

    :param register: call ``register(SuiteSpec(...))`` once per suite (see :mod:`xferbench.suites`).

    Since API version 2.
    """


# -- the run lifecycle -------------------------------------------------------------------------
@hookspec
def xferbench_sweep_started(sweep: Sweep) -> None:
    """Called once when ``xferbench run`` starts, after every name and option was validated.

    :param sweep: what will run: ``sweep.document`` (the results header: command, options,
        machine, versions), ``sweep.planned`` (every run, status ``pending``) and
        ``sweep.output`` (the results file).

    Since API version 2.
    """


@hookspec
def xferbench_run_started(run: RunRecord, sweep: Sweep) -> None:
    """Called before each run starts (not for runs that ``--resume`` keeps).

    :param run: the run's identity (backbone, dataset, method, head, shots), status ``pending``.
    :param sweep: the sweep it belongs to.

    Since API version 2.
    """


@hookspec
def xferbench_run_finished(run: RunRecord, sweep: Sweep) -> None:
    """Called after each run, whatever its status (``ok``, ``error``, ``skipped``, ``interrupted``).

    The results file already holds the run when the first non-``tryfirst`` implementation is called.

    :param run: the finished run's record.
    :param sweep: the sweep it belongs to; ``sweep.document["runs"]`` holds every finished run so far.

    Since API version 2.
    """


@hookspec
def xferbench_sweep_finished(sweep: Sweep) -> None:
    """Called once at the end of ``xferbench run``, also when every run failed or the sweep was interrupted.

    :param sweep: the whole sweep; ``sweep.document`` is the final results document and
        ``sweep.interrupted`` tells whether a signal stopped it.

    Since API version 2.
    """
