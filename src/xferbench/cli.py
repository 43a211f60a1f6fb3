"""The ``xferbench`` command line.

Only the standard library and xferbench's own light modules are imported at start-up;
TensorFlow is imported by the components that need it, so ``--help``, ``list`` and
``plugins`` stay fast.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from xferbench import __version__
from xferbench.errors import Interrupted, UserError, interrupt_exit_code

# `xferbench run` alone is exactly this command line: ImageNet MobileNet (alpha 0.25, weights shipped in the
# package) on the 500 shipped flower photos, transfer against full retraining; no network, under a minute.
DEFAULT_RUN = ["--backbone", "keras:MobileNet", "--backbone-opt", "alpha=0.25", "--backbone-opt", "input_size=128",
               "--dataset", "flowers-mini", "--head", "logreg", "--compare", "transfer,full",
               "--shots", "5,20,all", "--full-epochs", "6"]
#: the `run` options that choose the work; with none of them, `xferbench run` runs DEFAULT_RUN
_WORK_OPTIONS = frozenset({"suite", "backbone", "dataset", "head", "compare", "shots", "weights", "data_dir", "resume",
                           "full_epochs", "full_budget", "backbone_opt", "dataset_opt", "head_opt", "method_opt",
                           "augment", "augment_copies"})
KINDS = ("backbones", "datasets", "heads", "methods", "reporters", "commands", "suites")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (exit 2), like every user error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _split_tokens(text: str, known: Any) -> list[str]:
    """Split ``a,b`` but keep commas inside a class subset: ``digits:0,2,7``, ``flowers:daisy,roses``.

    A part without a colon that is not a dataset name continues the subset before it.
    """
    tokens: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if tokens and ":" in tokens[-1] and ":" not in part and part not in known:
            tokens[-1] += "," + part
        else:
            tokens.append(part)
    return tokens


def build_parser(catalog: Any = None) -> argparse.ArgumentParser:
    """The argument parser; ``catalog``'s plugin commands become subcommands too."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--no-plugin", action="append", default=[], metavar="NAME",
                        help="do not load this plugin (repeatable; also XFERBENCH_DISABLE_PLUGINS)")
    common.add_argument("--cache-dir", type=Path, default=None,
                        help="cache folder (default: $XFERBENCH_CACHE_DIR or ~/.cache/xferbench)")
    common.add_argument("--quiet", "-q", action="store_true", help="no progress output")

    parser = _Parser(prog="xferbench", parents=[common],
                     description="What do you gain by reusing a pretrained network instead of training a "
                                 "whole one, and what does it cost? Runs transfer learning against full "
                                 "retraining on real models and data.")
    parser.add_argument("--version", action="version", version=f"xferbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = sub.add_parser("run", parents=[common], help="run a benchmark (no arguments: the embedded default)",
                         description="Run a benchmark. With no arguments (or only --output, --format, --seed, "
                                     "--quiet, ...) this is the embedded default: xferbench run "
                                     + " ".join(DEFAULT_RUN) + ". Any option that chooses the work (--backbone, "
                                     "--dataset, --shots, ...) leaves the others at the defaults below.")
    run.add_argument("--backbone", default="lenet5", help="backbone name(s), comma-separated (default lenet5)")
    run.add_argument("--dataset", default="digits:5-9",
                     help="dataset name(s); NAME:SUBSET selects classes (default digits:5-9)")
    run.add_argument("--suite", metavar="NAME|FILE.toml",
                     help="run every task of a suite (see xferbench list suites, docs/suites.md); its protocol "
                          "sets --head, --compare and --shots unless given")
    run.add_argument("--head", default="softmax", help="head name(s) for transfer (default softmax)")
    run.add_argument("--compare", default=None,
                     help="methods, e.g. transfer,full,finetune (see xferbench list methods; default: transfer, "
                          "and full where the backbone supports it)")
    run.add_argument("--shots", default="all", help="training images per class, e.g. 1,5,10,all")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--weights", type=Path, help="a local weights file for the backbone")
    run.add_argument("--data-dir", type=Path, help="a local copy of the dataset")
    run.add_argument("--output", type=Path, help="results JSON (default ./xferbench-results/<time>.json)")
    run.add_argument("--resume", type=Path, metavar="RESULTS.json",
                     help="go on with an interrupted run: the same command again, keeping its finished runs; "
                          "full training continues from its newest checkpoint")
    run.add_argument("--format", default="table", help="summary format: table, json, markdown, csv")
    _add_report_arguments(run)
    run.add_argument("--full-epochs", type=int, help="epochs of full retraining / fine-tuning (default 30)")
    run.add_argument("--full-budget", help="wall-time limit of full retraining, e.g. 90s or 10m")
    run.add_argument("--target-accuracy", type=_fraction, metavar="ACC",
                     help="validation accuracy to time each method to, e.g. 0.9 or 90%% (default: the lower of "
                          "transfer's and the other method's final ones)")
    run.add_argument("--tensorboard", type=Path, metavar="DIR",
                     help="write each run's curves, test accuracy, throughput and hparams as TensorBoard logs")
    run.add_argument("--augment", metavar="flip,crop=PCT,scale=PCT,brightness=PCT",
                     help="retrain.py's distortions of the training images: cached distorted copies for transfer, "
                          "on the fly for full and finetune (val and test are never distorted)")
    run.add_argument("--augment-copies", type=int, metavar="K",
                     help="distorted copies of each training image for transfer (default 5)")
    run.add_argument("--show-misclassified", action="store_true",
                     help="list misclassified test images (retrain.py --print_misclassified_test_images)")
    for kind in ("backbone", "dataset", "head", "method"):
        run.add_argument(f"--{kind}-opt", action="append", default=[], metavar="K=V",
                         help=f"an option for the {kind} (repeatable; see xferbench list {kind}s)")
    _add_executor_arguments(run)

    lst = sub.add_parser("list", parents=[common], help="list backbones, datasets, heads, methods, reporters, commands")
    lst.add_argument("kind", nargs="?", choices=KINDS, help="only this kind")
    lst.add_argument("--all", action="store_true",
                     help="also every argument a parametric component knows (e.g. each KerasHub image preset)")
    sub.add_parser("plugins", parents=[common], help="list loaded plugins, their versions and origins")

    fetch = sub.add_parser("fetch", parents=[common], help="download a backbone's or dataset's files into the cache")
    fetch.add_argument("name", help="e.g. inception_2015 or flowers")
    fetch.add_argument("--from", dest="source", type=Path, help="import a file (or a folder, where the component takes one) you downloaded yourself")
    fetch.add_argument("--opt", action="append", default=[], metavar="K=V", help="an option of the component")
    fetch.add_argument("--data-dir", type=Path, help="where a dataset that keeps its own folder is prepared (tfds:)")

    extract = sub.add_parser("extract", parents=[common], help="write bottleneck features of a dataset to .npz")
    extract.add_argument("--backbone", required=True)
    extract.add_argument("--dataset", required=True)
    extract.add_argument("--weights", type=Path)
    extract.add_argument("--data-dir", type=Path)
    extract.add_argument("--seed", type=int, default=0)
    extract.add_argument("--out", required=True, type=Path, metavar="FILE.npz")
    extract.add_argument("--backbone-opt", action="append", default=[], metavar="K=V")
    extract.add_argument("--dataset-opt", action="append", default=[], metavar="K=V")
    _add_executor_arguments(extract)

    export = sub.add_parser("export", parents=[common], help="write a transfer run as one TF SavedModel or TFLite model")
    export.add_argument("--run", required=True, type=Path, metavar="RUN_DIR")
    export.add_argument("--out", required=True, type=Path, metavar="DIR|FILE.tflite")
    export.add_argument("--format", default="savedmodel", choices=("savedmodel", "tflite"),
                        help="savedmodel (a folder, default) or tflite (one file, with an export report next to it)")
    export.add_argument("--quantize", default="none", choices=("none", "dynamic", "float16", "int8"),
                        help="TFLite quantization; int8 is full-integer, calibrated on the run's training split")
    export.add_argument("--representative-images", type=int, default=100, metavar="N",
                        help="training images that calibrate --quantize int8 (default 100)")

    predict = sub.add_parser("predict", parents=[common], help="top-k labels of images from an exported model")
    predict.add_argument("--model", required=True, type=Path, metavar="DIR|FILE.tflite")
    predict.add_argument("--top-k", type=int, default=5)
    predict.add_argument("images", nargs="+", type=Path, metavar="IMG")

    compare = sub.add_parser("compare", parents=[common], help="deltas between two results files")
    compare.add_argument("baseline", type=Path, metavar="A.json")
    compare.add_argument("candidate", type=Path, metavar="B.json")
    compare.add_argument("--fail-on-regression", type=float, metavar="PCT",
                         help="exit 1 when accuracy, throughput or time regress by more than PCT percent")

    report = sub.add_parser("report", parents=[common], help="render a results file (plots need the [plot] extra)")
    report.add_argument("result", type=Path, nargs="+", metavar="RESULT.json",
                        help="one results file, or several: a leaderboard across them (with --html: a comparison "
                             "page of two, baseline and candidate)")
    report.add_argument("--plot", type=Path, metavar="DIR", help="write PNG plots into DIR")
    report.add_argument("--html", type=Path, metavar="FILE.html",
                        help="write a self-contained HTML page (charts, sortable table) to FILE.html")
    report.add_argument("--format", default="table", help="summary format: table, json, markdown, csv")
    report.add_argument("--target-accuracy", type=_fraction, metavar="ACC",
                        help="recompute the comparison timing each method to this validation accuracy")
    _add_report_arguments(report)

    evaluate = sub.add_parser("evaluate", parents=[common], help="watch a training run's checkpoints")
    evaluate.add_argument("--watch", required=True, type=Path, metavar="RUN_DIR")
    evaluate.add_argument("--interval", type=float, default=10.0, help="seconds between checks")
    evaluate.add_argument("--until-done", action="store_true", help="stop after the final checkpoint")
    evaluate.add_argument("--tensorboard", type=Path, metavar="DIR",
                          help="also write each checkpoint's validation accuracy into the run's TensorBoard run "
                               "(the DIR given to run --tensorboard)")
    from xferbench import cache_admin

    cache_admin.add_parser(sub, common)

    machine = sub.add_parser("machine", parents=[common], help="CPU features, GPUs, TensorFlow build, peak GFLOP/s")
    machine.add_argument("--remeasure", action="store_true", help="measure the peak matmul GFLOP/s again")
    machine.add_argument("--json", action="store_true", help="print it as JSON")
    for spec in (catalog.commands if catalog is not None else ()):
        command = sub.add_parser(spec.name, parents=[common], help=f"{spec.description} (plugin {spec.plugin})")
        arguments = spec.load_arguments()
        if arguments is not None:
            arguments(command)
    return parser


