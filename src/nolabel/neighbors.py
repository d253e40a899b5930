"""Cosine k nearest neighbours of every row, the row itself excluded.

Backends:

- ``"torch"``: exact. Blocks of query rows against all rows, ``topk`` per block, so
  memory is O(N*k + block*N), never N x N. Runs on ``device`` (CUDA when present).
  Above the in-memory budget no float32 copy of the rows is made in host memory: on the
  CPU each query block meets the rows chunk by chunk (a running top-k); on a GPU the unit
  rows are copied to the device chunk by chunk.
- ``"faiss"``: exact, ``IndexFlatIP`` on the normalised rows.
- ``"faiss-ivf"``: approximate, ``IndexIVFFlat`` with ``nlist ~ 4 sqrt(N)`` lists
  trained on a sample and ``nprobe`` lists searched per query; rows for which the
  probed lists hold fewer than k other rows are redone exactly. Its recall@k against
  exact search is measured on ``RECALL_SAMPLE`` (1,000) seeded rows and returned in
  :attr:`Neighbors.recall`; unless ``nprobe`` is given it starts at 1 and
  doubles until that recall reaches ``TARGET_RECALL`` (0.9) or every list is probed
  (data without cluster structure, e.g. random vectors, needs many lists). Lists of constant
  length (nlist = N / 256) found through an HNSW graph over the centroids would cost N log N
  in theory, but took 1.4-2.4x the CPU time of this flat scan at 100k-1.28M rows
  (benchmarks/results/scale.md, rows ``graph``), so the flat scan stays.
- ``"faiss-hnsw"``: approximate, a navigable small-world graph (``IndexHNSWFlat``, or
  ``IndexHNSWSQ`` with float16 storage above the memory budget) with ``M`` = ``HNSW_M`` (32)
  links per row and ``efConstruction`` ``HNSW_EF_CONSTRUCTION`` (40); every row is then
  searched with ``efSearch`` candidates. At a fixed ``efSearch`` building and searching cost
  about ``log N`` distance evaluations per row (N log N in all), against IVF's coarse
  assignment to ``nlist ~ sqrt(N)`` lists (N^1.5); but the ``efSearch`` that a recall target
  needs grows with how many near-ties surround a row's true neighbours (see "auto"). Unless
  ``ef_search`` is given it starts at k + 1 and doubles until the recall@k on the sampled
  rows reaches ``TARGET_RECALL`` (or ``HNSW_MAX_EF``). The graph adds ``2 M`` int32 links per
  row (256 bytes at M = 32) to the stored rows: O(N). Rows left with fewer than k results are
  redone exactly. With one faiss thread the result is deterministic (faiss seeds the level
  draw); with several, rows are inserted concurrently and the graph may differ slightly
  between runs. It runs on the CPU also when faiss sees GPUs (faiss has no GPU HNSW).
- ``"auto"``: ``"torch"`` when ``device`` is a CUDA device; otherwise, with faiss
  installed, ``"faiss"`` up to ``IVF_ABOVE`` (100,000) rows and ``"faiss-ivf"`` beyond, at
  every N; ``"torch"`` without faiss. It reads only N, never labels. Why IVF and not HNSW
  above the threshold (measured with ``benchmarks/scale.py``, 384-d float16 rows, k = 20, one
  thread, recall@20 >= 0.9 against exact search on 1,000 sampled rows; see
  benchmarks/results/scale.md): on clustered rows (centres plus isotropic noise) HNSW needed
  2.5x IVF's CPU time at 100k rows (54 s against 22 s), and its ``efSearch`` had to grow with N
  (42 at 100k; 336 at 400k with 1,000 clusters, CPU 569 s against IVF's 101 s; 168 at 400k
  with clusters of 100 rows, 621 s against IVF's 226 s at nprobe 32), and the graph adds
  256 bytes per row to the index (33 % of 384-d float16 rows). ``"faiss-hnsw"`` is there for
  data on which graph search does well (low intrinsic dimension) and is chosen by name.

The faiss backends read the rows in chunks (normalising each chunk), so besides the
index's own copy of the data they hold O(N*k) results, and they never import torch. When
a float32 copy of the rows exceeds :data:`nolabel.memory.IN_MEMORY_BYTES` the index stores
them as float16 (``IndexScalarQuantizer`` / ``IndexIVFScalarQuantizer`` / ``IndexHNSWSQ`` with ``QT_fp16``;
on GPU the cloner's ``useFloat16``), i.e. no larger than float16 features themselves; the
search is then exact only up to that rounding, and ``recall`` is measured against exact
float32 search on the sampled rows as for IVF.

With ``faiss.get_num_gpus() > 0`` the faiss indexes run on all GPUs
(``index_cpu_to_all_gpus``, sharded): the flat index is built there and filled in chunks;
the IVF index is trained on the CPU (a sample), moved, then filled; ``nprobe`` is set
through ``GpuParameterSpace`` and capped at :data:`GPU_MAX_NPROBE`.

Each row of the result is ordered by decreasing similarity, ties by increasing index.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from . import memory
from .errors import NolabelError, check_choice
from .io import save_npz

BACKENDS = ("auto", "torch", "faiss", "faiss-ivf", "faiss-hnsw")
#: the torch backend shrinks its row blocks so one (block, N) similarity matrix stays below this
BLOCK_BYTES = 256 << 20
#: "auto" switches from exact to IVF search above this many rows
IVF_ABOVE = 100_000
#: HNSW links per row (faiss' M) and the candidate list while building (efConstruction)
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 40
#: the largest efSearch the recall search raises to
HNSW_MAX_EF = 2048
#: the largest nprobe (and k) faiss' GPU k-selection supports
GPU_MAX_NPROBE = 2048
#: rows on which an approximate search's recall is measured against exact search
RECALL_SAMPLE = 1000
#: the recall@k the IVF search raises nprobe for (when nprobe is not given)
TARGET_RECALL = 0.9
_CHUNK_BYTES = 64 << 20  # rows are read and normalised in chunks of about this size


@dataclass
class Neighbors:
    """``indices[i]``: the k rows most cosine-similar to row i (not i); ``similarities[i]``: their cosines.

    ``backend`` is the search that produced them; ``recall`` the mean fraction of the exact
    k neighbours found, measured on a sample (1.0 for exact backends, None when loaded);
    ``search`` the IVF settings used (nlist, nprobe)."""

    indices: np.ndarray
    similarities: np.ndarray
    backend: str | None = None
    recall: float | None = None
    search: dict | None = None

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
    device: Any = None,
    nprobe: int | None = None,
    nlist: int | None = None,
    seed: int = 0,
    target_recall: float = TARGET_RECALL,
    ef_search: int | None = None,
    hnsw_m: int = HNSW_M,
) -> Neighbors:
    """The ``k`` most cosine-similar other rows of every row of ``embeddings`` (N, d).

    ``chunk_size`` caps the query rows per block (torch backend, also capped so a block
    of similarities stays under 256 MiB). ``nlist``/``nprobe`` tune ``"faiss-ivf"``
    (defaults ``round(4 sqrt(N))``, at most N/39 so each list trains on >= 39 points; and
    the smallest of 1, 2, 4, ... whose recall@k on the sampled rows
    reaches ``target_recall``); ``seed`` picks its training and recall samples.
    ``ef_search``/``hnsw_m`` tune ``"faiss-hnsw"`` (default: the smallest of k + 1, 2 (k + 1),
    ... whose sampled recall reaches ``target_recall``; and ``HNSW_M``).
    """
    check_choice("k-NN backend", backend, BACKENDS)
    x = check_rows(embeddings)
    n = len(x)
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise NolabelError(f"k must be a positive integer, got {k!r}")
    if k >= n:
        raise NolabelError(f"cannot find {k} neighbours among {n} samples (self excluded): use k <= {n - 1}")
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise NolabelError(f"chunk size must be a positive integer, got {chunk_size!r}")
    if backend == "auto":
        if device is not None and str(device).startswith("cuda"):
            backend = "torch"
        elif _has_faiss():
            backend = "faiss-ivf" if n > IVF_ABOVE else "faiss"
        else:
            backend = "torch"
    recall, search = 1.0, {}
    if backend == "torch":
        import torch

        dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if memory.in_memory(x):
            indices, sims = _torch_knn(normalize_rows(x), np.arange(n), k, chunk_size, dev)
        else:  # no float32 copy of all rows in host memory
            indices, sims = _torch_knn_chunked(x, k, chunk_size, dev)
    elif backend == "faiss":
        indices, sims, recall = _faiss_flat_knn(x, k, seed)
    elif backend == "faiss-ivf":
        indices, sims, recall, search = _faiss_ivf_knn(x, k, nlist, nprobe, seed, target_recall)
    else:
        indices, sims, recall, search = _faiss_hnsw_knn(x, k, hnsw_m, ef_search, seed, target_recall)
    indices, sims = _canonical_order(indices, sims)
    return Neighbors(indices, sims, backend=backend, recall=recall, search=search)


def check_rows(embeddings: Any) -> np.ndarray:
    """``embeddings`` as a 2-D array (a memory map stays one), checked in chunks:
    finite, no all-zero row."""
    x = embeddings if isinstance(embeddings, np.ndarray) else np.asarray(embeddings)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise NolabelError(f"embeddings must be a non-empty 2-D array (N, d), got shape {x.shape}")
    step = _chunk_rows(x.shape[1])
    for start in range(0, len(x), step):
        norms = np.linalg.norm(np.asarray(x[start:start + step], dtype=np.float32), axis=1)
        bad = ~np.isfinite(norms)
        if bad.any():
            total = sum(int((~np.isfinite(np.linalg.norm(np.asarray(x[s:s + step], dtype=np.float32), axis=1))).sum())
                        for s in range(0, len(x), step))
            raise NolabelError(f"embeddings hold NaN or inf in {total} rows (first: {start + int(np.flatnonzero(bad)[0])}); re-extract the features")
        zero = norms == 0
        if zero.any():
            total = sum(int((np.linalg.norm(np.asarray(x[s:s + step], dtype=np.float32), axis=1) == 0).sum())
                        for s in range(0, len(x), step))
            raise NolabelError(f"{total} embeddings are all zeros (first: row {start + int(np.flatnonzero(zero)[0])}); cosine similarity is undefined for them")
    return x


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


def _torch_knn(x: np.ndarray, rows: np.ndarray, k: int, chunk_size: int, device: Any) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k (self masked to -inf) for query ``rows`` against all rows of unit ``x``."""
    import torch

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


