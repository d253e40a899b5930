"""Cosine k nearest neighbours of every row, the row itself excluded.

Backends:

- ``"torch"``: exact. Blocks of query rows against all rows, ``topk`` per block, so
  memory is O(N*k + block*N), never N x N. Runs on ``device`` (CUDA when present).
- ``"faiss"``: exact, ``IndexFlatIP`` on the normalised rows (CPU).
- ``"faiss-ivf"``: approximate, ``IndexIVFFlat`` with ``nlist ~ 4 sqrt(N)`` lists
  trained on a sample and ``nprobe`` lists searched per query; rows for which the
  probed lists hold fewer than k other rows are redone exactly with the torch backend.
- ``"auto"``: ``"torch"`` on a CUDA device, otherwise ``"faiss"`` when it is installed,
  otherwise ``"torch"``. Always exact.

Each row of the result is ordered by decreasing similarity, ties by increasing index.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from .errors import NolabelError
from .io import save_npz

BACKENDS = ("auto", "torch", "faiss", "faiss-ivf")
#: the torch backend shrinks its row blocks so one (block, N) similarity matrix stays below this
BLOCK_BYTES = 256 << 20


@dataclass
class Neighbors:
    """``indices[i]``: the k rows most cosine-similar to row i (not i); ``similarities[i]``: their cosines."""

    indices: np.ndarray
    similarities: np.ndarray

    @property
    def k(self) -> int:
        return int(self.indices.shape[1])

    def save(self, path: str | os.PathLike) -> None:
        save_npz(path, indices=self.indices.astype(np.int64), similarities=self.similarities.astype(np.float32))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Neighbors":
        try:
            with np.load(path, allow_pickle=False) as f:
                indices, similarities = f["indices"], f["similarities"]
        except FileNotFoundError:
            raise NolabelError(f"no neighbour file at {path}; create one with `nolabel neighbors`") from None
        except (OSError, ValueError, KeyError):
            raise NolabelError(f"{path} is not a neighbour file (.npz with indices and similarities)") from None
        if indices.ndim != 2 or indices.shape != similarities.shape:
            raise NolabelError(f"{path} holds indices {indices.shape} and similarities {similarities.shape}; expected two equal (N, k) arrays")
        return cls(indices=indices.astype(np.int64), similarities=similarities.astype(np.float32))


def knn(
    embeddings: Any,
    k: int,
    backend: str = "auto",
    chunk_size: int = 4096,
    device: str | torch.device | None = None,
    nprobe: int | None = None,
    nlist: int | None = None,
    seed: int = 0,
) -> Neighbors:
    """The ``k`` most cosine-similar other rows of every row of ``embeddings`` (N, d).

    ``chunk_size`` caps the query rows per block (torch backend, also capped so a block
    of similarities stays under 256 MiB). ``nlist``/``nprobe`` tune ``"faiss-ivf"``
    (defaults ``round(4 sqrt(N))``, at most N/39 so each list trains on >= 39 points,
    and ``max(1, nlist // 8)``); ``seed`` picks its training sample.
    """
    if backend not in BACKENDS:
        raise NolabelError(f"unknown k-NN backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    x = normalize_rows(embeddings)
    n = len(x)
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise NolabelError(f"k must be a positive integer, got {k!r}")
    if k >= n:
        raise NolabelError(f"cannot find {k} neighbours among {n} samples (self excluded): use k <= {n - 1}")
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise NolabelError(f"chunk size must be a positive integer, got {chunk_size!r}")
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if backend == "auto":
        backend = "torch" if dev.type == "cuda" or not _has_faiss() else "faiss"
    if backend == "torch":
        indices, sims = _torch_knn(x, np.arange(n), k, chunk_size, dev)
    elif backend == "faiss":
        indices, sims = _faiss_knn(x, k, _faiss().IndexFlatIP(x.shape[1]))
    else:
        indices, sims = _faiss_ivf_knn(x, k, nlist, nprobe, seed)
        missing = np.flatnonzero((indices < 0).any(axis=1))
        if len(missing):
            indices[missing], sims[missing] = _torch_knn(x, missing, k, chunk_size, dev)
    return Neighbors(*_canonical_order(indices, sims))


def normalize_rows(embeddings: Any) -> np.ndarray:
    """Finite (N, d) rows divided by their L2 norms, as float32; zero rows are an error."""
    x = np.asarray(embeddings)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise NolabelError(f"embeddings must be a non-empty 2-D array (N, d), got shape {x.shape}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1)
    bad = ~np.isfinite(norms)
    if bad.any():
        raise NolabelError(f"embeddings hold NaN or inf in {int(bad.sum())} rows (first: {int(np.flatnonzero(bad)[0])}); re-extract the features")
    zero = norms == 0
    if zero.any():
        raise NolabelError(f"{int(zero.sum())} embeddings are all zeros (first: row {int(np.flatnonzero(zero)[0])}); cosine similarity is undefined for them")
    return x / norms[:, None]


def neighbor_purity(indices: np.ndarray, labels: np.ndarray) -> float:
    """Mean over anchors i of (1/k) * #{j in indices[i] : labels[j] == labels[i]}."""
    indices, labels = _check_purity_inputs(indices, labels)
    return float((labels[indices] == labels[:, None]).mean())


def purity_at_k(indices: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (1, 5, 10, 20, 50)) -> dict[int, float]:
    """:func:`neighbor_purity` of the first ``kk`` columns for each ``kk`` in ``ks`` that is <= k."""
    indices, labels = _check_purity_inputs(indices, labels)
    same = labels[indices] == labels[:, None]
    hits = np.cumsum(same.sum(axis=0))
    return {int(kk): float(hits[kk - 1] / (len(labels) * kk)) for kk in sorted(set(ks)) if 1 <= kk <= indices.shape[1]}


def _check_purity_inputs(indices: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    indices, labels = np.asarray(indices), np.asarray(labels)
    if indices.ndim != 2 or indices.shape[1] == 0 or labels.ndim != 1 or len(indices) != len(labels):
        raise NolabelError(f"neighbour indices {indices.shape} do not match {labels.shape} labels: expected (N, k) and (N,)")
    if indices.min() < 0 or indices.max() >= len(labels):
        raise NolabelError("neighbour indices fall outside the labels: were they mined on other data?")
    return indices, labels


def _torch_knn(x: np.ndarray, rows: np.ndarray, k: int, chunk_size: int, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k (self masked to -inf) for query ``rows`` against all rows of ``x``."""
    n = len(x)
    base = torch.from_numpy(x).to(device)
    block = max(1, min(chunk_size, BLOCK_BYTES // (4 * n)))
    indices = np.empty((len(rows), k), dtype=np.int64)
    sims = np.empty((len(rows), k), dtype=np.float32)
    buffer = torch.empty((min(block, len(rows)), n), dtype=torch.float32, device=device)  # reused: no page faults per block
    with torch.no_grad():
        for s in range(0, len(rows), block):
            q = torch.from_numpy(rows[s:s + block]).to(device)
            scores = buffer[:len(q)]
            torch.mm(base.index_select(0, q), base.T, out=scores)
            scores[torch.arange(len(q), device=device), q] = -math.inf
            top = torch.topk(scores, k, dim=1)
            sims[s:s + len(q)] = top.values.cpu().numpy()
            indices[s:s + len(q)] = top.indices.cpu().numpy()
    return indices, sims


def _faiss_knn(x: np.ndarray, k: int, index: Any) -> tuple[np.ndarray, np.ndarray]:
    """Search k+1 hits with ``index`` (already trained) and drop each query's own index."""
    if index.ntotal == 0:
        index.add(x)
    sims, indices = index.search(x, k + 1)
    keep = indices != np.arange(len(x))[:, None]
    no_self = keep.all(axis=1)
    keep[no_self, -1] = False
    return indices[keep].reshape(len(x), k).astype(np.int64), sims[keep].reshape(len(x), k).astype(np.float32)


def _faiss_ivf_knn(x: np.ndarray, k: int, nlist: int | None, nprobe: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    faiss = _faiss()
    n, d = x.shape
    nlist = int(nlist) if nlist is not None else max(1, min(round(4 * math.sqrt(n)), n // 39))
    if not 1 <= nlist <= n:
        raise NolabelError(f"nlist must lie in [1, {n}], got {nlist}")
    nprobe = int(nprobe) if nprobe is not None else max(1, nlist // 8)
    if nprobe < 1:
        raise NolabelError(f"nprobe must be a positive integer, got {nprobe}")
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    sample = np.random.default_rng(seed).choice(n, size=min(n, 64 * nlist), replace=False)
    index.cp.seed = seed
    index.train(x[np.sort(sample)])
    index.add(x)
    index.nprobe = min(nprobe, nlist)
    return _faiss_knn(x, k, index)


def _canonical_order(indices: np.ndarray, sims: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row by decreasing similarity, ties by increasing index."""
    order = np.lexsort((indices, -sims), axis=-1)
    return np.take_along_axis(indices, order, axis=1), np.take_along_axis(sims, order, axis=1)


def _has_faiss() -> bool:
    try:
        _faiss()
    except NolabelError:
        return False
    return True


def _faiss():
    try:
        import faiss
    except ImportError:
        raise NolabelError("faiss is not installed: `pip install faiss-cpu`, or use --backend torch") from None
    return faiss