def _fraction(text: str) -> float:
    """``0.9`` or ``90%`` -> 0.9, for argparse (a bad value is its one-line usage error)."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an accuracy like 0.9 or 90%") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} must lie between 0 and 1 (or 0% and 100%)")
    return value


def _add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--executor", default="local", metavar="local|ray",
                        help="where the work runs: this process (local, the default) or a Ray cluster (ray; "
                             "needs pip install \"xferbench[ray]\"; docs/scaling.md)")
    parser.add_argument("--ray-address", metavar="ADDR",
                        help="the Ray cluster to use (default: $RAY_ADDRESS, else a local Ray for this run)")
    parser.add_argument("--executor-opt", action="append", default=[], metavar="K=V",
                        help="an option of the executor, e.g. cpus_per_run=2 (repeatable; docs/scaling.md)")


def _make_executor(args: argparse.Namespace) -> Any:
    from xferbench.executors import make_executor
    from xferbench.options import parse_assignments

    return make_executor(args.executor, args.ray_address, parse_assignments(args.executor_opt, "--executor-opt"))


def _add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--report", metavar="NAME[,NAME..]",
                        help="reporters to run, e.g. table,markdown (see xferbench list reporters; default: --format)")
    parser.add_argument("--reporter-opt", action="append", default=[], metavar="NAME.K=V",
                        help="an option of one reporter, e.g. markdown.output=results.md (repeatable)")


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        with stop_signals_interrupt():
            parser = build_parser(_plugin_commands(args_list))
            args = parser.parse_args(args_list)
            if args.command == "run" and (expanded := with_default_run(args_list)) != args_list:
                args_list, args = expanded, parser.parse_args(expanded)
            if args.command is None:
                parser.print_help()
                return 0
            return _dispatch(args, args_list)
    except UserError as exc:
        print(f"xferbench: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        _tell(f"xferbench: {_stopped(exc)}")
        return interrupt_exit_code(exc)


# SIGTERM (`kill PID`, `timeout`, batch schedulers, Kubernetes) and SIGHUP (the terminal went away) stop
# xferbench just as Ctrl-C (SIGINT) does: finished work is kept and the exit code is 128 + the signal.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextlib.contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """Inside, SIGTERM and SIGHUP raise :class:`~xferbench.errors.Interrupted`, a KeyboardInterrupt.

    A signal that was ignored when the process started (``nohup`` ignores SIGHUP) stays ignored,
    as the Unix convention wants; Python itself leaves SIGINT ignored in that case too. Only the
    first stop signal raises: a second one takes its default action, so a repeated ``kill`` still
    ends a process that is slow to clean up.
    """
    if threading.current_thread() is not threading.main_thread():  # signal.signal works only there
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    # None: a handler set outside Python, left alone.
    caught = [signum for signum, handler in previous.items() if handler not in (signal.SIG_IGN, None)]

    def raise_interrupted(signum: int, frame: object) -> None:
        for each in caught:
            signal.signal(each, signal.SIG_DFL)
        raise Interrupted(signum)

    for signum in caught:
        signal.signal(signum, raise_interrupted)
    try:
        yield
    finally:
        for signum in caught:
            signal.signal(signum, previous[signum])


def _stopped(exc: KeyboardInterrupt) -> str:
    return f"stopped by {exc.signal_name}" if isinstance(exc, Interrupted) else "interrupted"


def _tell(line: str) -> None:
    """A last line on stderr, which may be gone: after SIGHUP the terminal is (EIO)."""
    with contextlib.suppress(OSError):
        print(line, file=sys.stderr, flush=True)


def with_default_run(argv: Sequence[str]) -> list[str]:
    """``argv`` followed by DEFAULT_RUN when it is ``run`` with no option that chooses the work."""
    parser = build_parser()
    run_parser = next(action.choices["run"] for action in parser._actions
                      if isinstance(action, argparse._SubParsersAction))
    for action in run_parser._actions:
        if action.dest in _WORK_OPTIONS:
            action.default = argparse.SUPPRESS  # left out of the namespace unless given
    args = parser.parse_args(argv)
    if args.command == "run" and not _WORK_OPTIONS & set(vars(args)):
        return [*argv, *DEFAULT_RUN]
    return list(argv)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with its C++ start-up chatter (CUDA probing, absl) kept off the terminal."""
    if "tensorflow" in sys.modules:
        return
    from xferbench.native_stderr import native_stderr_silenced

    # On failure it is imported again below with stderr back, so the real error is visible.
    with native_stderr_silenced(), contextlib.suppress(ImportError):
        import tensorflow  # noqa: F401
    import tensorflow  # noqa: F401,F811


