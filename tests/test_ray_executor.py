"""``--executor ray`` on a real local Ray cluster of two nodes with one CPU each (ray.cluster_utils.Cluster).

The same sweep as ``local`` gives the same rows in the same order with the same accuracies and
bitwise the same features; a worker killed in the middle of an extraction shard, or a node that
leaves, costs a retry and nothing else; a plugin error is recorded once, a worker that dies at
every attempt is retried a bounded number of times. Work is held at a known point (a backbone
that waits for a file) rather than raced against the clock.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from support.cli import REPO, assert_one_line_error
from xferbench import cache_admin
from xferbench.bottleneck_cache import BottleneckCache, image_digest

ray = pytest.importorskip("ray")

TESTS = REPO / "tests"
REQUEST = dict(backbones=["block_means"], datasets=["digits:0-3"], heads=["logreg", "softmax"],
               methods=["transfer", "exploding"], shots=[5, None], head_options={"steps": "200"})


@pytest.fixture(scope="module")
def cluster():
    """A head node without CPUs (the driver) and two worker nodes of one CPU; shut down whatever happens."""
    from ray.cluster_utils import Cluster

    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(TESTS), *([saved] if saved else [])])
    cluster = None
    try:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, include_dashboard=False)
        yield cluster
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def sweep(folder: Path, executor=None, backbone_options=None, **request) -> dict:
    import support.ray_plugin as plugin
    from xferbench.context import RunContext
    from xferbench.plugin_manager import load_catalog
    from xferbench.progress import Progress
    from xferbench.runner import Runner, RunRequest

    folder.mkdir(parents=True, exist_ok=True)
    catalog = load_catalog(extra_plugins=[("raytest", plugin)])
    context = RunContext(catalog=catalog, cache_dir=folder / "cache", progress=Progress(quiet=True))
    run_request = RunRequest(**{**REQUEST, **request}, backbone_options=backbone_options or {})
    return Runner(run_request, context, folder / "results.json", executor=executor).run()


@pytest.fixture(scope="module")
def local(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("local")
    return {"document": sweep(folder, method_options={"count_file": str(folder / "count")}), "folder": folder}


def ray_executor(**options):
    from xferbench.executors import make_executor

    return make_executor("ray", None, {k: str(v) for k, v in options.items()})


def same_results(ray_doc: dict, local_doc: dict) -> None:
    """The same rows in the same order, the same statuses, accuracies and extraction counts."""
    ours = [run for run in ray_doc["runs"] if run["method"] != "dying"]
    assert [(r["backbone"], r["dataset"], r["method"], r["head"], r["shots"]) for r in ours] == \
        [(r["backbone"], r["dataset"], r["method"], r["head"], r["shots"]) for r in local_doc["runs"]]
    for mine, theirs in zip(ours, local_doc["runs"], strict=True):
        for field in ("status", "test_accuracy", "val_accuracy", "per_class_accuracy", "confusion_matrix",
                      "n_train", "n_test", "extracted", "cache_hits"):
            assert mine[field] == theirs[field], (field, mine["method"], mine["head"], mine["shots"])
        assert (mine["error"] or "").split(" (raised by")[0] == (theirs["error"] or "").split(" (raised by")[0]


def cached_vectors(cache_dir: Path) -> dict[str, bytes]:
    """Every bottleneck of digits:0-3 in ``cache_dir``, as bytes, checked on read; no stray files."""
    import support.ray_plugin as plugin
    from xferbench.context import RunContext
    from xferbench.plugin_manager import load_catalog

    context = RunContext(catalog=load_catalog(extra_plugins=[("raytest", plugin)]), cache_dir=cache_dir)
    dataset = context.load_dataset("digits:0-3")
    cache = BottleneckCache(cache_dir / "bottlenecks", plugin.BlockMeans(None, {}, None).cache_namespace(), 32)
    vectors = {}
    for example in dataset.examples:
        digest = image_digest(dataset.read(example))
        vector = cache.get(digest)
        assert vector is not None, f"lost: {example.key}"
        vectors[digest] = vector.tobytes()
    assert cache.corrupt_entries == 0
    cache.close()
    # The pack store, checked record by record as `xferbench cache verify` does: nothing torn, corrupt,
    # left half-written or duplicated (a shard retried after its worker died skips what that worker wrote):
    # every key is in exactly one record.
    report = cache_admin.verify(cache_dir)
    assert not report.corrupt and not report.temp_files and not report.torn_packs, report
    assert report.duplicates == 0 and report.checked == len(vectors), report
    return vectors


def test_a_sweep_on_two_nodes_matches_local(cluster, local, tmp_path):
    count = tmp_path / "count"
    document = sweep(tmp_path, ray_executor(max_retries=1), methods=["transfer", "exploding", "dying"],
                     method_options={"count_file": str(count)})
    from xferbench.results import validate_document

    validate_document(document)
    same_results(document, local["document"])
    assert [r["method"] for r in document["runs"]] == ["transfer", "transfer", "exploding", "dying"] * 2
    dying = [run for run in document["runs"] if run["method"] == "dying"]
    assert all(run["status"] == "error" and "the Ray worker running it died (2 attempts)" in run["error"]
               for run in dying)
    # the plugin error ran once per run (not retried); the dying method twice per run (1 retry), then gave up
    assert len(count.read_text().splitlines()) == 2 + 2 * 2
    executor = document["executor"]
    assert executor["name"] == "ray" and executor["ray_version"] == ray.__version__
    assert executor["nodes"] == 3 and executor["nodes_used"] == 2 and executor["workers_used"] >= 2
    assert local["document"]["executor"] == {"name": "local"}
    assert cached_vectors(tmp_path / "cache") == cached_vectors(local["folder"] / "cache")


def test_int8_extraction_on_the_cluster_matches_local(cluster, tmp_path):
    # precision=int8: each actor loads (or converts once, into the shared cache) the same int8 model.
    request = dict(backbones=["lenet5"], heads=["logreg"], methods=["transfer"], shots=[None], head_options={},
                   backbone_options={"precision": "int8", "pretrain_epochs": "1"})
    here = sweep(tmp_path / "local", **request)
    there = sweep(tmp_path / "ray", ray_executor(), **request)
    assert [r["status"] for r in there["runs"]] == [r["status"] for r in here["runs"]] == ["ok"]
    for field in ("precision", "test_accuracy", "val_accuracy", "confusion_matrix", "extracted"):
        assert there["runs"][0][field] == here["runs"][0][field], field
    assert there["runs"][0]["precision"] == "int8"


def test_without_a_shared_cache_the_driver_caches_what_the_workers_return(cluster, local, tmp_path):
    document = sweep(tmp_path, ray_executor(shared_cache="no"), methods=["transfer"])
    same_results(document, {"runs": [r for r in local["document"]["runs"] if r["method"] == "transfer"]})
    assert cached_vectors(tmp_path / "cache") == cached_vectors(local["folder"] / "cache")


def test_an_executor_that_keeps_its_workers_serves_the_next_sweep_with_them(cluster, local, tmp_path):
    """``keep_workers``: the second sweep (another cache) runs on the first sweep's actors, and writes into its own
    cache; ``close()`` frees their CPUs for the rest of the module."""
    executor = ray_executor(keep_workers="true")
    try:
        first = sweep(tmp_path / "first", executor, methods=["transfer"])
        second = sweep(tmp_path / "second", executor, methods=["transfer"])
    finally:
        executor.close()
    transfer = {"runs": [r for r in local["document"]["runs"] if r["method"] == "transfer"]}
    same_results(first, transfer)
    same_results(second, transfer)
    # workers_used counts the executor's worker processes so far: the second sweep started none
    assert second["executor"]["workers_used"] == first["executor"]["workers_used"] >= 1
    assert cached_vectors(tmp_path / "second" / "cache") == cached_vectors(local["folder"] / "cache")


def held_sweep(tmp_path: Path, stop_the_holder) -> dict:
    """The sweep with its second extraction batch held; ``stop_the_holder(pid, node_id)``, then released."""
    hold = tmp_path / "hold"
    hold.mkdir()
    result: dict = {}

    def run() -> None:
        try:
            result["document"] = sweep(tmp_path, ray_executor(max_retries=2), methods=["transfer"],
                                       backbone_options={"hold_dir": str(hold)})
        except BaseException as exc:  # handed to the test's thread
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 300  # a bound for a broken build, not a synchronisation
        while not list(hold.glob("held-*")) and thread.is_alive():
            assert time.monotonic() < deadline, "no extraction worker reached the hold point"
            time.sleep(0.05)
        assert "error" not in result, result.get("error")
        marker = sorted(hold.glob("held-*"))[0]
        stop_the_holder(int(marker.name.removeprefix("held-")), marker.read_text())
    finally:
        (hold / "release").write_text("go on\n")
        thread.join(timeout=600)
    assert not thread.is_alive()
    if "error" in result:
        raise result["error"]
    return result["document"]


def test_a_worker_killed_in_the_middle_of_a_shard_is_retried_and_nothing_is_lost(cluster, local, tmp_path):
    document = held_sweep(tmp_path, lambda pid, node: os.kill(pid, signal.SIGKILL))
    same_results(document, {"runs": [r for r in local["document"]["runs"] if r["method"] == "transfer"]})
    assert cached_vectors(tmp_path / "cache") == cached_vectors(local["folder"] / "cache")


def test_a_node_that_leaves_in_the_middle_of_a_shard_costs_a_retry(cluster, local, tmp_path):
    """Last in this module: it removes one of the cluster's two worker nodes."""

    def remove_node(pid: int, node_id: str) -> None:
        (node,) = [node for node in cluster.worker_nodes if node.node_id == node_id]
        cluster.remove_node(node, allow_graceful=False)
        # A machine that leaves takes its processes with it; a worker orphaned by its raylet could
        # otherwise go on for a moment once released (as on a partitioned node).
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    document = held_sweep(tmp_path, remove_node)
    same_results(document, {"runs": [r for r in local["document"]["runs"] if r["method"] == "transfer"]})
    assert cached_vectors(tmp_path / "cache") == cached_vectors(local["folder"] / "cache")
    # The head learns of the lost node through missed heartbeats: wait for that (a hang guard, not a timing).
    deadline = time.monotonic() + 120
    while sum(1 for node in ray.nodes() if node["Alive"]) != 2:
        assert time.monotonic() < deadline, f"the cluster still lists the removed node as alive: {ray.nodes()}"
        time.sleep(0.5)


