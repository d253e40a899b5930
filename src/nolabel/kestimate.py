"""Estimate the number of clusters K from embeddings, without labels.

Candidates are ``K = k_min .. k_max``; ``k_max`` defaults to
``min(N // 10, max(50, 2 sqrt(N)), 1000)`` (200 at N = 10,000, 632 at 100,000). A range
of more than ``FULL_GRID`` (60) values is searched coarse to fine: first ``COARSE_POINTS``
(20) geometrically spaced K (ends included), then every K (at most ``FINE_POINTS``, 30,
evenly thinned, then every K within one thinning step of the new picks) between the
coarse neighbours of each coarse pick; ``candidates`` and
``scores`` are then the union, sorted, so the curve is dense where the pick is. Per-K
work (k-means, the spectrum) is computed once and reused between the two passes. A pick
on the edge of the range (``k_min`` above 2, or ``k_max``) is warned about
(``UserWarning``, and ``details["edge"]``): the true K may lie beyond it.

Every criterion works on L2-normalised embeddings (cosine geometry) and on a random
subsample drawn with ``seed`` of ``max(SUBSAMPLE[name], PER_CLUSTER * k_max)`` rows
(at most ``SUBSAMPLE_CAP``, 8,000; ``PER_CLUSTER`` = 10), so each candidate cluster has
a few members to judge it by and the cost does not grow with N:

- ``"eigengap"``: graph of the ``n_neighbors`` nearest neighbours (cosine), union-
  symmetrised, weighted with self-tuning local scaling (Zelnik-Manor & Perona 2004)
  ``W_ij = exp(-d_ij^2 / (s_i s_j))``, ``d = 1 - cos``, ``s_i`` = distance of ``i`` to its
  ``min(7, n_neighbors)``-th neighbour. The eigenvalues ``0 = l_1 <= l_2 <= ...`` of the
  symmetric normalised Laplacian ``I - D^-1/2 W D^-1/2`` come from the largest
  eigenvalues of ``D^-1/2 W D^-1/2`` (``scipy.sparse.linalg.eigsh``; dense below 1500
  samples). With K well
  separated groups ``l_1..l_K`` are near 0 and ``l_{K+1}`` is not; score(K) is the
  relative gap ``(l_{K+1} - l_K) / l_{K+1}`` (scale-free, 1 for K disconnected parts).
- ``"silhouette"``: k-means (k-means++, ``n_init=3``, on the first ``KMEANS_PCA_DIM``
  principal components of the unit vectors) for every K; score(K) = mean cosine
  silhouette ``(b - a) / max(a, b)`` of its partition, measured in the full space. The
  curve is flat near its top on real data, so the pick is the smallest K whose score is
  within one standard error (``std(s_i) / sqrt(n)`` at the best K) of the best.
- ``"stability"``: for every K, ``STABILITY_ROUNDS`` times split the subsample into two
  random halves, fit k-means on each, label the whole subsample with both and score the
  agreement (adjusted Rand index); score(K) = mean ARI.
- ``"auto"``: eigengap and silhouette together. When their picks agree that K is kept.
  Otherwise each criterion's curve is min-max scaled to [0, 1] over the candidates and
  the K maximising the mean of the two scaled curves is chosen (a consensus that
  trusts neither criterion alone); ``scores`` is that mean curve and ``details`` keeps
  both criteria's curves and picks.

Eigengap, stability and the auto consensus pick the highest score (the smallest such K
on ties).
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import ArpackNoConvergence, eigsh
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score, silhouette_samples

from .errors import NolabelError, check_choice
from .methods.base import validate_embeddings, validate_neighbors

METHODS = ("auto", "eigengap", "silhouette", "stability")
#: the most samples each criterion looks at (a seeded random subsample beyond), raised to
#: PER_CLUSTER * k_max up to SUBSAMPLE_CAP
SUBSAMPLE = {"eigengap": 5000, "silhouette": 3000, "stability": 2000}
PER_CLUSTER = 10
SUBSAMPLE_CAP = 8000
DEFAULT_K_MAX_CAP = 1000
FULL_GRID = 60
COARSE_POINTS = 20
FINE_POINTS = 30
STABILITY_ROUNDS = 4
KMEANS_PCA_DIM = 64  # k-means runs on at most this many principal components
_DENSE_EIGH_UP_TO = 1500  # below this many samples a dense eigendecomposition is used
_LOCAL_SCALE_RANK = 7


@dataclass
class KEstimate:
    """The chosen ``k``, the criterion that chose it and the curve it used:
    ``scores[i]`` is the criterion's score of ``candidates[i]`` (higher is better)."""

    k: int
    method: str
    candidates: list[int]
    scores: list[float]
    details: dict[str, Any] = field(default_factory=dict)