_BUILT_IN_COMMANDS = ("run", "list", "plugins", "fetch", "extract", "export", "predict", "compare", "report",
                      "evaluate", "cache", "machine")


def _plugin_commands(argv: list[str]) -> Any:
    """The catalog, when the command line may name a plugin's subcommand (or asks for help); else None.

    Built-in commands load the plugins themselves, after parsing, so that `--no-plugin` applies.
    """
    first = next((arg for arg in argv if not arg.startswith("-")), None)
    if first in _BUILT_IN_COMMANDS:
        return None
    blocked = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--no-plugin"]
    blocked += [arg.split("=", 1)[1] for arg in argv if arg.startswith("--no-plugin=")]
    from xferbench.plugin_manager import load_catalog

    try:
        catalog = load_catalog(blocked=blocked)
    except UserError:
        if first is None:  # plain --help still works with a broken plugin installed
            return None
        raise
    for spec in catalog.commands:
        if spec.name in _BUILT_IN_COMMANDS:
            raise UserError(f"plugin {spec.plugin!r} registers a command {spec.name!r}, which xferbench has already; "
                            f"block it with --no-plugin {spec.plugin}")
    return catalog


def _catalog(args: argparse.Namespace) -> Any:
    from xferbench.plugin_manager import load_catalog

    return load_catalog(blocked=args.no_plugin)


