"""Cluster assignments as artifacts: ``.npz`` (clusters, confidences, probabilities)
plus a human-readable CSV of ``item_id, cluster, confidence``."""
from __future__ import annotations

import csv
import io as _io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import NolabelError
from .io import atomic_path, save_npz


@dataclass
class Assignment:
    clusters: np.ndarray  # (N,) int64
    confidences: np.ndarray  # (N,) float32, max probability
    probabilities: np.ndarray | None = None  # (N, K) float32
    ids: np.ndarray | None = None  # (N,) str

    @classmethod
    def from_proba(cls, probabilities: np.ndarray, ids: np.ndarray | None = None) -> "Assignment":
        p = np.asarray(probabilities, dtype=np.float32)
        return cls(clusters=p.argmax(axis=1).astype(np.int64), confidences=p.max(axis=1), probabilities=p, ids=ids)

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (.npz) and the CSV beside it (same stem)."""
        path = Path(path)
        arrays = {"clusters": self.clusters, "confidences": self.confidences}
        if self.probabilities is not None:
            arrays["probabilities"] = self.probabilities
        if self.ids is not None:
            arrays["ids"] = np.asarray(self.ids, dtype=str)
        save_npz(path, **arrays)
        ids = self.ids if self.ids is not None else np.arange(len(self.clusters)).astype(str)
        buf = _io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["item_id", "cluster", "confidence"])
        writer.writerows(zip(ids, self.clusters.tolist(), np.round(self.confidences, 6).tolist()))
        with atomic_path(path.with_suffix(".csv")) as tmp:
            tmp.write_text(buf.getvalue())
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Assignment":
        path = Path(path)
        if not path.exists():
            raise NolabelError(f"no assignment file at {path}")
        if path.suffix == ".csv":
            with path.open(newline="") as f:
                rows = list(csv.DictReader(f))
            if not rows or "cluster" not in rows[0]:
                raise NolabelError(f"{path} is not an assignment CSV (needs columns item_id, cluster, confidence)")
            return cls(
                clusters=np.array([int(r["cluster"]) for r in rows], dtype=np.int64),
                confidences=np.array([float(r.get("confidence") or 1.0) for r in rows], dtype=np.float32),
                ids=np.array([r.get("item_id", str(i)) for i, r in enumerate(rows)], dtype=str),
            )
        with np.load(path, allow_pickle=False) as f:
            return cls(
                clusters=f["clusters"],
                confidences=f["confidences"],
                probabilities=f["probabilities"] if "probabilities" in f else None,
                ids=f["ids"] if "ids" in f else None,
            )
