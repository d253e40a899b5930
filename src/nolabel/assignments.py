"""Cluster assignments as artifacts: ``.npz`` (clusters, confidences, probabilities or, above the
in-memory budget, each row's most probable clusters)
plus a human-readable CSV of ``item_id, cluster, confidence``."""
from __future__ import annotations

import csv
import io as _io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import memory
from .errors import NolabelError
from .io import atomic_path, save_npz


#: the most probable clusters kept per row when the (N, K) probabilities exceed the in-memory budget
TOP_K = 5


@dataclass
class Assignment:
    clusters: np.ndarray  # (N,) int64
    confidences: np.ndarray  # (N,) float32, max probability
    probabilities: np.ndarray | None = None  # (N, K) float32
    ids: np.ndarray | None = None  # (N,) str
    top_clusters: np.ndarray | None = None  # (N, TOP_K) int64, most probable first, when probabilities is None
    top_probabilities: np.ndarray | None = None  # (N, TOP_K) float32, their probabilities
    n_clusters: int | None = None  # K (columns of probabilities), also when only the top clusters are kept

    def __post_init__(self) -> None:
        if self.n_clusters is None and self.probabilities is not None:
            self.n_clusters = int(self.probabilities.shape[1])

    @classmethod
    def from_proba(cls, probabilities: np.ndarray, ids: np.ndarray | None = None) -> "Assignment":
        p = np.asarray(probabilities, dtype=np.float32)
        return cls(clusters=p.argmax(axis=1).astype(np.int64), confidences=p.max(axis=1), probabilities=p, ids=ids)

    @classmethod
    def from_estimator(cls, est, x: np.ndarray, ids: np.ndarray | None = None) -> "Assignment":
        """``est``'s assignment of ``x``: every probability when the (N, K) float32 array fits
        :data:`nolabel.memory.IN_MEMORY_BYTES`, else only the :data:`TOP_K` most probable clusters of each row
        (``est.predict_top``, O(N) memory)."""
        n_clusters = est.predict_proba(np.asarray(x[:1])).shape[1]
        if len(x) * n_clusters * 4 <= memory.IN_MEMORY_BYTES:
            return cls.from_proba(est.predict_proba(x), ids=ids)
        top, top_p = est.predict_top(x, TOP_K)
        return cls(clusters=top[:, 0].copy(), confidences=top_p[:, 0].copy(), ids=ids, top_clusters=top,
                   top_probabilities=top_p, n_clusters=n_clusters)

    def score(self, labels: np.ndarray) -> dict:
        """:func:`nolabel.metrics.evaluate` of this assignment against ``labels`` (top-5 from whichever
        probabilities it holds)."""
        from .metrics import evaluate

        return evaluate(labels, self.clusters, self.probabilities, top_clusters=self.top_clusters,
                        n_clusters=self.n_clusters)

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (.npz) and the CSV beside it (same stem)."""
        path = Path(path)
        arrays = {"clusters": self.clusters, "confidences": self.confidences}
        for name in ("probabilities", "top_clusters", "top_probabilities"):
            if getattr(self, name) is not None:
                arrays[name] = getattr(self, name)
        if self.n_clusters is not None:
            arrays["n_clusters"] = np.int64(self.n_clusters)
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
                top_clusters=f["top_clusters"] if "top_clusters" in f else None,
                top_probabilities=f["top_probabilities"] if "top_probabilities" in f else None,
                n_clusters=int(f["n_clusters"]) if "n_clusters" in f else None,
            )