def _context(args: argparse.Namespace, catalog: Any, **extra: Any) -> Any:
    from xferbench.context import RunContext
    from xferbench.paths import default_cache_dir
    from xferbench.progress import Progress

    cache_dir = args.cache_dir or default_cache_dir()
    return RunContext(catalog=catalog, cache_dir=cache_dir, progress=Progress(quiet=args.quiet), **extra)


def _dispatch(args: argparse.Namespace, argv: list[str]) -> int:
    if args.command == "list":
        return _cmd_list(args)
    if args.command == "plugins":
        return _cmd_plugins(args)
    if args.command == "run":
        return _cmd_run(args, argv)
    if args.command == "fetch":
        return _cmd_fetch(args)
    if args.command == "extract":
        import_tensorflow_quietly()
        return _cmd_extract(args)
    if args.command == "export":
        return _cmd_export(args)
    if args.command == "predict":
        return _cmd_predict(args)
    if args.command == "compare":
        from xferbench.compare import compare_documents
        from xferbench.results import load_document

        return compare_documents(load_document(args.baseline), load_document(args.candidate),
                                 fail_on_regression=args.fail_on_regression, stream=sys.stdout)
    if args.command == "report":
        return _cmd_report(args)
    if args.command == "cache":
        from xferbench import cache_admin
        from xferbench.paths import default_cache_dir

        return cache_admin.run(args, args.cache_dir or default_cache_dir())
    if args.command == "evaluate":
        from xferbench.evaluate import watch

        import_tensorflow_quietly()
        watch(args.watch, interval=args.interval, until_done=args.until_done, tensorboard=args.tensorboard)
        return 0
    if args.command == "machine":
        from xferbench.paths import default_cache_dir
        from xferbench.peak import print_machine

        import_tensorflow_quietly()
        return print_machine(args.cache_dir or default_cache_dir(), args.remeasure, args.json)
    catalog = _catalog(args)
    spec, _ = catalog.commands.resolve(args.command)
    return int(spec.load_factory()(args, _context(args, catalog)) or 0)


