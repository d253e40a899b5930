"""k-means on (self-supervised) features, after Zheltonozhskii et al.

Optional PCA (incremental, in batches of ``max(4096, 2 d)`` rows, when the data is a
memory map or large) then k-means with one of three backends:

- ``"lloyd"``: scikit-learn's full-batch ``KMeans`` (k-means++ init);
- ``"minibatch"``: the paper's recipe, ``MiniBatchKMeans`` fed shuffled mini-batches of
  ``max(2048, 2^ceil(log2 K))`` rows for ``epochs`` passes (code: 60);
- ``"faiss"``: ``faiss.Kmeans`` (fast on large N);
- ``"auto"``: ``lloyd`` up to 200,000 samples, ``faiss`` beyond.

``n_init`` restarts with seeds ``seed, seed+1, ...``; the run with the lowest inertia
(a label-free criterion) is kept. ``overcluster`` multiplies the number of clusters
(1.5 in the paper's overclustering runs).

``predict_proba`` is the posterior of an isotropic Gaussian mixture with the fitted
centres, equal priors and the shared variance ``sigma^2 = inertia / (N d)``:
``p(c | x) = softmax_c(-||x - mu_c||^2 / (2 sigma^2))``; its argmax is the k-means
assignment.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from sklearn.cluster import KMeans as SklearnKMeans
from sklearn.cluster import MiniBatchKMeans
from sklearn.decomposition import PCA, IncrementalPCA

from ..errors import NolabelError
from . import register
from .base import ClusterMethod

BACKENDS = ("auto", "lloyd", "minibatch", "faiss")
_INCREMENTAL_PCA_ABOVE = 50_000_000  # N * d beyond which PCA runs in batches


@register("kmeans")
class KMeans(ClusterMethod):
    """PCA + k-means on features (Zheltonozhskii et al.), several seeds, overclustering."""

    def __init__(
        self,
        n_clusters: int = 10,
        pca_dim: int | None = None,
        whiten: bool = False,
        l2_normalize: bool = False,
        overcluster: float = 1.0,
        backend: str = "auto",
        n_init: int = 3,
        epochs: int = 60,
        max_iter: int = 300,
        seed: int = 0,
    ):
        super().__init__(n_clusters=n_clusters, seed=seed)
        self.pca_dim = pca_dim
        self.whiten = whiten
        self.l2_normalize = l2_normalize
        self.overcluster = overcluster
        self.backend = backend
        self.n_init = n_init
        self.epochs = epochs
        self.max_iter = max_iter

    @property
    def n_centers(self) -> int:
        """Clusters actually made: ``round(n_clusters * overcluster)``."""
        return int(round(self.n_clusters * self.overcluster))

    # ---- fitting -----------------------------------------------------------------
    def _fit(self, x: np.ndarray, neighbors: np.ndarray | None) -> None:
        if self.backend not in BACKENDS:
            raise NolabelError(f"unknown k-means backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if self.overcluster < 1.0:
            raise NolabelError(f"overcluster must be >= 1, got {self.overcluster}")
        if self.n_centers > len(x):
            raise NolabelError(f"cannot make {self.n_centers} clusters from {len(x)} samples: lower --k or overcluster")
        self._fit_projection(x)
        z = self._project(x)
        backend = self.backend
        if backend == "auto":
            backend = "lloyd" if len(z) <= 200_000 else "faiss"
        runs = [self._run_once(z, backend, self.seed + i) for i in range(max(1, self.n_init))]
        centers, inertia = min(runs, key=lambda run: run[1])
        self.cluster_centers_ = centers.astype(np.float32)
        self.inertia_ = float(inertia)
        self.sigma2_ = max(self.inertia_ / (len(z) * z.shape[1]), 1e-12)

    def _fit_projection(self, x: np.ndarray) -> None:
        self.pca_mean_ = self.pca_components_ = self.pca_scale_ = None
        if self.pca_dim is None:
            return
        x = self._normalize(x)
        n_components = min(self.pca_dim, x.shape[1], len(x))
        batch = max(4096, 2 * x.shape[1])
        if isinstance(x, np.memmap) or x.size > _INCREMENTAL_PCA_ABOVE:
            pca: PCA | IncrementalPCA = IncrementalPCA(n_components=n_components, batch_size=batch)
            for start in range(0, len(x), batch):
                chunk = np.asarray(x[start : start + batch])
                if len(chunk) >= n_components:
                    pca.partial_fit(chunk)
        else:
            pca = PCA(n_components=n_components, random_state=self.seed).fit(x)
        self.pca_mean_ = pca.mean_.astype(np.float32)
        self.pca_components_ = pca.components_.astype(np.float32)
        self.pca_scale_ = (
            np.sqrt(pca.explained_variance_).astype(np.float32) if self.whiten else np.ones(n_components, np.float32)
        )

    def _normalize(self, x: np.ndarray) -> np.ndarray:
        if not self.l2_normalize:
            return x
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.maximum(norms, 1e-12)

    def _project(self, x: np.ndarray) -> np.ndarray:
        x = self._normalize(np.asarray(x, dtype=np.float32))
        if self.pca_components_ is None:
            return np.ascontiguousarray(x)
        z = (x - self.pca_mean_) @ self.pca_components_.T
        return np.ascontiguousarray(z / np.maximum(self.pca_scale_, 1e-12), dtype=np.float32)

    def _run_once(self, z: np.ndarray, backend: str, seed: int) -> tuple[np.ndarray, float]:
        k = self.n_centers
        if backend == "lloyd":
            km = SklearnKMeans(n_clusters=k, n_init=1, max_iter=self.max_iter, random_state=seed).fit(z)
            return km.cluster_centers_, km.inertia_
        if backend == "minibatch":
            batch = max(2048, 2 ** math.ceil(math.log2(k)))
            km = MiniBatchKMeans(n_clusters=k, batch_size=batch, random_state=seed, n_init=1)
            rng = np.random.default_rng(seed)
            for _ in range(self.epochs):
                order = rng.permutation(len(z))
                for start in range(0, len(z), batch):
                    km.partial_fit(z[order[start : start + batch]])
            return km.cluster_centers_, float(_sq_distances(z, km.cluster_centers_).min(axis=1).sum())
        import faiss

        km = faiss.Kmeans(z.shape[1], k, niter=min(self.max_iter, 100), seed=seed, verbose=False, spherical=False)
        km.train(z)
        return km.centroids.copy(), float(_sq_distances(z, km.centroids).min(axis=1).sum())

    # ---- prediction --------------------------------------------------------------
    def _predict_proba(self, x: np.ndarray) -> np.ndarray:
        d2 = _sq_distances(self._project(x), self.cluster_centers_)
        logits = -(d2 - d2.min(axis=1, keepdims=True)) / (2.0 * self.sigma2_)
        p = np.exp(logits)
        return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)

    # ---- persistence -------------------------------------------------------------
    def _state_tensors(self) -> dict[str, torch.Tensor]:
        if getattr(self, "cluster_centers_", None) is None:
            return {}
        state = {"cluster_centers": torch.from_numpy(self.cluster_centers_)}
        if self.pca_components_ is not None:
            state.update(
                pca_mean=torch.from_numpy(self.pca_mean_),
                pca_components=torch.from_numpy(self.pca_components_),
                pca_scale=torch.from_numpy(self.pca_scale_),
            )
        return state

    def _state_extra(self) -> dict[str, Any]:
        return {"inertia": self.inertia_, "sigma2": self.sigma2_}

    def _load_state(self, tensors: dict[str, torch.Tensor], extra: dict[str, Any]) -> None:
        self.cluster_centers_ = tensors["cluster_centers"].numpy()
        self.pca_mean_ = tensors["pca_mean"].numpy() if "pca_mean" in tensors else None
        self.pca_components_ = tensors["pca_components"].numpy() if "pca_components" in tensors else None
        self.pca_scale_ = tensors["pca_scale"].numpy() if "pca_scale" in tensors else None
        self.inertia_ = float(extra["inertia"])
        self.sigma2_ = float(extra["sigma2"])


def _sq_distances(z: np.ndarray, centers: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Squared Euclidean distances (N, K), in row chunks to bound memory."""
    c2 = (centers.astype(np.float32) ** 2).sum(axis=1)
    out = np.empty((len(z), len(centers)), dtype=np.float32)
    for start in range(0, len(z), chunk):
        rows = np.asarray(z[start : start + chunk], dtype=np.float32)
        d = (rows**2).sum(axis=1, keepdims=True) - 2.0 * rows @ centers.T.astype(np.float32) + c2
        out[start : start + chunk] = np.maximum(d, 0.0)
    return out
