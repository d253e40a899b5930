"""A label-free health check of a clustering result.

``health_check(labels, confidences, n_clusters, kmeans_labels=None)`` returns::

    {"n_clusters": K, "n_nonempty": int, "largest_share": float, "smallest_share": float,
     "mean_confidence": float, "agreement_kmeans": float | None, "warnings": [str]}

- shares are cluster sizes over N (``smallest_share`` counts empty clusters, so it is 0
  when one is empty);
- ``agreement_kmeans``: NMI (arithmetic normalisation) between ``labels`` and k-means
  labels on the same features, None when none are given;
- warnings (any of them means the result looks degenerate):
  an empty cluster; the largest cluster holding more than ``MAX_SHARE_RATIO`` (3) times
  the uniform share 1/K; a non-empty cluster holding less than ``MIN_SHARE_RATIO`` (1/100) of
  the uniform share (a nearly empty cluster: on CIFAR-10 one TEMI seed kept 8 of 10,000 items in one,
  where a long-tailed class of 7 in 3,024 with K = 20 is 1/21 of it); a mean confidence within ``UNIFORM_MARGIN`` (10 %) of the way
  from the uniform 1/K to certainty 1, i.e. ``mean_conf < 1/K + 0.1 (1 - 1/K)``.

No label is read: it can run on every result.
"""
from __future__ import annotations

from typing import Any

import numpy as np

#: warn when the largest cluster holds more than this many times the uniform share 1/K
MAX_SHARE_RATIO = 3.0
#: warn when a non-empty cluster holds less than this fraction of the uniform share 1/K
MIN_SHARE_RATIO = 0.01
#: warn when the mean confidence lies within this fraction of the way from 1/K to 1
UNIFORM_MARGIN = 0.1


def health_check(labels: Any, confidences: Any, n_clusters: int, kmeans_labels: Any = None) -> dict[str, Any]:
    """Cluster sizes, confidence and agreement with k-means, with warnings (see module doc)."""
    from sklearn.metrics import normalized_mutual_info_score

    labels = np.asarray(labels, dtype=np.int64).ravel()
    conf = np.asarray(confidences, dtype=np.float64).ravel()
    k = int(n_clusters)
    n = len(labels)
    sizes = np.bincount(labels, minlength=k)[:k] if n else np.zeros(k, dtype=np.int64)
    shares = sizes / max(n, 1)
    n_nonempty = int((sizes > 0).sum())
    mean_conf = float(conf.mean()) if len(conf) else 0.0
    agreement = None
    if kmeans_labels is not None:
        agreement = float(normalized_mutual_info_score(np.asarray(kmeans_labels).ravel(), labels))
    warnings = []
    if n_nonempty < k:
        warnings.append(f"{k - n_nonempty} of {k} clusters are empty")
    uniform = 1.0 / k
    if shares.max(initial=0.0) > MAX_SHARE_RATIO * uniform:
        warnings.append(f"the largest cluster holds {100 * shares.max():.1f}% of the items, more than "
                        f"{MAX_SHARE_RATIO:g}x the uniform share {100 * uniform:.1f}%")
    nonempty = shares[shares > 0]
    if len(nonempty) and nonempty.min() < MIN_SHARE_RATIO * uniform:
        warnings.append(f"a cluster holds only {int(round(nonempty.min() * n))} items ({100 * nonempty.min():.2f}%), "
                        f"under 1/{1 / MIN_SHARE_RATIO:g} of the uniform share {100 * uniform:.1f}%")
    if mean_conf < uniform + UNIFORM_MARGIN * (1.0 - uniform):
        warnings.append(f"confidences are near uniform (mean {mean_conf:.3f}, uniform {uniform:.3f})")
    return {
        "n_clusters": k,
        "n_nonempty": n_nonempty,
        "largest_share": float(shares.max(initial=0.0)),
        "smallest_share": float(shares.min()) if k else 0.0,  # (min with initial=0.0 was always 0)
        "mean_confidence": mean_conf,
        "agreement_kmeans": agreement,
        "warnings": warnings,
    }


def kmeans_reference(x: np.ndarray, n_clusters: int, seed: int = 0) -> np.ndarray:
    """k-means labels on ``x`` (L2-normalised rows, scikit-learn, 3 restarts): the
    reference ``agreement_kmeans`` is measured against."""
    from sklearn.cluster import KMeans

    from .methods.kmeans import FAISS_ABOVE

    if len(x) * n_clusters > FAISS_ABOVE:  # large: nolabel's k-means (faiss, rows read in chunks)
        from .methods import get

        return get("kmeans")(n_clusters, pca_dim=None, l2_normalize=True, n_init=3, seed=seed).fit(x).labels_
    z = np.asarray(x, dtype=np.float32)
    z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    return KMeans(n_clusters, n_init=3, random_state=seed).fit_predict(z)