def _cmd_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from xferbench.plan import DEFAULT_METHODS

    catalog = _catalog(args)
    console = Console()
    if args.all:
        import_tensorflow_quietly()  # the long lists may import Keras packages (KerasHub's presets)
    for kind in [args.kind] if args.kind else KINDS:
        table = Table(title=kind, title_justify="left")
        table.add_column("name", style="bold")
        table.add_column("plugin")
        table.add_column("description")
        table.add_column("options" if kind != "suites" else "tasks")
        for spec in catalog.registry(kind[:-1]):
            details = spec.options if kind != "suites" else ()
            table.add_row(spec.label, spec.plugin, spec.description, "\n".join(o.describe() for o in details)
                          or _suite_tasks(spec))
            for variant, description in spec.list_variants() if args.all else ():
                table.add_row(f"  {spec.name}:{variant}", "", description, "")
        if kind == "methods":
            table.caption = f"default --compare: {','.join(DEFAULT_METHODS)} (a method a backbone cannot do is skipped)"
        console.print(table)
    return 0


def _suite_tasks(spec: Any) -> str:
    """A suite's tasks, one line each: ``group: name (dataset)``."""
    return "\n".join(f"{task.group}: {task.name} ({task.dataset})" for task in getattr(spec, "tasks", ()))


