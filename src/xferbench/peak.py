"""What the hardware can do: CPU features, measured peak matmul GFLOP/s, and a run's MFU.

``xferbench machine`` prints it. The peak is measured once per machine (a second or two of
square matrix products in float32 and bfloat16, on the CPU and on each GPU TensorFlow sees) and
cached in the cache folder (or ``$XFERBENCH_PEAK_DIR``) under a key made of the CPU model, the cores, the GPUs and the
TensorFlow version; ``--remeasure`` measures again. A run's MFU (model FLOPs utilisation) is
the achieved GFLOP/s of its forward passes (FLOPs per image x images per second of the network
alone) divided by the peak of its precision on the device that ran them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time
import weakref
from pathlib import Path
from typing import Any

from xferbench import machine

#: /proc/cpuinfo flags worth knowing for inference speed, by what they give
CPU_FEATURES = {
    "avx2": ("avx2", "fma"),
    "avx512": ("avx512f",),
    "vnni": ("avx512_vnni", "avx_vnni", "amx_int8"),
    "bf16": ("avx512_bf16", "avx_ne_convert", "amx_bf16"),
    "amx": ("amx_tile", "amx_bf16", "amx_int8"),
}
PRECISIONS = ("float32", "bfloat16")
#: square matrix sizes tried; the best rate counts (small ones fit the caches, large ones amortise overhead)
_SIZES = (512, 1024)
_SECONDS_PER_SIZE = 0.25


def cpu_features() -> dict[str, list[str]]:
    """Which of :data:`CPU_FEATURES` the CPU has, with the flags that show it."""
    flags = machine.cpu_flags()
    return {name: [f for f in wanted if f in flags] for name, wanted in CPU_FEATURES.items()}


def tensorflow_build() -> dict[str, Any]:
    """TensorFlow's version and build facts (CUDA, oneDNN, compiler), as ``tf.sysconfig`` tells them."""
    import tensorflow as tf

    info = dict(tf.sysconfig.get_build_info())
    return {"version": tf.__version__, "git_version": tf.version.GIT_VERSION,
            "cuda": info.get("cuda_version"), "cudnn": info.get("cudnn_version"),
            "is_cuda_build": bool(info.get("is_cuda_build")), "onednn": _onednn_enabled()}


def _onednn_enabled() -> bool | None:
    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return None


def measure_matmul_gflops(precision: str, device: str = "/CPU:0") -> float:
    """The best GFLOP/s of square matrix products in ``precision`` on ``device`` (about half a second)."""
    import tensorflow as tf

    dtype = {"float32": tf.float32, "bfloat16": tf.bfloat16}[precision]
    best = 0.0
    with tf.device(device):
        for n in _SIZES:
            a = tf.cast(tf.random.stateless_uniform((n, n), seed=(1, 2)), dtype)
            b = tf.cast(tf.random.stateless_uniform((n, n), seed=(3, 4)), dtype)
            tf.linalg.matmul(a, b).numpy()  # warm-up: kernel selection, thread pool start
            deadline = time.perf_counter() + _SECONDS_PER_SIZE
            while True:
                started = time.perf_counter()
                tf.linalg.matmul(a, b)[0, 0].numpy()  # one element back: the product is done
                seconds = time.perf_counter() - started
                best = max(best, 2.0 * n ** 3 / seconds / 1e9)
                if started + seconds >= deadline:
                    break
    return best


def machine_key() -> str:
    """What the cached peak belongs to: CPU model, usable cores, GPUs and TensorFlow version."""
    parts = [machine.cpu_name(), str(machine.usable_cores()), ",".join(_gpus()),
             str(machine.package_version("tensorflow"))]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _gpus() -> list[str]:
    try:
        return machine.gpus()
    except Exception:  # GPU discovery is informative only
        return []


#: where the peak is cached instead of ``<cache dir>/machine`` (one folder for several cache folders)
PEAK_DIR_ENV = "XFERBENCH_PEAK_DIR"


def peak_file(cache_dir: Path) -> Path:
    folder = os.environ.get(PEAK_DIR_ENV) or Path(cache_dir) / "machine"
    return Path(folder) / f"peak-{machine_key()}.json"


