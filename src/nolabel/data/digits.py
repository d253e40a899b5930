"""scikit-learn's handwritten digits: the data set that ships with the code.

1,797 grayscale 8x8 images of the digits 0..9 (the UCI optical-recognition test set
bundled inside scikit-learn, so no download). Pixel counts 0..16 are scaled to uint8
0..255 (``rint(v * 255 / 16)``).
"""
from __future__ import annotations

import numpy as np

from .base import Dataset, array_to_pil


def load_digits() -> Dataset:
    """The 1,797 8x8 digit images (image modality) with labels 0..9."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    n = len(images)
    return Dataset(
        name="digits",
        modality="image",
        source=images,
        ids=[f"{i:04d}" for i in range(n)],
        labels=np.asarray(bunch.target, dtype=np.int64),
        class_names=[str(d) for d in range(10)],
        loader=array_to_pil,
        origin="sklearn.datasets.load_digits",
    )