def _cmd_plugins(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    catalog = _catalog(args)
    table = Table(title="plugins", title_justify="left")
    for column in ("name", "version", "from"):
        table.add_column(column)
    for info in catalog.plugins:
        table.add_row(info.name, info.version, info.origin)
    console = Console()
    console.print(table)
    if catalog.blocked:
        console.print(f"blocked: {', '.join(catalog.blocked)}")
    return 0


# Options of `run` that only change how the output looks or where it comes from: --resume may take them.
_NOT_RUN_SETTINGS = {"command", "quiet", "format", "report", "reporter_opt", "resume", "no_plugin", "cache_dir",
                     "tensorboard", "executor", "ray_address", "executor_opt"}


def _resume_arguments(args: argparse.Namespace) -> tuple[argparse.Namespace, list[str], dict[str, Any]]:
    """The interrupted run's own command line, parsed again, writing to the same results file."""
    from xferbench.results import load_document

    path = args.resume
    document = load_document(path)
    command = document.get("command") or []
    if command[:2] != ["xferbench", "run"]:
        raise UserError(f"--resume {path}: the file does not record an `xferbench run` command line to repeat")
    defaults = vars(build_parser().parse_args(["run"]))
    given = [name for name, value in vars(args).items()
             if name not in _NOT_RUN_SETTINGS and value != defaults.get(name, value)]
    if given:
        raise UserError(f"--resume repeats the interrupted command ({' '.join(command)}); leave out "
                        f"--{given[0].replace('_', '-')}")
    argv = list(command[1:])
    resumed = build_parser().parse_args(argv)
    resumed.quiet, resumed.format, resumed.resume, resumed.output = args.quiet, args.format, path, path
    resumed.report, resumed.reporter_opt = args.report, args.reporter_opt
    resumed.tensorboard = args.tensorboard
    resumed.executor, resumed.ray_address, resumed.executor_opt = args.executor, args.ray_address, args.executor_opt
    resumed.no_plugin = args.no_plugin or resumed.no_plugin
    # The same cache: its bottlenecks and pretrained weights are what make resuming cheap.
    recorded = (document.get("options") or {}).get("cache_dir")
    resumed.cache_dir = args.cache_dir or resumed.cache_dir or (Path(recorded) if recorded else None)
    return resumed, argv, document


def _cmd_run(args: argparse.Namespace, argv: list[str]) -> int:
    from xferbench.augment import parse_augment
    from xferbench.lifecycle import ReporterBridge
    from xferbench.options import parse_assignments
    from xferbench.results import check_writable, default_output_path
    from xferbench.runner import Runner, RunRequest, parse_duration, parse_shots

    interrupted = None
    if args.resume is not None:
        args, argv, interrupted = _resume_arguments(args)
    catalog = _catalog(args)
    reporters = _reporters(catalog, args)
    request = RunRequest(
        backbones=_split_list(args.backbone),
        datasets=_split_tokens(args.dataset, catalog.datasets),
        heads=_split_list(args.head),
        methods=None if args.compare is None else _split_list(args.compare),
        shots=parse_shots(args.shots),
        backbone_options=parse_assignments(args.backbone_opt, "--backbone-opt"),
        dataset_options=parse_assignments(args.dataset_opt, "--dataset-opt"),
        head_options=parse_assignments(args.head_opt, "--head-opt"),
        method_options=parse_assignments(args.method_opt, "--method-opt"),
        full_epochs=args.full_epochs,
        full_budget_seconds=parse_duration(args.full_budget) if args.full_budget else None,
        show_misclassified=args.show_misclassified,
        target_accuracy=args.target_accuracy,
        command=["xferbench", *argv],
        augmentation=parse_augment(args.augment, args.augment_copies),
    )
    if args.suite:
        request = _with_suite(request, args, argv, catalog)
        reporters = _reporters(catalog, args)
    output = args.output or default_output_path()
    if output.suffix != ".json":
        raise UserError(f"--output {output}: the results file must end in .json")
    check_writable(output)
    executor = _make_executor(args)
    context = _context(args, catalog, seed=args.seed, weights=args.weights, data_dir=args.data_dir)
    runner = Runner(request, context, output, resume=interrupted, executor=executor)
    import_tensorflow_quietly()
    bridge = ReporterBridge(reporters)
    catalog.pm.register(bridge, name="xferbench-reporters")
    from xferbench import tensorboard

    logger = tensorboard.register(catalog, args.tensorboard)
    try:
        document = runner.run()
    except KeyboardInterrupt as exc:  # Ctrl-C, and SIGTERM or SIGHUP as Interrupted
        _tell(f"xferbench: {_stopped(exc)}; finished runs are in {output}; go on with: "
              f"xferbench run --resume {shlex.quote(str(output))}")
        return interrupt_exit_code(exc)
    finally:
        catalog.pm.unregister(bridge)
        if logger is not None:
            catalog.pm.unregister(logger)
    for reporter in reporters:  # also when every run failed: a failure gets logged too
        reporter.report(document, sys.stdout)
    failures = [run for run in document["runs"] if run.get("status") not in ("ok", "skipped")]
    if document["runs"] and len(failures) == len(document["runs"]):
        # Nothing ran: that is a plain user error (bad subset, missing files, ...), not a result.
        errors = list(dict.fromkeys(str(run["error"]) for run in failures))
        first = errors[0] if len(errors) == 1 else f"all {len(failures)} runs failed, the first with: {errors[0]}"
        raise UserError(f"{first} (results: {output})")
    if args.show_misclassified and "table" in _reporter_names(args):
        _print_misclassified(document)
    if not args.quiet:
        print(f"results: {output}", file=sys.stderr)
    return 1 if failures else 0


def _with_suite(request: Any, args: argparse.Namespace, argv: list[str], catalog: Any) -> Any:
    """``--suite``: the suite's tasks become the datasets; its protocol fills in what the command line leaves out."""
    from xferbench.suites import apply_suite, check_suite, find_suite

    if any(arg == "--dataset" or arg.startswith("--dataset=") for arg in argv):
        raise UserError("--suite and --dataset exclude each other: the suite names its datasets")
    suite, reference = find_suite(args.suite, catalog)
    check_suite(suite, catalog)
    given = {arg[2:].split("=")[0].replace("-", "_") for arg in argv if arg.startswith("--")}
    if not args.report:  # a suite run ends with its leaderboard, in the summary's format
        args.report = f"{args.format},leaderboard"
        if args.format in ("markdown", "csv"):
            args.reporter_opt = [*args.reporter_opt, f"leaderboard.format={args.format}"]
    return apply_suite(request, suite, reference, given)


def _reporter_names(args: argparse.Namespace) -> list[str]:
    return _split_list(args.report) if args.report else [args.format]


def _reporters(catalog: Any, args: argparse.Namespace) -> list[Any]:
    """The reporters of ``--report`` (else ``--format``), each with its ``--reporter-opt NAME.K=V`` options."""
    from xferbench.options import parse_assignments

    names = _reporter_names(args)
    if not names:
        raise UserError("--report is empty; name at least one reporter (see xferbench list reporters)")
    per_reporter: dict[str, list[str]] = {}
    for item in args.reporter_opt:
        name, dot, assignment = item.partition(".")
        if not dot or not name or "=" not in assignment:
            raise UserError(f"--reporter-opt expects NAME.KEY=VALUE, got {item!r}")
        if name not in names:
            raise UserError(f"--reporter-opt {item}: reporter {name!r} is not among --report {','.join(names)}")
        per_reporter.setdefault(name, []).append(assignment)
    reporters = []
    for name in dict.fromkeys(names):
        spec, arg = catalog.reporters.resolve(name)
        options = spec.validate(parse_assignments(per_reporter.get(name), f"--reporter-opt {name}"))
        reporters.append(spec.load_factory()(options))
    return reporters


def _cmd_extract(args: argparse.Namespace) -> int:
    from xferbench.extraction import write_npz
    from xferbench.options import parse_assignments
    from xferbench.plan import validated

    if args.out.suffix != ".npz":
        raise UserError(f"--out {args.out}: the features file must end in .npz")
    executor = _make_executor(args)
    catalog = _catalog(args)
    datasets = _split_tokens(args.dataset, catalog.datasets)
    if len(datasets) != 1:
        raise UserError(f"--dataset {args.dataset!r}: extract takes one dataset")
    (spec, options), = validated(catalog.backbones, [args.backbone],
                                 parse_assignments(args.backbone_opt, "--backbone-opt")).values()
    (_, dataset_options), = validated(catalog.datasets, datasets,
                                      parse_assignments(args.dataset_opt, "--dataset-opt")).values()
    context = _context(args, catalog, seed=args.seed, weights=args.weights, data_dir=args.data_dir)
    dataset = context.load_dataset(datasets[0], dataset_options)
    _, arg = catalog.backbones.resolve(args.backbone)
    backbone = spec.load_factory()(arg, options, context)
    backbone.prepare(context)
    extraction = None
    if args.executor != "local":
        from xferbench.executors.ray import worker_spec
        from xferbench.plan import RunRequest

        request = RunRequest(backbones=[args.backbone], datasets=datasets, heads=["logreg"], methods=["transfer"],
                             backbone_options=parse_assignments(args.backbone_opt, "--backbone-opt"),
                             dataset_options=parse_assignments(args.dataset_opt, "--dataset-opt"))
        with executor:  # None: the cluster could not do it; extracting here says why
            spec = worker_spec(context, request, args.out, False, executor.options)
            with executor.pool(context, spec, args.backbone) as pool:
                extraction = executor.extract(context, pool, backbone, datasets[0], dataset)
    extraction = write_npz(args.out, backbone, dataset, context, extraction=extraction)
    print(f"{args.out}: {extraction.features.shape[0] - len(extraction.failed)} images x "
          f"{extraction.features.shape[1]} features ({extraction.cache_hits} from cache, "
          f"{extraction.computed} computed, {len(extraction.failed)} failed)")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from xferbench.export import export_run

    if args.format == "savedmodel" and (args.quantize != "none" or args.out.suffix == ".tflite"):
        raise UserError("--quantize and a .tflite --out need --format tflite")
    import_tensorflow_quietly()
    context = _context(args, _catalog(args))
    if args.format == "tflite":
        from xferbench.tflite import export_tflite, report_path

        path = export_tflite(args.run, args.out, context, quantize=args.quantize,
                             representative_images=args.representative_images)
        print(f"exported: {path}\nreport: {report_path(path)}")
        return 0
    print(f"exported: {export_run(args.run, args.out, context)}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from xferbench.export import predict
    from xferbench.tflite import predict_tflite

    for image in args.images:
        if not image.is_file():
            raise UserError(f"{image}: no such image file")
    import_tensorflow_quietly()
    predictor = predict_tflite if args.model.suffix == ".tflite" else predict
    for image, top in zip(args.images, predictor(args.model, args.images, top_k=args.top_k), strict=True):
        ranked = ", ".join(f"{label} {prob:.4f}" for label, prob in top)
        print(f"{image}: {ranked}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from xferbench.comparison import compare_methods
    from xferbench.results import load_document

    several = len(args.result) > 1
    if several and args.html is None and not args.report:  # several results files: a leaderboard across them
        args.report = "leaderboard"
        args.reporter_opt = [*args.reporter_opt, f"leaderboard.format={args.format}"] \
            if args.format in ("markdown", "csv") else args.reporter_opt
    catalog = _catalog(args)
    reporters = _reporters(catalog, args)  # names and options checked before any file is read
    documents = [load_document(path) for path in args.result]
    if args.html is not None:
        spec, _ = catalog.reporters.resolve("html")
        html = spec.load_factory()(spec.validate({"output": str(args.html)}))
        html.report_documents(documents, [str(path) for path in args.result])
        if several:
            return 0
    if several:
        from xferbench.leaderboard import merge

        document = merge(documents)
    else:
        document = documents[0]
    if args.target_accuracy is not None or "comparison" not in document:  # older files: computed now
        document["comparison"] = compare_methods(document, args.target_accuracy)
    for reporter in reporters:
        reporter.report(document, sys.stdout)
    if args.plot is not None:
        from xferbench.plots import write_plots

        for path in write_plots(document, args.plot):
            print(f"plot: {path}")
    return 0


def _print_misclassified(document: dict[str, Any]) -> None:
    """Like retrain.py's --print_misclassified_test_images: one line per wrong test image."""
    for run in document["runs"]:
        if run.get("status") != "ok" or run.get("misclassified") is None:
            continue
        head = f" {run['head']}" if run['head'] != '-' else ""
        print(f"misclassified test images, {run['method']}{head} {run['backbone']} on {run['dataset']} "
              f"({run['shots']} shots): {len(run['misclassified'])} of {run['n_test']}")
        for item in run["misclassified"]:
            print(f"  {item['key']}  true {item['true']}  predicted {item['predicted']}")


def _cmd_fetch(args: argparse.Namespace) -> int:
    from xferbench.options import parse_assignments

    catalog = _catalog(args)
    spec = None
    arg = None
    for registry in (catalog.backbones, catalog.datasets):
        name = args.name.partition(":")[0]
        if name in registry:
            spec, arg = registry.resolve(args.name)
            break
    if spec is None:
        catalog.backbones.resolve(args.name)  # raises "unknown ..., did you mean"
    fetcher = spec.load_fetcher()
    if fetcher is None:
        raise UserError(f"{spec.kind} {spec.name!r} has nothing to download")
    options = spec.validate(parse_assignments(args.opt, "--opt"))
    if args.source is not None and not (args.source.is_file() or args.source.is_dir()):
        raise UserError(f"--from {args.source}: no such file")
    if args.source is not None and args.source.is_dir() and not getattr(fetcher, "accepts_folders", False):
        raise UserError(f"--from {args.source} is a folder; {spec.kind} {spec.name!r} imports a file")
    import_tensorflow_quietly()  # only now: names and files are checked in a fraction of a second
    path = fetcher(arg, options, _context(args, catalog, data_dir=args.data_dir), args.source)
    print(f"{spec.name}: ready at {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
