"""Built-in xferbench plugin: the data shipped inside the package, for the no-network default.

``data/`` (built from ../shared/data by ``scripts/build_embedded_data.py``, checked by
``data/SHA256SUMS``) holds:

- ``flower_photos_mini/``: 500 of TensorFlow's flower photos (100 per class, CC-BY 2.0, credits
  in its LICENSE.txt), shrunk to at most 160 px; registered here as the dataset ``flowers-mini``;
- ``weights/``: the ImageNet weights of ``MobileNet(alpha=0.25, include_top=False)``
  (Apache-2.0), which ``keras:MobileNet`` with ``alpha=0.25`` loads when no ``--weights`` is given.

Nothing heavy is imported here, so ``xferbench list`` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable

from xferbench import DatasetSpec, hookimpl
from xferbench_folder import _SPLIT_OPTIONS


@hookimpl
def xferbench_register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    # flowers' own split options, so both sets split alike (retrain.py's file-name rule)
    register(DatasetSpec(
        "flowers-mini", "500 of TensorFlow's flower photos (100 per class, 5 classes), at most 160 px, "
                        "shipped in the package: no download (CC-BY 2.0)",
        factory="xferbench_embedded.flowers_mini:create", options=_SPLIT_OPTIONS,
    ))