def _torch_knn_chunked(x: np.ndarray, k: int, chunk_size: int, device: Any) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_torch_knn` for rows above the in-memory budget, without their (N, d) float32
    copy in host memory: on a GPU the unit rows are written to one device tensor chunk by
    chunk; on the CPU each block of query rows is scored against the rows read and
    normalised chunk by chunk, keeping a running top-k (memory O(N*k + block*chunk)).
    Exact like :func:`_torch_knn` (the same cosines up to float32 rounding)."""
    import torch

    n, d = x.shape
    if torch.device(device).type != "cpu":
        base = torch.empty((n, d), dtype=torch.float32, device=device)
        for start, rows in _unit_chunks(x):
            base[start:start + len(rows)] = torch.from_numpy(rows).to(device)
        return _torch_knn_resident(base, k, chunk_size)
    indices = np.empty((n, k), dtype=np.int64)
    sims = np.empty((n, k), dtype=np.float32)
    step = _chunk_rows(d)
    block = max(1, min(chunk_size, BLOCK_BYTES // (4 * min(step, n))))
    with torch.no_grad():
        for s in range(0, n, block):
            q = torch.from_numpy(_unit_rows(x, np.arange(s, min(s + block, n))))
            own = torch.arange(s, s + len(q))
            best_s = torch.full((len(q), k), -math.inf)
            best_i = torch.full((len(q), k), -1, dtype=torch.int64)
            for start, rows in _unit_chunks(x):
                scores = q @ torch.from_numpy(rows).T
                mine = (own >= start) & (own < start + len(rows))
                scores[mine.nonzero().squeeze(1), own[mine] - start] = -math.inf
                top = torch.topk(scores, min(k, scores.shape[1]), dim=1)
                cand_s = torch.cat([best_s, top.values], dim=1)
                cand_i = torch.cat([best_i, top.indices + start], dim=1)
                keep = torch.topk(cand_s, k, dim=1).indices
                best_s, best_i = cand_s.gather(1, keep), cand_i.gather(1, keep)
            sims[s:s + len(q)], indices[s:s + len(q)] = best_s.numpy(), best_i.numpy()
    return indices, sims


def _torch_knn_resident(base: Any, k: int, chunk_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k (self masked) of every row of the unit device tensor ``base`` against all rows."""
    import torch

    n = len(base)
    block = max(1, min(chunk_size, BLOCK_BYTES // (4 * n)))
    indices = np.empty((n, k), dtype=np.int64)
    sims = np.empty((n, k), dtype=np.float32)
    with torch.no_grad():
        for s in range(0, n, block):
            scores = base[s:s + block] @ base.T
            q = torch.arange(s, s + len(scores), device=base.device)
            scores[torch.arange(len(q), device=base.device), q] = -math.inf
            top = torch.topk(scores, k, dim=1)
            sims[s:s + len(q)] = top.values.cpu().numpy()
            indices[s:s + len(q)] = top.indices.cpu().numpy()
    return indices, sims


def _chunk_rows(d: int) -> int:
    return max(64, _CHUNK_BYTES // (4 * d))


def _unit_chunks(x: np.ndarray):
    """``(start, unit float32 rows)`` over ``x`` in chunks."""
    step = _chunk_rows(x.shape[1])
    for start in range(0, len(x), step):
        rows = np.asarray(x[start:start + step], dtype=np.float32)
        yield start, np.ascontiguousarray(rows / np.linalg.norm(rows, axis=1, keepdims=True))


def _unit_rows(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    q = np.asarray(x[np.sort(rows)] if isinstance(x, np.memmap) else x[rows], dtype=np.float32)
    if isinstance(x, np.memmap):  # fancy indexing a memory map wants sorted rows: restore the order
        q = q[np.argsort(np.argsort(rows))]
    return np.ascontiguousarray(q / np.linalg.norm(q, axis=1, keepdims=True))


def _exact_rows(x: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k (self excluded) of query ``rows`` against all rows, scanning ``x`` in chunks
    and keeping a running (len(rows), k) best list; similarity blocks stay under ``_CHUNK_BYTES / 8``."""
    q = _unit_rows(x, rows)
    best_s = np.full((len(rows), k), -np.inf, dtype=np.float32)
    best_i = np.full((len(rows), k), -1, dtype=np.int64)
    for start, base in _unit_chunks(x):
        step = max(1, _CHUNK_BYTES // (32 * len(base)))  # a block and its ~6 temporaries stay under _CHUNK_BYTES
        for a in range(0, len(q), step):
            s = q[a:a + step] @ base.T
            qr = rows[a:a + step]
            own = (qr >= start) & (qr < start + len(base))
            s[np.flatnonzero(own), qr[own] - start] = -np.inf
            kk = min(k, s.shape[1])
            top = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
            cand_s = np.concatenate([best_s[a:a + step], np.take_along_axis(s, top, axis=1)], axis=1)
            cand_i = np.concatenate([best_i[a:a + step], top + start], axis=1)
            keep = np.argpartition(-cand_s, k - 1, axis=1)[:, :k]
            best_s[a:a + step] = np.take_along_axis(cand_s, keep, axis=1)
            best_i[a:a + step] = np.take_along_axis(cand_i, keep, axis=1)
    return best_i, best_s


def _faiss_flat_knn(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Exhaustive search over ``x``'s unit rows, added in chunks: float32 storage (exact,
    recall 1.0) within the memory budget, float16 beyond (recall measured on a sample)."""
    faiss = _faiss()
    n, d = x.shape
    fp16 = not memory.in_memory(x)
    if _gpus(faiss):
        index = _on_gpus(faiss, faiss.IndexFlatIP(d), fp16)
    elif fp16:
        index = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    else:
        index = faiss.IndexFlatIP(d)
    for _, rows in _unit_chunks(x):
        index.add(rows)
    indices, sims = _search_all(x, k, index)
    if not fp16:
        return indices, sims, 1.0
    probe_rows = _recall_rows(n, seed)
    return indices, sims, _recall(indices[probe_rows], _exact_rows(x, probe_rows, k)[0])


def _recall_rows(n: int, seed: int) -> np.ndarray:
    """The sorted, seeded rows on which recall against exact search is measured."""
    return np.sort(np.random.default_rng(seed + 1).choice(n, size=min(n, RECALL_SAMPLE), replace=False))


def _search_all(x: np.ndarray, k: int, index: Any) -> tuple[np.ndarray, np.ndarray]:
    indices = np.empty((len(x), k), dtype=np.int64)
    sims = np.empty((len(x), k), dtype=np.float32)
    for start, rows in _unit_chunks(x):
        i, s = _search(index, rows, np.arange(start, start + len(rows)), k)
        indices[start:start + len(rows)], sims[start:start + len(rows)] = i, s
    return indices, sims


def _search(index: Any, queries: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """k+1 hits per unit query, the query's own id (``ids``) dropped (else the last hit)."""
    s, i = index.search(queries, k + 1)
    keep = i != ids[:, None]
    keep[keep.all(axis=1), -1] = False
    return i[keep].reshape(len(ids), k).astype(np.int64), s[keep].reshape(len(ids), k).astype(np.float32)


def _faiss_ivf_knn(x: np.ndarray, k: int, nlist: int | None, nprobe: int | None, seed: int,
                   target: float) -> tuple[np.ndarray, np.ndarray, float, dict]:
    """IVF search; ``nprobe=None`` doubles nprobe from 1 (the full search costs ~ nprobe / nlist
    of exact search, so the smallest sufficient nprobe matters at large N) until the recall on the
    sampled rows reaches ``target`` (or every list is probed). Returns indices, similarities,
    the sampled recall and the search settings."""
    faiss = _faiss()
    n, d = x.shape
    nlist = int(nlist) if nlist is not None else max(1, min(round(4 * math.sqrt(n)), n // 39))
    if not 1 <= nlist <= n:
        raise NolabelError(f"nlist must lie in [1, {n}], got {nlist}")
    if nprobe is not None and int(nprobe) < 1:
        raise NolabelError(f"nprobe must be a positive integer, got {nprobe}")
    quantizer = faiss.IndexFlatIP(d)
    if memory.in_memory(x):
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    else:  # float16 lists: the index is no larger than float16 features
        index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    sample = np.sort(np.random.default_rng(seed).choice(n, size=min(n, 64 * nlist), replace=False))
    index.cp.seed = seed
    index.train(_unit_rows(x, sample))
    gpus = _gpus(faiss)
    index = _on_gpus(faiss, index)
    for _, rows in _unit_chunks(x):
        index.add(rows)
    most = min(nlist, GPU_MAX_NPROBE) if gpus else nlist
    space = faiss.GpuParameterSpace() if gpus else faiss.ParameterSpace()
    indices, sims, recall, probe, rows = _widen_until_recall(
        x, k, index, lambda width: space.set_index_parameter(index, "nprobe", width),
        min(int(nprobe), most) if nprobe is not None else 1, most, nprobe is not None, seed, target)
    return indices, sims, recall, {"nlist": nlist, "nprobe": probe, "recall_rows": rows}


def _faiss_hnsw_knn(x: np.ndarray, k: int, m: int, ef_search: int | None, seed: int,
                    target: float) -> tuple[np.ndarray, np.ndarray, float, dict]:
    """HNSW search (on the CPU); ``ef_search=None`` doubles efSearch from k + 1 until the recall on
    the sampled rows reaches ``target`` (or ``HNSW_MAX_EF``). Returns indices, similarities, the
    sampled recall and the search settings."""
    faiss = _faiss()
    d = x.shape[1]
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 2:
        raise NolabelError(f"hnsw_m must be an integer >= 2, got {m!r}")
    if ef_search is not None and (isinstance(ef_search, bool) or not isinstance(ef_search, (int, np.integer)) or ef_search < 1):
        raise NolabelError(f"ef_search must be a positive integer, got {ef_search!r}")
    fp16 = not memory.in_memory(x)
    if fp16:  # float16 rows: the index is no larger than float16 features plus the graph
        index = faiss.IndexHNSWSQ(d, faiss.ScalarQuantizer.QT_fp16, int(m), faiss.METRIC_INNER_PRODUCT)
    else:
        index = faiss.IndexHNSWFlat(d, int(m), faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    for _, rows in _unit_chunks(x):
        index.add(rows)
    indices, sims, recall, ef, rows = _widen_until_recall(
        x, k, index, lambda width: setattr(index.hnsw, "efSearch", width),
        max(int(ef_search), k + 1) if ef_search is not None else k + 1, max(k + 1, HNSW_MAX_EF),
        ef_search is not None, seed, target)
    return indices, sims, recall, {"M": int(m), "efConstruction": HNSW_EF_CONSTRUCTION, "efSearch": ef,
                                   "storage": "float16" if fp16 else "float32", "recall_rows": rows}


def _widen_until_recall(x: np.ndarray, k: int, index: Any, set_width: Callable[[int], None], width: int,
                        most: int, fixed: bool, seed: int, target: float) -> tuple[np.ndarray, np.ndarray, float, int, int]:
    """Search all rows of ``x`` in ``index`` at the smallest search width (IVF nprobe, HNSW
    efSearch) that gives recall@k >= ``target`` on sampled rows against exact search: doubling
    from ``width`` up to ``most``, then bisecting between the last width that missed and the
    first that met it (doubling alone overshoots: nprobe 4 where 3 suffices costs a third
    more search). ``fixed``: ``width`` as given. Rows the index leaves short are searched
    exactly. Returns indices, similarities, the sampled recall, the width and the number of
    sampled rows."""
    probe_rows = _recall_rows(len(x), seed)
    exact, _ = _exact_rows(x, probe_rows, k)
    queries = _unit_rows(x, probe_rows)

    def meets(w: int) -> bool:
        set_width(w)
        return _recall(_search(index, queries, probe_rows, k)[0], exact) >= target

    missed = None  # the largest width seen to miss the target
    while not fixed and width < most and not meets(width):
        missed, width = width, min(most, 2 * width)
    if missed is not None and meets(width):
        while width - missed > 1:
            middle = (missed + width) // 2
            missed, width = (missed, middle) if meets(middle) else (middle, width)
    set_width(width)
    indices, sims = _search_all(x, k, index)
    missing = np.flatnonzero((indices < 0).any(axis=1))
    if len(missing):
        indices[missing], sims[missing] = _exact_rows(x, missing, k)
    return indices, sims, _recall(indices[probe_rows], exact), width, len(probe_rows)


def _recall(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of each row's exact neighbours present in ``found``."""
    hits = sum(len(np.intersect1d(a, e)) for a, e in zip(found, exact))
    return float(hits / exact.size)


def _gpus(faiss: Any) -> int:
    """How many GPUs this faiss build sees (0 for faiss-cpu)."""
    return int(getattr(faiss, "get_num_gpus", lambda: 0)())


def _on_gpus(faiss: Any, index: Any, fp16: bool = False) -> Any:
    """``index`` sharded over all GPUs (float16 storage when ``fp16``) when this faiss
    build has any, else unchanged."""
    if not _gpus(faiss):
        return index
    options = faiss.GpuMultipleClonerOptions()
    options.shard = True
    options.useFloat16 = bool(fp16)
    return faiss.index_cpu_to_all_gpus(index, co=options)


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
