"""Stable train/val/test assignment from a file name alone (TensorFlow's ``_nohash_`` rule).

The rule comes from TensorFlow's image_retraining/retrain.py (``create_image_lists``) and
speech_commands/input_data.py (``which_set``)::

    MAX_NUM_IMAGES_PER_CLASS = 2 ** 27 - 1  # ~134M
    hash_name = re.sub(r'_nohash_.*$', '', file_name)
    hash_name_hashed = hashlib.sha1(compat.as_bytes(hash_name)).hexdigest()
    percentage_hash = ((int(hash_name_hashed, 16) % (MAX_NUM_IMAGES_PER_CLASS + 1))
                       * (100.0 / MAX_NUM_IMAGES_PER_CLASS))
    if percentage_hash < validation_percentage: validation
    elif percentage_hash < (testing_percentage + validation_percentage): testing
    else: training

We hash the *base* name, as speech_commands' ``which_set`` does. retrain.py passes the full
glob path instead, which makes its split depend on where the folder happens to live; hashing
the base name keeps a file in the same split on every machine, and adding, removing or
skipping other files never moves it.
"""

from __future__ import annotations

import hashlib
import os
import re

from xferbench.data import Split
from xferbench.errors import OptionError

MAX_NUM_IMAGES_PER_CLASS = 2**27 - 1
_NOHASH = re.compile(r"_nohash_.*$")


def hash_percentage(file_name: str) -> float:
    """Where ``file_name`` falls in [0, 100]: sha1 of its base name up to ``_nohash_``."""
    base = os.path.basename(file_name.replace("\\", "/"))
    hash_name = _NOHASH.sub("", base)
    hashed = hashlib.sha1(hash_name.encode("utf-8")).hexdigest()
    return (int(hashed, 16) % (MAX_NUM_IMAGES_PER_CLASS + 1)) * (100.0 / MAX_NUM_IMAGES_PER_CLASS)


def which_split(file_name: str, test_pct: float = 10, val_pct: float = 10) -> Split:
    """``"train"``, ``"val"`` or ``"test"`` for ``file_name``; depends on nothing but its name."""
    check_percentages(test_pct, val_pct)
    pct = hash_percentage(file_name)
    if pct < val_pct:
        return "val"
    if pct < test_pct + val_pct:
        return "test"
    return "train"


def check_percentages(test_pct: float, val_pct: float, owner: str = "split") -> None:
    """Raise OptionError unless both are in [0, 100] and leave something to train on."""
    for name, value in (("test_pct", test_pct), ("val_pct", val_pct)):
        if not 0 <= value <= 100:
            raise OptionError(f"{owner}: option {name}={value} must be between 0 and 100")
    if test_pct + val_pct >= 100:
        raise OptionError(f"{owner}: test_pct + val_pct = {test_pct + val_pct:g} leaves no training images; "
                          f"keep their sum below 100")
