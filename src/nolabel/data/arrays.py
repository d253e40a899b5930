"""Numpy arrays as datasets, and the label encoding every loader shares.

Shapes decide the modality: (N, H, W) and (N, H, W, C) with C in {1, 3} (or
channels-first (N, C, H, W)) are images, uint8 or float in [0, 1] (stored as uint8);
(N, d) is a vector data set (precomputed features, tabular data), one float32 row per
item. ``.npy`` files are memory-mapped, so large feature files cost no memory upfront.
"""
from __future__ import annotations

import os
import zipfile
from typing import Any, Sequence

import numpy as np

from ..errors import NolabelError
from .base import Dataset, array_to_pil, as_path

DATA_KEYS = ("images", "x", "X", "data", "features", "embeddings", "fea")
LABEL_KEYS = ("labels", "y", "Y", "targets", "label", "gnd")


def encode_labels(values: Sequence[Any] | np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Raw labels -> (codes 0..C-1, class names) with classes in sorted order.

    Numbers sort numerically (labels 1..20 become 0..19, named "1".."20"); anything
    else sorts as strings.
    """
    raw = [v.item() if isinstance(v, np.generic) else v for v in np.asarray(values).ravel()]
    if all(isinstance(v, (int, float, bool)) for v in raw) or all(_is_int_text(v) for v in raw):
        numbers = np.asarray([float(v) for v in raw])
        classes, codes = np.unique(numbers, return_inverse=True)
        names = [str(int(c)) if float(c).is_integer() else str(c) for c in classes]
        return codes.astype(np.int64), names
    texts = [v.decode() if isinstance(v, bytes) else str(v) for v in raw]
    classes, codes = np.unique(np.asarray(texts, dtype=str), return_inverse=True)
    return codes.astype(np.int64), [str(c) for c in classes]


def _is_int_text(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    text = value.strip()
    return text.lstrip("+-").isdigit()


def as_vector(row: Any) -> np.ndarray:
    """One item of a vector data set: a 1-D float32 array."""
    return np.asarray(row, dtype=np.float32).ravel()


def to_uint8_images(x: np.ndarray, what: str) -> np.ndarray:
    """uint8 images from uint8, integer 0..255, or float [0, 1] (or 0..255) arrays."""
    if x.dtype == np.uint8:
        return x
    if x.dtype == np.bool_:
        return x.astype(np.uint8) * 255
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise NolabelError(f"{what} has dtype {x.dtype}; images must be uint8 or floats in [0, 1]")
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    if lo < 0 or hi > 255 or not np.isfinite(hi):
        raise NolabelError(f"{what} has values in [{lo:g}, {hi:g}]; images must be uint8 or floats in [0, 1]")
    scale = 255.0 if np.issubdtype(x.dtype, np.floating) and hi <= 1.0 else 1.0
    return np.clip(np.rint(np.asarray(x, dtype=np.float64) * scale), 0, 255).astype(np.uint8)


def array_dataset(
    x: np.ndarray,
    labels: Sequence[Any] | np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    name: str = "array",
    origin: str = "",
) -> Dataset:
    """A dataset from an array: images when (N, H, W[, C]), vectors when (N, d)."""
    x = np.asarray(x) if not isinstance(x, np.ndarray) else x
    n = len(x) if x.ndim else 0
    if x.ndim == 2:
        modality, source, loader = "vector", x, as_vector
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise NolabelError(f"{name} has dtype {x.dtype}; vector data must be numeric")
    elif x.ndim in (3, 4):
        if x.ndim == 4 and x.shape[3] not in (1, 3) and x.shape[1] in (1, 3):
            x = x.transpose(0, 2, 3, 1)  # channels-first -> channels-last
        if x.ndim == 4 and x.shape[3] not in (1, 3):
            raise NolabelError(f"{name} has shape {x.shape}; image arrays need 1 or 3 channels (N, H, W, C)")
        modality, source, loader = "image", to_uint8_images(x, name), array_to_pil
    else:
        raise NolabelError(f"{name} has shape {x.shape}; expected (N, d) vectors or (N, H, W[, C]) images")
    codes = None
    if labels is not None:
        labels = np.asarray(labels).ravel()
        if len(labels) != n:
            raise NolabelError(f"{name}: {len(labels)} labels for {n} items")
        if class_names is not None and np.issubdtype(labels.dtype, np.integer):
            codes = labels.astype(np.int64)
            if codes.size and (codes.min() < 0 or codes.max() >= len(class_names)):
                raise NolabelError(f"{name}: labels run outside 0..{len(class_names) - 1} of its {len(class_names)} class names")
            class_names = [str(c) for c in class_names]
        else:
            codes, class_names = encode_labels(labels)
    width = len(str(max(n - 1, 0)))
    return Dataset(
        name=name,
        modality=modality,
        source=source,
        ids=[f"{i:0{width}d}" for i in range(n)],
        labels=codes,
        class_names=list(class_names) if codes is not None and class_names is not None else None,
        loader=loader,
        origin=origin,
    )


def _load_labels(spec: str | os.PathLike | Sequence[Any] | np.ndarray) -> np.ndarray:
    if isinstance(spec, (str, os.PathLike)):
        path = as_path(spec)
        if not path.is_file():
            raise NolabelError(f"no such labels file: {path}")
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        return np.asarray([line.strip() for line in path.read_text().splitlines() if line.strip()])
    return np.asarray(spec)


def _pick(keys: Sequence[str], wanted: Sequence[str]) -> str | None:
    return next((k for k in wanted if k in keys), None)


def load_array(
    path: str | os.PathLike,
    labels: str | os.PathLike | Sequence[Any] | np.ndarray | None = None,
    key: str | None = None,
    name: str | None = None,
) -> Dataset:
    """A ``.npy`` or ``.npz`` file as a dataset (see the module docstring for shapes).

    ``.npz``: the data is array ``key`` (default: the first of images/x/X/data/features/
    embeddings/fea, or the only array); labels come from labels/y/targets/... and class
    names from ``class_names`` when present. ``.npy``: labels from ``labels`` (an array,
    a ``.npy`` or a text file with one label per line), else ``NAME_labels.npy`` beside it.
    """
    path = as_path(path)
    if not path.is_file():
        raise NolabelError(f"no such file: {path}")
    class_names = None
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                keys = list(archive.files)
                data_key = key or _pick(keys, DATA_KEYS) or (keys[0] if len(keys) == 1 else None)
                if data_key is None or data_key not in keys:
                    raise NolabelError(f"{path} holds arrays {', '.join(keys)}; say which is the data with key=NAME")
                x = archive[data_key]
                label_key = _pick(keys, LABEL_KEYS)
                if labels is None and label_key is not None:
                    labels = archive[label_key]
                if "class_names" in keys:
                    class_names = [str(c) for c in archive["class_names"]]
        else:
            x = np.load(path, mmap_mode="r", allow_pickle=False)
            if labels is None:
                beside = [path.with_name(f"{path.stem}_{s}.npy") for s in ("labels", "label")]
                labels = next((str(p) for p in beside if p.is_file()), None)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise NolabelError(f"cannot read {path} as a numpy array ({exc})") from None
    label_array = None if labels is None else _load_labels(labels)
    return array_dataset(x, label_array, class_names, name=name or path.stem, origin=str(path))

