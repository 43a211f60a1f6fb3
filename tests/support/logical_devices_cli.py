"""``xferbench`` on N logical CPU devices: ``python logical_devices_cli.py N ARGS [--then ARGS]...``.

TensorFlow splits the CPU into N logical devices before it initialises (what a machine with N
accelerators looks like to ``tf.distribute``), then the CLI runs once per ``--then``-separated
argument list in this one process (one TensorFlow start-up for all of them).
"""

from __future__ import annotations

import sys

import tensorflow as tf

from xferbench import cli


def main() -> int:
    count, args = int(sys.argv[1]), sys.argv[2:]
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    invocations: list[list[str]] = [[]]
    for arg in args:
        if arg == "--then":
            invocations.append([])
        else:
            invocations[-1].append(arg)
    for invocation in invocations:
        code = cli.main(invocation)
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
