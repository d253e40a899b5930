"""Per-item metadata stored beside an embeddings file: ids, labels, class names.

``<stem>.items.npz`` holds ``ids`` (str), and when the data set has them ``labels``
(int64) and ``class_names`` (str). Labels are kept only to *score* clusterings.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data.base import Dataset
from .errors import NolabelError
from .feature_store import sidecar_path
from .io import save_npz


@dataclass
class Items:
    ids: np.ndarray
    labels: np.ndarray | None = None
    class_names: list[str] | None = None


def items_path(features_path: str | Path) -> Path:
    path = Path(features_path)
    return path.with_name(path.name.removesuffix(".npy") + ".items.npz")


def save_items(features_path: str | Path, dataset: Dataset) -> Path:
    arrays: dict[str, np.ndarray] = {"ids": np.asarray(dataset.ids, dtype=str)}
    if dataset.labels is not None:
        arrays["labels"] = np.asarray(dataset.labels, dtype=np.int64)
    if dataset.class_names is not None:
        arrays["class_names"] = np.asarray(dataset.class_names, dtype=str)
    path = items_path(features_path)
    save_npz(path, **arrays)
    return path


def load_items(features_path: str | Path) -> Items:
    """The items beside ``features_path``; plain embeddings made elsewhere (no sidecar, no
    index) get their row numbers as ids and no labels."""
    path = items_path(features_path)
    if not path.exists() and Path(features_path).is_file() and not sidecar_path(features_path).exists():
        rows = np.load(features_path, mmap_mode="r", allow_pickle=False).shape[0]
        return Items(ids=np.arange(rows).astype(str))
    if not path.exists():
        raise NolabelError(f"no item index beside {features_path} (expected {path.name}); re-run `nolabel embed`")
    with np.load(path, allow_pickle=False) as f:
        return Items(
            ids=f["ids"],
            labels=f["labels"] if "labels" in f else None,
            class_names=[str(c) for c in f["class_names"]] if "class_names" in f else None,
        )
