"""MATLAB ``.mat`` files in the ``fea``/``gnd`` style of COIL-20, ORL, Yale, USPS, ...

``fea`` holds one sample per column (pixels x N, as in the shared COIL20.mat and
orl.mat) or per row (N x pixels); ``gnd`` holds the labels (often 1-based; they are
encoded to 0..C-1 in sorted order, class names keep the original values). The sample
axis is the one whose length equals ``len(gnd)`` (columns when both do). A sample of
length s*s is an s x s grayscale image, of length 3*s*s an s x s x 3 colour image,
reshaped in MATLAB's column-major order (``order="F"``; pass ``order="C"`` for files
written from row-major code); any other length makes a vector data set. Images may
be uint8 or float in [0, 1]; they are stored as uint8.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse

from ..errors import NolabelError
from .arrays import array_dataset
from .base import Dataset, as_path

FEATURE_KEYS = ("fea", "X", "x", "data", "features", "images")
LABEL_KEYS = ("gnd", "Y", "y", "labels", "label", "gt", "target", "targets")


def _read_mat(path: Path) -> dict:
    with open(path, "rb") as f:
        header = f.read(128)
    if header.startswith(b"MATLAB 7.3"):
        raise NolabelError(
            f"{path} is a MATLAB v7.3 (HDF5) file, which scipy cannot read; re-save it in MATLAB with save(FILE, 'fea', 'gnd', '-v7')"
        )
    try:
        return scipy.io.loadmat(path)
    except (ValueError, TypeError, OSError, scipy.io.matlab.MatReadError) as exc:
        raise NolabelError(f"cannot read {path} as a MATLAB file ({exc})") from None


def image_side(pixels: int) -> tuple[int, ...] | None:
    """(s, s) when ``pixels == s*s``, (s, s, 3) when ``pixels == 3*s*s``, else None."""
    side = math.isqrt(pixels)
    if side > 1 and side * side == pixels:
        return (side, side)
    side = math.isqrt(pixels // 3)
    if side > 1 and pixels % 3 == 0 and 3 * side * side == pixels:
        return (side, side, 3)
    return None


def unflatten(samples: np.ndarray, shape: tuple[int, ...], order: str = "F") -> np.ndarray:
    """(N, prod(shape)) rows -> (N, *shape) images, each row read in ``order`` ("F" or "C")."""
    n = len(samples)
    if order == "C":
        return samples.reshape((n, *shape))
    if order != "F":
        raise NolabelError(f"order must be 'F' (column-major, MATLAB) or 'C' (row-major), got {order!r}")
    # Column-major: the first axis varies fastest, i.e. a C-order reshape of the reversed shape.
    reversed_axes = tuple(range(len(shape), 0, -1))
    return np.ascontiguousarray(samples.reshape((n, *shape[::-1])).transpose((0, *reversed_axes)))


def load_mat(
    path: str | os.PathLike,
    image_shape: tuple[int, ...] | None = None,
    order: str = "F",
    features_key: str | None = None,
    labels_key: str | None = None,
    name: str | None = None,
) -> Dataset:
    """A ``.mat`` file with a feature matrix (``fea``) and optional labels (``gnd``)."""
    path = as_path(path)
    if not path.is_file():
        raise NolabelError(f"no such file: {path}")
    content = _read_mat(path)
    keys = [k for k in content if not k.startswith("__")]
    fkey = features_key or next((k for k in FEATURE_KEYS if k in content), None)
    if fkey is None or fkey not in content:
        raise NolabelError(f"{path} has no feature matrix (variables: {', '.join(keys)}); name it with features_key=NAME")
    fea = content[fkey]
    fea = fea.toarray() if scipy.sparse.issparse(fea) else np.asarray(fea)
    if fea.ndim != 2:
        raise NolabelError(f"{path}: {fkey} has shape {fea.shape}; expected a 2-D samples x features matrix")
    lkey = labels_key or next((k for k in LABEL_KEYS if k in content), None)
    if labels_key is not None and labels_key not in content:
        raise NolabelError(f"{path} has no variable {labels_key!r} (variables: {', '.join(keys)})")
    gnd = np.asarray(content[lkey]).ravel() if lkey is not None else None

    if gnd is not None:
        if fea.shape[1] == len(gnd):
            samples = fea.T
        elif fea.shape[0] == len(gnd):
            samples = fea
        else:
            raise NolabelError(f"{path}: {fkey} is {fea.shape[0]} x {fea.shape[1]} but {lkey} has {len(gnd)} labels")
    else:
        columns = image_side(fea.shape[0]) is not None and image_side(fea.shape[1]) is None
        samples = fea.T if columns else fea

    shape = tuple(image_shape) if image_shape is not None else image_side(samples.shape[1])
    if shape is not None:
        if math.prod(shape) != samples.shape[1]:
            raise NolabelError(f"{path}: image_shape {shape} does not hold {samples.shape[1]} values per sample")
        data = unflatten(samples, shape, order)
    else:
        data = np.asarray(samples, dtype=np.float32)
    return array_dataset(data, gnd, name=name or path.stem, origin=str(path))