def measure_peak() -> dict[str, Any]:
    """Peak GFLOP/s per precision on the CPU and on each GPU."""
    started = time.perf_counter()
    peak: dict[str, Any] = {"cpu": {p: measure_matmul_gflops(p) for p in PRECISIONS}, "gpu": {}}
    for index, name in enumerate(_gpus()):
        peak["gpu"][f"{index}: {name}"] = {p: measure_matmul_gflops(p, f"/GPU:{index}") for p in PRECISIONS}
    peak["measured"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    peak["seconds"] = round(time.perf_counter() - started, 2)
    return peak


def load_peak(cache_dir: Path, remeasure: bool = False) -> dict[str, Any]:
    """The cached peak of this machine, measured (and cached, atomically) when there is none or on ``remeasure``."""
    from xferbench.atomic import atomic_write_text

    path = peak_file(cache_dir)
    if not remeasure:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
    peak = measure_peak()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(peak, indent=2) + "\n")
    except OSError:  # a read-only cache: measured again next time, nothing lost
        pass
    return peak


def peak_for(peak: dict[str, Any], precision: str) -> float | None:
    """The peak a backbone's forward passes compete with: the first GPU's if there is one, else the CPU's."""
    devices = peak.get("gpu") or {}
    table = next(iter(devices.values())) if devices else peak.get("cpu") or {}
    value = table.get(precision or "float32")
    return float(value) if value else None


# -- per run -------------------------------------------------------------------------------------
_FLOPS: weakref.WeakKeyDictionary[Any, float | None] = weakref.WeakKeyDictionary()


def backbone_flops(backbone: Any) -> float | None:
    """``backbone.flops_per_image()``, counted once per backbone; None when it cannot say (or fails)."""
    if backbone not in _FLOPS:
        try:
            value = backbone.flops_per_image()
        except Exception:  # a plugin backbone whose graph cannot be counted still runs
            value = None
        _FLOPS[backbone] = float(value) if value else None
    return _FLOPS[backbone]


def utilisation(backbone: Any, forward_images_per_second: float | None, cache_dir: Path) -> dict[str, Any]:
    """The record fields ``gflops_per_image``, ``achieved_gflops_per_second`` and ``mfu`` of a run."""
    flops = backbone_flops(backbone)
    out: dict[str, Any] = {"gflops_per_image": None if flops is None else flops / 1e9,
                           "achieved_gflops_per_second": None, "mfu": None}
    if flops is None or not forward_images_per_second:
        return out
    achieved = flops * forward_images_per_second / 1e9
    out["achieved_gflops_per_second"] = achieved
    peak = peak_for(load_peak(cache_dir), backbone.precision())
    if peak:
        out["mfu"] = achieved / peak
    return out


def describe(cache_dir: Path, remeasure: bool = False) -> dict[str, Any]:
    """Everything ``xferbench machine`` prints, as data."""
    peak = load_peak(cache_dir, remeasure)
    return {"cpu": machine.cpu_name(), "cores": machine.usable_cores(), "cpu_features": cpu_features(),
            "gpu": _gpus(), "tensorflow": tensorflow_build(), "peak_gflops": peak,
            "peak_file": str(peak_file(cache_dir))}


def print_machine(cache_dir: Path, remeasure: bool, as_json: bool) -> int:
    """``xferbench machine``."""
    info = describe(cache_dir, remeasure)
    if as_json:
        print(json.dumps(info, indent=2))
        return 0
    features = info["cpu_features"]
    tf_build = info["tensorflow"]
    peak = info["peak_gflops"]
    lines = [f"cpu: {info['cpu']} ({info['cores']} usable cores)",
             "cpu features: " + ", ".join(f"{name} {'yes (' + ' '.join(flags) + ')' if flags else 'no'}"
                                          for name, flags in features.items()),
             f"gpu: {', '.join(info['gpu']) or 'none'}",
             f"tensorflow {tf_build['version']} ({tf_build['git_version']}), "
             f"{'CUDA ' + str(tf_build['cuda']) if tf_build['is_cuda_build'] else 'CPU build'}, "
             f"oneDNN {'on' if tf_build['onednn'] else 'off' if tf_build['onednn'] is False else 'unknown'}"]
    for device, table in [("cpu", peak.get("cpu") or {}), *(peak.get("gpu") or {}).items()]:
        lines.append(f"peak matmul {device}: " + ", ".join(f"{p} {table[p]:.1f} GFLOP/s" for p in PRECISIONS
                                                           if p in table))
    lines.append(f"peak measured {peak.get('measured')} in {peak.get('seconds')} s, cached in "
                 f"{info['peak_file']} (--remeasure measures again)")
    print("\n".join(lines))
    return 0
