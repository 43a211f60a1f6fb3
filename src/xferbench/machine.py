"""Facts about the machine and the software, recorded with every result."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def gpus() -> list[str]:
    """GPU names as TensorFlow sees them; only call once TensorFlow is needed anyway."""
    import tensorflow as tf

    found = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        found.append(details.get("device_name", device.name))
    return found


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def native_bfloat16() -> bool:
    """Whether the CPU computes bfloat16 natively; elsewhere TensorFlow emulates it, no faster than float32."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def machine_info(with_gpus: bool = True) -> dict[str, Any]:
    return {
        "cpu": cpu_name(),
        "cores": usable_cores(),
        "cpu_bf16": native_bfloat16(),
        "gpu": gpus() if with_gpus else [],
        "platform": platform.platform(),
    }


def versions() -> dict[str, str | None]:
    return {
        "python": sys.version.split()[0],
        "xferbench": package_version("xferbench"),
        "tensorflow": package_version("tensorflow"),
        "keras": package_version("keras"),
        "numpy": package_version("numpy"),
    }
