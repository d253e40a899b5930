"""k-means on (self-supervised) features, after Zheltonozhskii et al.

Steps, each with bounded memory (the input may be a memory map of any size):

1. optional L2 normalisation of the rows;
2. PCA to at most ``pca_dim`` (default 256) components, applied when ``d > pca_dim`` or
   ``whiten`` (k-means cost grows with d and the trailing components of deep features
   carry little variance; below that a full PCA is a rotation, which k-means ignores);
   ``None`` keeps the raw space. Up to d = 2048 the PCA is exact: mean and scatter matrix
   ``sum (x - mu)(x - mu)^T`` accumulated over row chunks in float64, then its
   eigendecomposition; wider rows (e.g. raw pixels, d = 12,288) use randomized PCA on a
   seeded sample of 20,000 rows;
3. k-means with one of three backends:

   - ``"lloyd"``: scikit-learn's full-batch ``KMeans`` (k-means++ init);
   - ``"minibatch"``: the paper's recipe, ``MiniBatchKMeans`` fed shuffled mini-batches of
     ``max(2048, 2^ceil(log2 K))`` rows for ``epochs`` passes (code: 60);
   - ``"faiss"``: ``faiss.Kmeans`` trained on a seeded sample of at most
     ``256 K`` projected rows (faiss' own cap), started from k-means++ centres chosen on
     ``min(sample, 50 K)`` rows; every row is then assigned in chunks; on all GPUs
     (``faiss.Kmeans(gpu=True)``) when ``faiss.get_num_gpus() > 0``;
   - ``"auto"``: ``lloyd`` while ``N * K <= FAISS_ABOVE`` (1e6) and a float32 copy of the
     rows fits :data:`nolabel.memory.IN_MEMORY_BYTES` (Lloyd works on all projected rows
     in memory), ``faiss`` beyond.

Restarts: ``n_init`` runs whose seeds are spawned from ``numpy.random.SeedSequence(seed)``
(independent streams, so seed 0 and seed 1 share no restart); the run with the lowest
inertia (a label-free criterion) is kept. ``n_init=None`` (auto) is 10 (scikit-learn's classic
default) where ``"auto"`` picks Lloyd and 3 where it picks faiss. ``overcluster`` multiplies the number
of clusters (1.5 in the paper's overclustering runs).

``predict_proba`` is a soft assignment ``p(c | x) = softmax_c(-||z - mu_c||^2 / T)`` in the
projected space ``z``, with the temperature set from the data: ``T`` = the mean over the
fitted rows of the margin ``d2_second - d2_nearest`` between the squared distances to the
two nearest centres. A sample with the typical margin is then e times more likely in its
own cluster than in the runner-up; a sample half-way between two centres gets 1/2 each;
the argmax is the k-means assignment. (The earlier ``T = inertia / N``, the squared
radius, made every k-means result look near-uniform in high dimension: mean confidence
0.10 at K = 20 on StackOverflow MiniLM features, where the health check warns; the
margin scale gives confidences that rank samples the same way and read as probabilities.)
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from sklearn.cluster import KMeans as SklearnKMeans
from sklearn.cluster import MiniBatchKMeans, kmeans_plusplus
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning

from ..errors import NolabelError, check_choice
from . import register
from ..memory import in_memory
from .base import ClusterMethod, validate_embeddings

BACKENDS = ("auto", "lloyd", "minibatch", "faiss")
AUTO_PCA_DIM = 256
FAISS_ABOVE = 1_000_000  # N * K beyond which "auto" uses faiss and 3 restarts
FAISS_POINTS_PER_CENTROID = 256
EXACT_PCA_UP_TO = 2048  # wider rows: randomized PCA on a sample
PCA_SAMPLE = 20_000
_CHUNK_BYTES = 64 << 20  # rows are read/projected/assigned in chunks of about this size


@register("kmeans")
class KMeans(ClusterMethod):
    """PCA + k-means on features (Zheltonozhskii et al.), several seeds, overclustering."""

    def __init__(
        self,
        n_clusters: int = 10,
        pca_dim: int | None = AUTO_PCA_DIM,
        whiten: bool = False,
        l2_normalize: bool = False,
        overcluster: float = 1.0,
        backend: str = "auto",
        n_init: int | None = None,
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

    def restart_seeds(self, n_init: int) -> list[int]:
        """``n_init`` independent 31-bit seeds spawned from ``SeedSequence(seed)``."""
        return [int(c.generate_state(1)[0] >> 1) for c in np.random.SeedSequence(self.seed).spawn(n_init)]

    # ---- fitting -----------------------------------------------------------------
    def _fit(self, x: np.ndarray, neighbors: np.ndarray | None) -> None:
        check_choice("k-means backend", self.backend, BACKENDS)
        if self.overcluster < 1.0:
            raise NolabelError(f"overcluster must be >= 1, got {self.overcluster}")
        if self.n_centers > len(x):
            raise NolabelError(f"cannot make {self.n_centers} clusters from {len(x)} samples: lower --k or overcluster")
        n_init = self.n_init
        large = len(x) * self.n_centers > FAISS_ABOVE or not in_memory(x)  # Lloyd would copy all rows
        if n_init is None:
            n_init = 3 if large else 10
        if not isinstance(n_init, (int, np.integer)) or isinstance(n_init, bool) or n_init < 1:
            raise NolabelError(f"n_init must be a positive integer or None (auto), got {self.n_init!r}")
        backend = self.backend if self.backend != "auto" else ("faiss" if large else "lloyd")
        self._fit_projection(x)
        if backend == "faiss":
            runs = [self._run_faiss(x, s) for s in self.restart_seeds(n_init)]
        else:
            z = self._project(x)
            runs = [self._run_sklearn(z, backend, s) for s in self.restart_seeds(n_init)]
        centers, inertia = min(runs, key=lambda run: run[1])
        self.cluster_centers_ = np.ascontiguousarray(centers, dtype=np.float32)
        self.inertia_ = float(inertia)
        self.temperature_ = self._margin_temperature(x)

    def _margin_temperature(self, x: np.ndarray) -> float:
        """Mean of ``d2_second - d2_nearest`` over the rows of ``x`` (in chunks); with one
        cluster, the mean squared distance to the centre."""
        total = 0.0
        for z in self._chunks(x):
            d2 = _sq_distances(z, self.cluster_centers_)
            if d2.shape[1] == 1:
                total += float(d2.sum())
            else:
                two = np.partition(d2, 1, axis=1)[:, :2]
                total += float((two[:, 1] - two[:, 0]).sum())
        return max(total / len(x), 1e-12)

    def _fit_projection(self, x: np.ndarray) -> None:
        self.pca_mean_ = self.pca_components_ = self.pca_scale_ = None
        n, d = x.shape
        dim = self.pca_dim
        if dim is None:
            return
        if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool) or dim < 1:
            raise NolabelError(f"pca_dim must be a positive integer or null, got {self.pca_dim!r}")
        if d <= dim and not self.whiten:
            return
        n_components = min(int(dim), d, n)
        if d > EXACT_PCA_UP_TO:
            mean, components, variance = self._randomized_pca(x, n_components)
        else:
            mean, components, variance = self._exact_pca(x, n_components)
        # a deterministic sign: the largest-magnitude entry of each component is positive
        signs = np.sign(components[np.arange(n_components), np.abs(components).argmax(axis=1)])
        components *= np.where(signs == 0, 1.0, signs)[:, None]
        self.pca_mean_ = mean.astype(np.float32)
        self.pca_components_ = components.astype(np.float32)
        self.pca_scale_ = np.sqrt(variance).astype(np.float32) if self.whiten else np.ones(n_components, np.float32)

    def _exact_pca(self, x: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean, leading eigenvectors (rows) and eigenvalues of the covariance, from a
        scatter matrix accumulated over row chunks in float64."""
        n, d = x.shape
        mean = np.zeros(d)
        for rows in self._chunks(x, normalized_only=True):
            mean += rows.sum(axis=0, dtype=np.float64)
        mean /= n
        scatter = np.zeros((d, d))
        for rows in self._chunks(x, normalized_only=True):
            c = rows.astype(np.float64) - mean
            scatter += c.T @ c
        eigval, eigvec = np.linalg.eigh(scatter / max(n - 1, 1))
        order = np.argsort(eigval)[::-1][:n_components]
        return mean, eigvec[:, order].T, np.maximum(eigval[order], 0.0)

    def _randomized_pca(self, x: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Randomized PCA (Halko et al., scikit-learn) on a seeded sample of at most
        ``PCA_SAMPLE`` rows: for very wide rows (d > ``EXACT_PCA_UP_TO``) a d x d scatter
        matrix and its eigendecomposition would dominate the cost."""
        rows = np.sort(np.random.default_rng(self.seed).choice(len(x), size=min(len(x), PCA_SAMPLE), replace=False))
        sample = self._normalize(np.asarray(x[rows], dtype=np.float32))
        pca = PCA(n_components=min(n_components, len(sample)), svd_solver="randomized", random_state=self.seed).fit(sample)
        return pca.mean_.astype(np.float64), pca.components_.astype(np.float64), pca.explained_variance_.astype(np.float64)

    def _chunk_rows(self, d: int) -> int:
        return max(256, _CHUNK_BYTES // (4 * max(d, 1)))

    def _chunks(self, x: np.ndarray, normalized_only: bool = False):
        """Float32 row chunks of ``x``, normalised (and projected unless ``normalized_only``)."""
        step = self._chunk_rows(x.shape[1])
        for start in range(0, len(x), step):
            rows = self._normalize(np.asarray(x[start : start + step], dtype=np.float32))
            yield rows if normalized_only else self._project_normalized(rows)

    def _normalize(self, x: np.ndarray) -> np.ndarray:
        if not self.l2_normalize:
            return x
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.maximum(norms, 1e-12)

    def _project_normalized(self, x: np.ndarray) -> np.ndarray:
        if self.pca_components_ is None:
            return np.ascontiguousarray(x, dtype=np.float32)
        z = (x - self.pca_mean_) @ self.pca_components_.T
        return np.ascontiguousarray(z / np.maximum(self.pca_scale_, 1e-12), dtype=np.float32)

    def _project(self, x: np.ndarray) -> np.ndarray:
        """All rows of ``x`` in the k-means space (float32)."""
        if len(x) * x.shape[1] * 4 <= _CHUNK_BYTES:
            return self._project_normalized(self._normalize(np.asarray(x, dtype=np.float32)))
        return np.concatenate(list(self._chunks(x)))

    def _run_sklearn(self, z: np.ndarray, backend: str, seed: int) -> tuple[np.ndarray, float]:
        k = self.n_centers
        if backend == "lloyd":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                km = SklearnKMeans(n_clusters=k, n_init=1, max_iter=self.max_iter, random_state=seed).fit(z)
            return km.cluster_centers_, km.inertia_
        batch = max(2048, 2 ** math.ceil(math.log2(k)))
        km = MiniBatchKMeans(n_clusters=k, batch_size=batch, random_state=seed, n_init=1)
        rng = np.random.default_rng(seed)
        for _ in range(self.epochs):
            order = rng.permutation(len(z))
            for start in range(0, len(z), batch):
                km.partial_fit(z[order[start : start + batch]])
        return km.cluster_centers_, _assign(z, km.cluster_centers_)[1].sum()

    def _run_faiss(self, x: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
        """faiss k-means on a sample (k-means++ start), inertia over all rows."""
        import faiss

        k = self.n_centers
        rng = np.random.default_rng(seed)
        n = len(x)
        sample = np.sort(rng.choice(n, size=min(n, FAISS_POINTS_PER_CENTROID * k), replace=False))
        z = self._project_rows(x, sample)
        seeds_from = z[rng.choice(len(z), size=min(len(z), 50 * k), replace=False)]
        init, _ = kmeans_plusplus(seeds_from, k, random_state=seed)
        gpu = {"gpu": True} if getattr(faiss, "get_num_gpus", lambda: 0)() > 0 else {}
        km = faiss.Kmeans(z.shape[1], k, niter=min(self.max_iter, 25), seed=seed, verbose=False,
                          max_points_per_centroid=FAISS_POINTS_PER_CENTROID, **gpu)
        km.train(z, init_centroids=np.ascontiguousarray(init, dtype=np.float32))
        centers = km.centroids.copy()
        inertia = sum(_assign(rows, centers)[1].sum(dtype=np.float64) for rows in self._chunks(x))
        return centers, float(inertia)

    def _project_rows(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The projected rows ``rows`` (sorted indices) of ``x``, read in chunks."""
        step = self._chunk_rows(x.shape[1])
        parts = [self._project_normalized(self._normalize(np.asarray(x[rows[s : s + step]], dtype=np.float32)))
                 for s in range(0, len(rows), step)]
        return np.concatenate(parts)

    # ---- prediction --------------------------------------------------------------
    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        """The nearest centre of each row, in chunks (no (N, K) array; argmax of ``predict_proba``)."""
        self._check_fitted()
        x = validate_embeddings(embeddings, None)
        return np.concatenate([_assign(z, self.cluster_centers_)[0] for z in self._chunks(x)])

    def _predict_proba(self, x: np.ndarray) -> np.ndarray:
        out = np.empty((len(x), len(self.cluster_centers_)), dtype=np.float32)
        start = 0
        for z in self._chunks(x):
            d2 = _sq_distances(z, self.cluster_centers_)
            logits = -(d2 - d2.min(axis=1, keepdims=True)) / self.temperature_
            p = np.exp(logits)
            out[start : start + len(z)] = p / p.sum(axis=1, keepdims=True)
            start += len(z)
        return out

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
        return {"inertia": self.inertia_, "temperature": self.temperature_}

    def _load_state(self, tensors: dict[str, torch.Tensor], extra: dict[str, Any]) -> None:
        self.cluster_centers_ = tensors["cluster_centers"].numpy()
        self.pca_mean_ = tensors["pca_mean"].numpy() if "pca_mean" in tensors else None
        self.pca_components_ = tensors["pca_components"].numpy() if "pca_components" in tensors else None
        self.pca_scale_ = tensors["pca_scale"].numpy() if "pca_scale" in tensors else None
        self.inertia_ = float(extra["inertia"])
        # models saved before the temperature existed stored sigma2 with T = 2 sigma2
        self.temperature_ = float(extra["temperature"]) if "temperature" in extra else 2.0 * float(extra["sigma2"])


def _sq_distances(z: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (n, K) of float32 rows ``z`` to ``centers``."""
    c = centers.astype(np.float32, copy=False)
    d = (z**2).sum(axis=1, keepdims=True) - 2.0 * (z @ c.T) + (c**2).sum(axis=1)
    return np.maximum(d, 0.0)


def _assign(z: np.ndarray, centers: np.ndarray, chunk: int = 16384) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centre and its squared distance for every row of ``z``, in row chunks."""
    labels = np.empty(len(z), dtype=np.int64)
    dist = np.empty(len(z), dtype=np.float32)
    for start in range(0, len(z), chunk):
        d2 = _sq_distances(z[start : start + chunk], centers)
        labels[start : start + chunk] = d2.argmin(axis=1)
        dist[start : start + chunk] = d2[np.arange(len(d2)), labels[start : start + chunk]]
    return labels, dist