def test_executor_options_are_checked_before_any_work(cli):
    assert_one_line_error(cli("run", "--executor", "ray", "--executor-opt", "cpus_per_rn=2"),
                          "unknown option 'cpus_per_rn'", "did you mean 'cpus_per_run'")
    assert_one_line_error(cli("run", "--executor", "dask"), "--executor 'dask'", "local, ray")
    assert_one_line_error(cli("run", "--executor-opt", "cpus_per_run=2"), "executor options are for --executor ray")


def test_without_ray_installed_the_error_names_the_install_command(cli, tmp_path):
    fake = tmp_path / "no-ray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    result = cli("run", "--executor", "ray", env={"PYTHONPATH": str(fake.parent)})
    assert_one_line_error(result, "--executor ray needs Ray", 'pip install "xferbench[ray]"')


@pytest.mark.slow
def test_the_cli_runs_resumes_and_extracts_on_the_cluster_like_local(cluster, cli, tmp_path):
    """lenet5 (TensorFlow) through the command line: the same features bitwise, the same accuracy."""
    address = ["--executor", "ray", "--ray-address", cluster.address]
    common = ["--backbone", "lenet5", "--dataset", "digits:5-9", "--seed", "3"]
    local_npz, ray_npz = tmp_path / "local.npz", tmp_path / "ray.npz"
    assert cli("extract", *common[:-2], "--out", str(local_npz)).returncode == 0
    extracted = cli("extract", *common[:-2], "--out", str(ray_npz), *address)
    assert extracted.returncode == 0, extracted.stderr
    with np.load(local_npz) as a, np.load(ray_npz) as b:
        assert a["features"].tobytes() == b["features"].tobytes() and (a["paths"] == b["paths"]).all()
    run = ["run", *common, "--compare", "transfer", "--head", "logreg", "--output"]
    assert cli(*run, str(tmp_path / "local.json")).returncode == 0
    ran = cli(*run, str(tmp_path / "ray.json"), *address)
    assert ran.returncode == 0, ran.stderr
    mine, theirs = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("ray", "local"))
    assert [r["test_accuracy"] for r in mine["runs"]] == [r["test_accuracy"] for r in theirs["runs"]]
    assert mine["executor"]["name"] == "ray" and mine["executor"]["address"] == cluster.address
    resumed = cli("run", "--resume", str(tmp_path / "ray.json"), *address)
    assert resumed.returncode == 0, resumed.stderr
    assert "kept 1 finished runs" in resumed.stderr
