"""Clustering metrics against ground-truth labels (used only to score, never to fit).

Labels and cluster ids may be any values (ints, strings): each is mapped to
0..C-1 / 0..K-1 in sorted order of its distinct values. The count matrix has one
row per cluster and one column per class, ``counts[i, j] = #{n : pred_n = i, true_n = j}``.

- ACC (Hungarian): the one-to-one map of clusters to classes maximising matched samples
  (scipy ``linear_sum_assignment``); with K != C the surplus clusters (or classes) stay
  unmatched and their samples count as errors. ACC = matched / N.
- many-to-one ACC: every cluster to its majority class; >= Hungarian ACC.
- NMI (arithmetic normalisation), AMI, ARI: scikit-learn.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score, normalized_mutual_info_score

from .errors import NolabelError


def _encode(y: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct values, codes in 0..len-1) of a 1-D label vector."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise NolabelError(f"{what} must be a 1-D vector, got shape {y.shape}")
    if np.issubdtype(y.dtype, np.integer) and len(y) and y.min() >= 0 and y.max() <= 4 * len(y) + 1024:
        present = np.bincount(y) > 0  # O(N + max) instead of sorting
        return np.flatnonzero(present), (np.cumsum(present) - 1)[y]
    values, codes = np.unique(y, return_inverse=True)
    return values, codes.reshape(-1)


def _check_pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    classes, t = _encode(y_true, "labels")
    clusters, p = _encode(y_pred, "cluster assignments")
    if len(t) != len(p):
        raise NolabelError(f"{len(t)} labels but {len(p)} cluster assignments: they must describe the same items")
    if len(t) == 0:
        raise NolabelError("no items to score (empty labels)")
    return classes, t, clusters, p


def _counts(t: np.ndarray, p: np.ndarray, n_classes: int, n_clusters: int) -> np.ndarray:
    return np.bincount(p * n_classes + t, minlength=n_clusters * n_classes).reshape(n_clusters, n_classes)


def count_matrix(y_true: Any, y_pred: Any) -> np.ndarray:
    """(K, C) int64 counts: rows are clusters, columns classes, both in sorted order of their values."""
    classes, t, clusters, p = _check_pair(y_true, y_pred)
    return _counts(t, p, len(classes), len(clusters))


def _assignment(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return linear_sum_assignment(counts, maximize=True)


def hungarian_map(y_true: Any, y_pred: Any) -> dict[Any, Any]:
    """``{cluster value: class value}`` of the one-to-one map maximising matched samples.

    With more clusters than classes the clusters left out are absent from the dict.
    """
    classes, t, clusters, p = _check_pair(y_true, y_pred)
    rows, cols = _assignment(_counts(t, p, len(classes), len(clusters)))
    return {clusters[r].item(): classes[c].item() for r, c in zip(rows, cols)}


def hungarian_acc(y_true: Any, y_pred: Any) -> float:
    """ACC = max over one-to-one maps m of (1/N) sum_n [m(pred_n) == true_n]."""
    counts = count_matrix(y_true, y_pred)
    rows, cols = _assignment(counts)
    return float(counts[rows, cols].sum() / counts.sum())


def many_to_one_acc(y_true: Any, y_pred: Any) -> float:
    """(1/N) sum over clusters of the size of its majority class."""
    counts = count_matrix(y_true, y_pred)
    return float(counts.max(axis=1).sum() / counts.sum())


def nmi(y_true: Any, y_pred: Any) -> float:
    """I(T; P) / ((H(T) + H(P)) / 2)."""
    _, t, _, p = _check_pair(y_true, y_pred)
    return float(normalized_mutual_info_score(t, p, average_method="arithmetic"))


def ami(y_true: Any, y_pred: Any) -> float:
    """Mutual information adjusted for chance (arithmetic normalisation)."""
    _, t, _, p = _check_pair(y_true, y_pred)
    return float(adjusted_mutual_info_score(t, p, average_method="arithmetic"))


def ari(y_true: Any, y_pred: Any) -> float:
    """Rand index adjusted for chance."""
    _, t, _, p = _check_pair(y_true, y_pred)
    return float(adjusted_rand_score(t, p))


def _check_probs(y_true: Any, probs: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    classes, t = _encode(y_true, "labels")
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or len(probs) != len(t) or probs.shape[1] == 0:
        raise NolabelError(f"probabilities must have shape ({len(t)}, K), got {probs.shape}")
    if len(t) == 0:
        raise NolabelError("no items to score (empty labels)")
    if not np.isfinite(probs).all():
        raise NolabelError("probabilities hold NaN or inf")
    return classes, t, probs


def top_k_acc(y_true: Any, probs: Any, k: int = 5) -> float:
    """Fraction of items whose class is among the classes of their ``k`` most probable clusters.

    Column j of ``probs`` (N, K) is cluster j. Clusters are first mapped to classes by the
    Hungarian map of ``argmax(probs)`` against the labels (the map behind ACC), so top-1
    equals ACC; a cluster the one-to-one map leaves without a class (K > C) never counts
    as a hit. For K = C this is top-k over the probabilities with columns permuted to classes.
    """
    classes, t, probs = _check_probs(y_true, probs)
    n_clusters = probs.shape[1]
    _check_top_k(k, n_clusters)
    top = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    return _top_hits(t, len(classes), probs.argmax(axis=1), top, n_clusters)


def top_k_acc_from_top(y_true: Any, top_clusters: Any, n_clusters: int, k: int = 5) -> float:
    """:func:`top_k_acc` from each row's most probable clusters only (``top_clusters`` (N, >= k),
    most probable first, out of ``n_clusters``), as kept when the (N, K) probabilities are too large."""
    classes, t = _encode(y_true, "labels")
    top = np.asarray(top_clusters)
    if top.ndim != 2 or len(top) != len(t) or top.shape[1] < k:
        raise NolabelError(f"top clusters must have shape ({len(t)}, >= {k}), got {top.shape}")
    _check_top_k(k, n_clusters)
    return _top_hits(t, len(classes), top[:, 0], top[:, :k], n_clusters)


def _check_top_k(k: Any, n_clusters: int) -> None:
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= n_clusters:
        raise NolabelError(f"top-k needs 1 <= k <= {n_clusters} clusters, got k={k!r}")


def _top_hits(t: np.ndarray, n_classes: int, assigned: np.ndarray, top: np.ndarray, n_clusters: int) -> float:
    """Share of rows whose class is the Hungarian class (map of ``assigned``) of one of their ``top`` clusters."""
    rows, cols = _assignment(_counts(t, assigned, n_classes, n_clusters))
    cluster_class = np.full(n_clusters, -1, dtype=np.int64)
    cluster_class[rows] = cols
    return float((cluster_class[top] == t[:, None]).any(axis=1).mean())


def confusion_matrix(y_true: Any, y_pred: Any, mapping: str = "hungarian") -> np.ndarray:
    """(C, C) counts: row = true class, column = class its cluster maps to (sorted class order).

    ``mapping="hungarian"``: the one-to-one map; items of clusters it leaves unmatched
    (K > C) appear in no column, so row sums can be below the class sizes.
    ``mapping="many_to_one"``: each cluster to its majority class; every item counted.
    """
    if mapping not in ("hungarian", "many_to_one"):
        raise NolabelError(f"mapping must be 'hungarian' or 'many_to_one', got {mapping!r}")
    classes, t, clusters, p = _check_pair(y_true, y_pred)
    n_classes = len(classes)
    counts = _counts(t, p, n_classes, len(clusters))
    cluster_class = np.full(len(clusters), -1, dtype=np.int64)
    if mapping == "hungarian":
        rows, cols = _assignment(counts)
        cluster_class[rows] = cols
    else:
        cluster_class[:] = counts.argmax(axis=1)
    mapped = cluster_class[p]
    ok = mapped >= 0
    return np.bincount(t[ok] * n_classes + mapped[ok], minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def cluster_sizes(y_pred: Any, n_clusters: int | None = None) -> np.ndarray:
    """Items per cluster: for clusters 0..n_clusters-1 when given (empty ones as 0), else per distinct value in sorted order."""
    if n_clusters is None:
        return np.bincount(_encode(y_pred, "cluster assignments")[1]).astype(np.int64)
    p = np.asarray(y_pred)
    if p.ndim != 1 or (len(p) and (not np.issubdtype(p.dtype, np.integer) or p.min() < 0 or p.max() >= n_clusters)):
        raise NolabelError(f"cluster assignments must be integers in [0, {n_clusters}) to count {n_clusters} clusters")
    return np.bincount(p, minlength=n_clusters).astype(np.int64)


def evaluate(y_true: Any, y_pred: Any, probs: Any = None, top_clusters: Any = None,
             n_clusters: int | None = None) -> dict[str, Any]:
    """All metrics in one JSON-able dict.

    Keys: ``acc`` (Hungarian), ``many_to_one_acc``, ``nmi``, ``ami``, ``ari``, ``top5``
    (only with ``probs``, or ``top_clusters`` (N, >= 5) and ``n_clusters``, and K >= 5),
    ``n_samples``, ``n_clusters`` (columns of ``probs`` or ``n_clusters`` when given, else
    distinct predicted values), ``n_classes``, ``cluster_sizes``.
    """
    classes, t, clusters, p = _check_pair(y_true, y_pred)
    counts = _counts(t, p, len(classes), len(clusters))
    rows, cols = _assignment(counts)
    n = len(t)
    result: dict[str, Any] = {
        "acc": float(counts[rows, cols].sum() / n),
        "many_to_one_acc": float(counts.max(axis=1).sum() / n),
        "nmi": float(normalized_mutual_info_score(t, p, average_method="arithmetic")),
        "ami": float(adjusted_mutual_info_score(t, p, average_method="arithmetic")),
        "ari": float(adjusted_rand_score(t, p)),
    }
    if probs is not None:
        _, _, probs = _check_probs(y_true, probs)
        n_clusters = probs.shape[1]
        if n_clusters >= 5:
            result["top5"] = top_k_acc(y_true, probs, k=5)
        sizes = cluster_sizes(y_pred, n_clusters)
    elif top_clusters is not None and n_clusters is not None:
        if n_clusters >= 5 and np.shape(top_clusters)[1] >= 5:
            result["top5"] = top_k_acc_from_top(y_true, top_clusters, n_clusters)
        sizes = cluster_sizes(y_pred, n_clusters)
    else:
        n_clusters = len(clusters)
        sizes = counts.sum(axis=1)
    result.update(n_samples=int(n), n_clusters=int(n_clusters), n_classes=int(len(classes)), cluster_sizes=[int(s) for s in sizes])
    return result
