"""Which weights file ``keras:<Application>`` loads when the user names none.

Lookup order: ``--weights FILE``; then a file shipped in the package (today the ImageNet
weights of MobileNet with ``alpha=0.25``, in :mod:`xferbench_embedded`); then Keras's own
ImageNet download (cached in ``~/.keras/models``).
"""

from __future__ import annotations

from pathlib import Path


def packaged_weights(application: str, alpha: float | None) -> Path | None:
    """The ImageNet no-top weights of ``application`` at ``alpha`` shipped with xferbench, or None."""
    try:
        from xferbench_embedded.files import keras_weights
    except ImportError:  # a trimmed install without the embedded data
        return None
    return keras_weights(application, alpha)