def estimate_k(
    embeddings: np.ndarray,
    k_min: int = 2,
    k_max: int | None = None,
    method: str = "auto",
    n_neighbors: int = 10,
    seed: int = 0,
    neighbors: np.ndarray | None = None,
) -> KEstimate:
    """Estimate the number of clusters of ``embeddings`` (N, d) with ``method``.

    ``neighbors`` (N, k) are precomputed nearest-neighbour indices; the eigengap uses
    their first ``n_neighbors`` columns (the sample itself skipped) when it does not
    subsample, i.e. when N <= ``SUBSAMPLE["eigengap"]``.
    """
    check_choice("K estimation method", method, METHODS)
    x = validate_embeddings(embeddings, None)
    n = len(x)
    k_min, k_max = _k_range(n, k_min, k_max)
    if not isinstance(n_neighbors, (int, np.integer)) or n_neighbors < 2:
        raise NolabelError(f"n_neighbors must be an integer >= 2, got {n_neighbors!r}")
    if neighbors is not None:
        neighbors = validate_neighbors(neighbors, n)
    memo: dict = {}
    full = list(range(k_min, k_max + 1))
    if len(full) <= FULL_GRID:
        est = _estimate(x, method, full, n_neighbors, seed, neighbors, memo)
    else:
        t0 = time.perf_counter()
        coarse = _geometric(k_min, k_max, COARSE_POINTS)
        first = _estimate(x, method, coarse, n_neighbors, seed, neighbors, memo)
        picks = {first.k} | set(first.details.get("picks", {}).values())
        fine: set[int] = set()
        steps = []
        for pick in picks:
            i = coarse.index(pick)
            lo, hi = coarse[max(i - 1, 0)], coarse[min(i + 1, len(coarse) - 1)]
            window = list(range(lo, hi + 1))
            step = max(1, -(-len(window) // FINE_POINTS))
            steps.append(step)
            fine |= set(window[::step]) | {pick}
        est = _estimate(x, method, sorted(set(coarse) | fine), n_neighbors, seed, neighbors, memo)
        if max(steps) > 1:  # a thinned window: every K within one step of the new picks
            for pick in {est.k} | set(est.details.get("picks", {}).values()):
                fine |= set(range(max(k_min, pick - max(steps) + 1), min(k_max, pick + max(steps) - 1) + 1))
            est = _estimate(x, method, sorted(set(coarse) | fine), n_neighbors, seed, neighbors, memo)
        est.details["search"] = {"coarse": coarse, "fine": sorted(fine - set(coarse))}
        est.details["seconds"] = time.perf_counter() - t0
    if est.k == k_max or (est.k == k_min and k_min > 2):
        side = "largest" if est.k == k_max else "smallest"
        bound = "k_max" if est.k == k_max else "k_min"
        message = (f"the estimated number of clusters {est.k} is the {side} candidate ({bound}={est.k}): "
                   f"the data may have {'more' if est.k == k_max else 'fewer'} clusters; widen the range (--k-max)")
        est.details["edge"] = message
        warnings.warn(message, UserWarning, stacklevel=2)
    return est


def estimate_lines(estimate: dict[str, Any]) -> list[str]:
    """What a command prints of an estimate (:class:`KEstimate` as a dict): its pick and
    range, and a ``warning:`` line when the pick sits on the range's edge."""
    lines = [f"k: estimated {estimate['k']} clusters ({estimate['method']}, "
             f"K {estimate['candidates'][0]}..{estimate['candidates'][-1]})"]
    if estimate["details"].get("edge"):
        lines.append(f"warning: {estimate['details']['edge']}")
    return lines


def default_k_max(n: int) -> int:
    """``min(N // 10, max(50, round(2 sqrt(N))), DEFAULT_K_MAX_CAP)``."""
    return int(min(n // 10, max(50, round(2 * np.sqrt(n))), DEFAULT_K_MAX_CAP))


def _geometric(k_min: int, k_max: int, points: int) -> list[int]:
    """About ``points`` distinct integers spaced geometrically from k_min to k_max (both kept)."""
    return sorted({int(round(v)) for v in np.geomspace(k_min, k_max, points)} | {k_min, k_max})


def _estimate(x: np.ndarray, method: str, candidates: list[int], n_neighbors: int, seed: int,
              neighbors: np.ndarray | None, memo: dict) -> KEstimate:
    if method == "auto":
        return _auto(x, candidates, n_neighbors, seed, neighbors, memo)
    t0 = time.perf_counter()
    if method == "eigengap":
        scores, k, details = eigengap_scores(x, candidates, n_neighbors, seed, neighbors, memo)
    elif method == "silhouette":
        scores, k, details = silhouette_scores(x, candidates, seed, memo)
    else:
        scores, k, details = stability_scores(x, candidates, seed, memo)
    details["seconds"] = time.perf_counter() - t0
    return KEstimate(k=k, method=method, candidates=candidates, scores=scores, details=details)


def _k_range(n: int, k_min: int, k_max: int | None) -> tuple[int, int]:
    if n < 20:
        raise NolabelError(f"cannot estimate the number of clusters from {n} samples: it needs at least 20")
    if k_max is None:
        k_max = default_k_max(n)
    if not isinstance(k_min, (int, np.integer)) or not isinstance(k_max, (int, np.integer)):
        raise NolabelError(f"the K range must be integers, got k_min={k_min!r}, k_max={k_max!r}")
    if k_min < 2:
        raise NolabelError(f"k_min must be >= 2, got {k_min}")
    if k_max > n // 2:
        raise NolabelError(f"k_max={k_max} is too large for {n} samples: use at most {n // 2}")
    if k_max < k_min:
        raise NolabelError(f"empty K range {k_min}..{k_max} for {n} samples: lower k_min or raise k_max")
    return int(k_min), int(k_max)


def _best(candidates: list[int], scores: list[float]) -> int:
    return int(candidates[int(np.argmax(scores))])


def _auto(x: np.ndarray, candidates: list[int], n_neighbors: int, seed: int, neighbors: np.ndarray | None,
          memo: dict | None = None) -> KEstimate:
    t0 = time.perf_counter()
    curves = {
        "eigengap": eigengap_scores(x, candidates, n_neighbors, seed, neighbors, memo),
        "silhouette": silhouette_scores(x, candidates, seed, memo),
    }
    picks = {name: pick for name, (_, pick, _) in curves.items()}
    combined = np.mean([_minmax(scores) for scores, _, _ in curves.values()], axis=0)
    agree = picks["eigengap"] == picks["silhouette"]
    k = picks["eigengap"] if agree else _best(candidates, combined.tolist())
    details: dict[str, Any] = {
        "rule": "agreement" if agree else "mean of min-max scaled eigengap and silhouette curves",
        "picks": picks,
        "criteria": {name: {"scores": scores, "k": pick, **info} for name, (scores, pick, info) in curves.items()},
        "seconds": time.perf_counter() - t0,
    }
    return KEstimate(k=k, method="auto", candidates=candidates, scores=combined.tolist(), details=details)


def _minmax(scores: list[float]) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    span = s.max() - s.min()
    return (s - s.min()) / span if span > 0 else np.zeros_like(s)


def _subsample(x: np.ndarray, size: int, seed: int, k_max: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """Rows of ``x`` (L2-normalised, float32) and their indices, or None when all are kept;
    ``size`` is raised to ``PER_CLUSTER * k_max`` (at most ``SUBSAMPLE_CAP``)."""
    size = max(size, min(PER_CLUSTER * k_max, SUBSAMPLE_CAP))
    idx = None
    if len(x) > size:
        idx = np.sort(np.random.default_rng(seed).choice(len(x), size, replace=False))
        x = x[idx]
    return _normalize(np.asarray(x, dtype=np.float32)), idx


def _normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


# ---- eigengap ------------------------------------------------------------------------
def eigengap_scores(
    x: np.ndarray, candidates: list[int], n_neighbors: int, seed: int, neighbors: np.ndarray | None = None,
    memo: dict | None = None,
) -> tuple[list[float], int, dict[str, Any]]:
    """Relative eigengap ``(l_{K+1} - l_K) / l_{K+1}`` of the normalised Laplacian per K."""
    memo = {} if memo is None else memo
    n_eig = max(candidates) + 1
    if memo.get("spectrum", (0,))[0] < n_eig:
        z, idx = _subsample(x, SUBSAMPLE["eigengap"], seed, max(candidates))
        n = len(z)
        k_nn = min(n_neighbors, n - 1)
        if idx is None and neighbors is not None:
            nn = _drop_self(neighbors, k_nn)
            sims = np.einsum("nd,nkd->nk", z, z[nn])
        else:
            nn, sims = _cosine_knn(z, k_nn)
        w = _self_tuning_affinity(nn, sims)
        memo["spectrum"] = (n_eig, n, k_nn, *_laplacian_spectrum(w, n_eig, seed))
    _, n, k_nn, lam, n_components = memo["spectrum"]
    scores = []
    for k in candidates:
        nxt, cur = lam[k], lam[k - 1]
        scores.append(float((nxt - cur) / nxt) if nxt > 1e-6 else 0.0)
    details = {
        "n_samples": n,
        "n_neighbors": k_nn,
        "eigenvalues": lam.tolist(),
        "n_components": n_components,
        "graph": "union-symmetrised cosine k-NN, self-tuning weights",
        "rule": "largest relative gap",
    }
    return scores, _best(candidates, scores), details


def _drop_self(neighbors: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` neighbours of each row other than the row itself."""
    n = len(neighbors)
    out = np.empty((n, k), dtype=np.int64)
    for i, row in enumerate(neighbors):
        row = row[row != i]
        if len(row) < k:
            raise NolabelError(f"the neighbour file has {len(row)} neighbours for sample {i}, the estimate needs {k}")
        out[i] = row[:k]
    return out


def _cosine_knn(z: np.ndarray, k: int, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``k`` nearest neighbours (cosine, self excluded) of unit rows ``z``."""
    n = len(z)
    nn = np.empty((n, k), dtype=np.int64)
    sims = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, block):
        s = z[start : start + block] @ z.T
        rows = np.arange(len(s))
        s[rows, start + rows] = -np.inf
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        part_s = np.take_along_axis(s, part, axis=1)
        order = np.argsort(-part_s, axis=1, kind="stable")
        nn[start : start + block] = np.take_along_axis(part, order, axis=1)
        sims[start : start + block] = np.take_along_axis(part_s, order, axis=1)
    return nn, sims


def _self_tuning_affinity(nn: np.ndarray, sims: np.ndarray) -> sp.csr_matrix:
    """Sparse symmetric ``W_ij = exp(-d_ij^2 / (s_i s_j))`` on the union of k-NN edges."""
    n, k = nn.shape
    d = np.clip(1.0 - sims.astype(np.float64), 0.0, None)
    scale = np.maximum(np.sort(d, axis=1)[:, min(_LOCAL_SCALE_RANK, k) - 1], 1e-8)
    rows = np.repeat(np.arange(n), k)
    cols = nn.ravel()
    vals = np.exp(-(d.ravel() ** 2) / (scale[rows] * scale[cols]))
    w = sp.csr_matrix((vals, (rows, cols)), shape=(n, n))
    return w.maximum(w.T).tocsr()


def _laplacian_spectrum(w: sp.csr_matrix, n_eig: int, seed: int) -> tuple[np.ndarray, int]:
    """The ``n_eig`` smallest eigenvalues (ascending) of ``I - D^-1/2 W D^-1/2`` and the
    number of connected components.

    The spectrum is the union of the components' spectra; solving each component alone
    keeps the eigenvalue 0 of multiplicity "number of components", which Lanczos misses.
    """
    n_components, component = connected_components(w, directed=False)
    order = np.argsort(component, kind="stable")
    bounds = np.searchsorted(component[order], np.arange(n_components + 1))
    parts = []
    for c in range(n_components):
        idx = order[bounds[c] : bounds[c + 1]]
        parts.append(_connected_spectrum(w[idx][:, idx], min(n_eig, len(idx)), seed))
    return np.sort(np.concatenate(parts))[:n_eig], int(n_components)


def _connected_spectrum(w: sp.csr_matrix, n_eig: int, seed: int) -> np.ndarray:
    """The ``n_eig`` smallest normalised-Laplacian eigenvalues of a connected graph."""
    deg = np.asarray(w.sum(axis=1)).ravel()
    inv_sqrt = 1.0 / np.sqrt(np.maximum(deg, 1e-300))
    a = sp.diags(inv_sqrt) @ w @ sp.diags(inv_sqrt)
    n = a.shape[0]
    if n <= _DENSE_EIGH_UP_TO or n_eig >= n - 1 or 20 * n_eig > n:  # many eigenvalues: dense is faster than ARPACK
        mu = np.linalg.eigvalsh(a.toarray())[::-1][:n_eig]
    else:
        v0 = np.random.default_rng(seed).uniform(0.5, 1.5, n)
        try:
            mu = eigsh(a, k=n_eig, which="LA", v0=v0, return_eigenvectors=False, tol=1e-6, maxiter=20 * n)
        except ArpackNoConvergence:
            raise NolabelError(f"the eigengap eigen-solver did not converge on {n} samples; use method='silhouette'") from None
    return np.clip(1.0 - np.asarray(mu), 0.0, 2.0)


# ---- k-means based criteria ----------------------------------------------------------
def _kmeans_space(z: np.ndarray, seed: int) -> np.ndarray:
    """Unit vectors projected on their first ``KMEANS_PCA_DIM`` principal axes (k-means input)."""
    if z.shape[1] <= KMEANS_PCA_DIM:
        return z
    return PCA(n_components=KMEANS_PCA_DIM, random_state=seed).fit_transform(z).astype(np.float32)


def _kmeans(z: np.ndarray, k: int, seed: int, n_init: int) -> KMeans:
    """k-means++; duplicate points may leave fewer than ``k`` distinct clusters (no warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(z)


def silhouette_scores(x: np.ndarray, candidates: list[int], seed: int, memo: dict | None = None) -> tuple[list[float], int, dict[str, Any]]:
    """Mean cosine silhouette of k-means with K clusters, per K, and the 1-SE pick."""
    memo = {} if memo is None else memo
    if "silhouette_space" not in memo:
        z, _ = _subsample(x, SUBSAMPLE["silhouette"], seed, max(candidates))
        dist = np.clip(1.0 - z @ z.T, 0.0, 2.0)
        np.fill_diagonal(dist, 0.0)
        memo["silhouette_space"] = (len(z), dist, _kmeans_space(z, seed))
    n, dist, p = memo["silhouette_space"]
    per_k = memo.setdefault("silhouette", {})
    for k in candidates:
        if k not in per_k:
            labels = _kmeans(p, k, seed, n_init=3).labels_
            # identical points can leave k-means with one cluster: no separation at all
            s = silhouette_samples(dist, labels, metric="precomputed") if len(np.unique(labels)) > 1 else np.full(n, -1.0)
            per_k[k] = (float(s.mean()), float(s.std() / np.sqrt(len(s))))
    scores = [per_k[k][0] for k in candidates]
    errors = [per_k[k][1] for k in candidates]
    best = int(np.argmax(scores))
    pick = next(k for k, s in zip(candidates, scores) if s >= scores[best] - errors[best])
    details = {
        "n_samples": n,
        "standard_errors": errors,
        "rule": "smallest K within one standard error of the best mean silhouette",
        "clusterer": f"k-means (n_init=3) on unit vectors, PCA to {KMEANS_PCA_DIM} dims",
        "distance": "cosine",
    }
    return scores, pick, details


def stability_scores(x: np.ndarray, candidates: list[int], seed: int, memo: dict | None = None) -> tuple[list[float], int, dict[str, Any]]:
    """Mean ARI between k-means fitted on two random halves, both labelling the subsample."""
    memo = {} if memo is None else memo
    if "stability_space" not in memo:
        z, _ = _subsample(x, SUBSAMPLE["stability"], seed, max(candidates))
        memo["stability_space"] = _kmeans_space(z, seed)
    p = memo["stability_space"]
    rng = np.random.default_rng(seed)
    splits = [rng.permutation(len(p)) for _ in range(STABILITY_ROUNDS)]
    half = len(p) // 2
    per_k = memo.setdefault("stability", {})
    for k in candidates:
        if k not in per_k:
            aris = []
            for r, perm in enumerate(splits):
                a = _kmeans(p[perm[:half]], k, seed + 2 * r, n_init=1).predict(p)
                b = _kmeans(p[perm[half : 2 * half]], k, seed + 2 * r + 1, n_init=1).predict(p)
                aris.append(adjusted_rand_score(a, b))
            per_k[k] = float(np.mean(aris))
    scores = [per_k[k] for k in candidates]
    details = {
        "n_samples": len(p),
        "rounds": STABILITY_ROUNDS,
        "rule": "highest mean ARI",
        "clusterer": f"k-means (n_init=1) on unit vectors, PCA to {KMEANS_PCA_DIM} dims",
    }
    return scores, _best(candidates, scores), details
