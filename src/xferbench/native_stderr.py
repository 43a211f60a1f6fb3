"""Native libraries' chatter (TensorFlow's C++ start-up, the TFLite converter, LiteRT's delegates) kept off the terminal.

They write to file descriptor 2 directly, past ``sys.stderr`` and ``TF_CPP_MIN_LOG_LEVEL``, so only pointing
that descriptor elsewhere for the duration silences them. Errors still surface: as Python exceptions.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the block (Python's own stderr is flushed first)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
