"""The shared base of head-based clustering methods on frozen embeddings.

:class:`HeadMethod` is a :class:`~nolabel.methods.base.ClusterMethod` whose fitted state is
one :class:`~nolabel.nn.heads.MultiHead` head (``head_``, the head kept after training
several) applied to the embeddings, L2-normalised when ``normalize`` (cosine geometry,
the one the neighbours are mined in). It provides

- the minibatch epochs (:meth:`HeadMethod._run_epochs`, each one
  :func:`nolabel.train.loop.train_one_epoch`): the embedding matrix lives on the device as
  one float32 tensor when it fits :data:`~nolabel.memory.IN_MEMORY_BYTES`; a larger
  one (a memory-mapped float16 .npy, say) is a :class:`StreamedRows`, whose batches are
  gathered by index from the array and converted (and normalised) per batch, with the
  same values as the in-memory tensor's rows; each epoch is a seeded ``randperm`` of the rows cut into batches
  (the last incomplete batch is dropped when there is at least one full batch); no
  DataLoader and no per-sample Python; a tqdm bar with the epoch loss when ``progress``;
- seeded generators (CPU for indices, the device for noise), so a CPU run is
  deterministic given ``seed``;
- whole-data statistics without ``(H, N, K)`` arrays: each head's argmax over all rows
  (:meth:`HeadMethod._all_labels`, for the kappa head selection) and the first head's
  confidences (:meth:`HeadMethod._all_max_proba`) in row chunks; ``_predictions_in_memory``
  says when a method's ``(H, N, K)`` float32 would exceed the budget (SCAN's whole-data loss
  and SeLa's labels then go chunk by chunk / head by head);
- ``predict_proba = softmax(head_(x))`` and ``predict`` (its argmax) in row chunks; save/load of the head, its
  architecture, the per-epoch loss ``history_`` and each trained head's selection loss
  ``head_losses_``;
- :meth:`HeadMethod.cluster_head`, the common accessor a second stage (self-labelling)
  uses to continue training the fitted head.

:func:`perturb` is the feature-space "strong augmentation" used where a method needs a
second view of an embedding: inverted dropout then Gaussian noise scaled by the row's
root-mean-square, ``x' = x * m / (1 - p) + s * rms(x) * eps``, ``m ~ Bernoulli(1 - p)``,
``eps ~ N(0, I)``.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Callable

import numpy as np
import torch

from ..device import resolve_device
from ..errors import NolabelError
from ..nn.heads import MultiHead, head_from_config
from ..train.loop import make_optimizer, train_one_epoch
from .. import memory
from ..memory import in_memory
from .base import ClusterMethod, validate_embeddings

__all__ = ["HeadMethod", "StreamedRows", "make_optimizer", "perturb", "random_neighbors", "warmup_cosine", "kmeans_size_prior"]

#: rows per forward pass at prediction time
PREDICT_CHUNK = 16384
#: the fewest optimisation steps an epoch takes (several shuffled passes over a small set)
MIN_STEPS_PER_EPOCH = 8


class StreamedRows:
    """The rows of a large (N, d) array (e.g. a memory map) as float32 tensors on ``device``,
    L2-normalised when ``normalize``, made per request: ``rows[idx]`` (an index tensor or
    array, or a slice) equals ``X[idx]`` of the in-memory tensor ``normalize(float32(x))``
    without that (N, d) copy. ``len``, ``shape`` and ``device`` are the tensor's."""

    def __init__(self, array: np.ndarray, normalize: bool, device: torch.device):
        self.array, self.normalize, self.device = array, bool(normalize), device
        self.shape = torch.Size(array.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx: Any) -> torch.Tensor:
        if not isinstance(idx, slice):
            idx = torch.as_tensor(idx).cpu().numpy()
        t = torch.from_numpy(np.array(self.array[idx], dtype=np.float32)).to(self.device)
        return torch.nn.functional.normalize(t, dim=1) if self.normalize else t

    def float(self) -> torch.Tensor:
        """Every row as one float32 tensor: a full copy, for whole-data statistics."""
        return self[:]


def perturb(x: torch.Tensor, dropout: float, noise: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Feature-space augmentation: inverted dropout with rate ``dropout``, then additive
    Gaussian noise of standard deviation ``noise * rms(x_row)``."""
    out = x
    if dropout > 0:
        keep = torch.rand(x.shape, generator=generator, device=x.device) >= dropout
        out = out * keep / (1.0 - dropout)
    if noise > 0:
        rms = x.pow(2).mean(-1, keepdim=True).sqrt()
        out = out + noise * rms * torch.randn(x.shape, generator=generator, device=x.device)
    return out


def random_neighbors(neighbors: torch.Tensor, idx: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One neighbour per row of ``idx``, uniform over the columns of ``neighbors``."""
    col = torch.randint(neighbors.shape[1], (len(idx),), generator=generator).to(neighbors.device)
    return neighbors[idx, col]


def warmup_cosine(step: int, total: int, warmup: int, base: float, final: float) -> float:
    """DINO's schedule: linear from 0 to ``base`` over the first ``warmup`` steps, then
    ``final + (base - final) (1 + cos(pi i / (total - warmup))) / 2`` at step ``warmup + i``."""
    if step < warmup:
        return base * step / warmup
    span = max(total - warmup, 1)
    return final + (base - final) * (1.0 + math.cos(math.pi * min(step - warmup, span) / span)) / 2.0


def kmeans_size_prior(x: torch.Tensor | StreamedRows, n_clusters: int, seed: int = 0) -> torch.Tensor:
    """A label-free cluster-size profile: the sizes of k-means clusters of ``x`` (rows
    L2-normalised, scikit-learn, 3 restarts), sorted descending, add-one smoothed,
    ``(sizes + 1) / (N + K)``: a ``(K,)`` probability vector on ``x``'s device.

    A :class:`StreamedRows` (an array above the in-memory budget) is not copied: nolabel's
    chunked faiss k-means (:class:`~nolabel.methods.kmeans.KMeans`, ``backend="faiss"``, 3
    restarts, no PCA, rows L2-normalised per chunk) runs on its array, trained on a sample of
    at most 256 K rows, every row then assigned in chunks; memory O(N) for the labels."""
    if isinstance(x, StreamedRows):
        from .kmeans import KMeans as ChunkedKMeans

        km = ChunkedKMeans(n_clusters, pca_dim=None, l2_normalize=True, backend="faiss", n_init=3, seed=int(seed))
        labels = km.fit(x.array).labels_
        sizes = np.sort(np.bincount(labels, minlength=n_clusters))[::-1].astype(np.float64)
        return torch.as_tensor((sizes + 1.0) / (sizes.sum() + n_clusters), dtype=torch.float32, device=x.device)
    from sklearn.cluster import KMeans

    z = torch.nn.functional.normalize(x.float(), dim=1).cpu().numpy()
    labels = KMeans(n_clusters, n_init=3, random_state=int(seed)).fit_predict(z)
    sizes = np.sort(np.bincount(labels, minlength=n_clusters))[::-1].astype(np.float64)
    return torch.as_tensor((sizes + 1.0) / (sizes.sum() + n_clusters), dtype=torch.float32, device=x.device)


class HeadMethod(ClusterMethod):
    """Base of the frozen-feature head methods (SCAN, TEMI, SeLa, LSD-C, self-labelling)."""

    #: how many neighbours ``fit`` reads (None when the method needs none)
    n_neighbors: int | None = None

    def __init__(
        self,
        n_clusters: int = 10,
        seed: int = 0,
        *,
        epochs: int,
        batch_size: int,
        lr: float,
        weight_decay: float = 0.0,
        normalize: bool = True,
        device: str | None = None,
        progress: bool = False,
    ):
        super().__init__(n_clusters=n_clusters, seed=seed)
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.normalize = normalize
        self.device = device
        self.progress = progress
        self.head_: MultiHead | None = None
        self.history_: list[float] = []
        self.head_losses_: list[float] = []

    # ---- set-up ------------------------------------------------------------------------
    def _setup(self, x: np.ndarray) -> torch.Tensor:
        """Resolve the device, seed the generators, return the prepared embeddings."""
        if self.epochs < 1 or self.batch_size < 1:
            raise NolabelError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")
        self._device = resolve_device(self.device)
        self._cpu_gen = torch.Generator().manual_seed(int(self.seed))
        if self._device.type == "cpu":
            self._dev_gen = self._cpu_gen
        else:
            self._dev_gen = torch.Generator(device=self._device).manual_seed(int(self.seed))
        self._normalize_inputs = bool(self.normalize)
        self.history_, self.head_losses_ = [], []
        return self._inputs(x)

    def _inputs(self, x: np.ndarray) -> torch.Tensor | StreamedRows:
        """Embeddings as a float32 tensor on the device, L2-normalised when configured; a
        :class:`StreamedRows` over ``x`` when that copy would exceed ``IN_MEMORY_BYTES``."""
        if getattr(self, "_device", None) is None:
            self._device = resolve_device(self.device)
        normalize = getattr(self, "_normalize_inputs", self.normalize)
        if not in_memory(x):
            return StreamedRows(x, normalize, self._device)
        t = torch.from_numpy(np.array(x, dtype=np.float32)).to(self._device)  # a copy: x may be a read-only memmap
        if normalize:
            t = torch.nn.functional.normalize(t, dim=1)
        return t

    def _neighbors(self, neighbors: np.ndarray) -> torch.Tensor:
        """The first ``n_neighbors`` columns (all when fewer) as a device tensor."""
        k = min(int(self.n_neighbors or neighbors.shape[1]), neighbors.shape[1])
        return torch.as_tensor(np.ascontiguousarray(neighbors[:, :k]), dtype=torch.int64).to(self._device)

    def _new_head(self, in_dim: int, n_heads: int, hidden: int | None = None, n_layers: int = 1,
                  cosine: bool = False) -> MultiHead:
        gen = torch.Generator().manual_seed(int(self.seed) + 1)
        head = MultiHead(in_dim, self.n_clusters, n_heads, hidden=hidden, n_layers=n_layers, cosine=cosine,
                         generator=gen)
        return head.to(self._device)

    # ---- the training loop ---------------------------------------------------------------
    def _steps_per_epoch(self, n: int) -> int:
        """``max(n // batch_size, MIN_STEPS_PER_EPOCH)``: on a set of fewer than 8 batches an
        epoch is several shuffled passes, so that the epoch-counted defaults still take enough
        steps (on 400 items SeLa's 100 epochs were 100 steps: 43.5 ACC against k-means' 64.3;
        300 steps: 65.5)."""
        return max(n // self.batch_size, MIN_STEPS_PER_EPOCH)

    def _run_epochs(
        self,
        n: int,
        step: Callable[[torch.Tensor, int], float | None],
        epochs: int | None = None,
    ) -> list[float]:
        """Call ``step(batch_indices, global_step)`` over ``epochs`` (default ``self.epochs``)
        shuffled passes over ``n`` rows, each pass one :func:`~nolabel.train.loop.train_one_epoch`
        (the step updates the head itself).

        ``step`` returns the batch loss, or None for a batch it skipped. Returns (and sets
        ``history_`` to) the mean loss per epoch (NaN for an epoch without a step).
        """
        per_epoch = self._steps_per_epoch(n)
        bs = min(self.batch_size, n)
        desc = self.name or type(self).__name__
        history: list[float] = []
        t = 0

        def one_step(idx: torch.Tensor, epoch: int) -> dict[str, Any]:
            nonlocal t
            loss = step(idx, t)
            t += 1
            return {"loss": loss, "n": len(idx)}

        passes = -(-per_epoch * bs // n)  # shuffled passes one epoch's batches take (1 unless the set is small)
        for epoch in range(self.epochs if epochs is None else epochs):
            order = torch.cat([torch.randperm(n, generator=self._cpu_gen) for _ in range(passes)]).to(self._device)
            batches = (order[b * bs : (b + 1) * bs] for b in range(per_epoch))
            stats = train_one_epoch(one_step, batches, None, epoch, self._device, progress=self.progress, desc=desc)
            history.append(float(stats.get("loss", float("nan"))))
        self.history_ = history
        return history

    @torch.no_grad()
    def _all_logits(self, head: MultiHead, x: torch.Tensor | StreamedRows) -> torch.Tensor:
        """``head`` over every row of ``x``, in chunks: ``(H, N, K)`` logits."""
        return torch.cat([head(x[i : i + PREDICT_CHUNK]) for i in range(0, len(x), PREDICT_CHUNK)], dim=1)

    def _chunk_rows(self, n_heads: int) -> int:
        """Rows per forward pass such that one ``(H, rows, K)`` float32 block stays under
        :data:`~nolabel.memory.CHUNK_BYTES` (at most ``PREDICT_CHUNK``)."""
        return max(1, min(PREDICT_CHUNK, memory.CHUNK_BYTES // (4 * n_heads * max(self.n_clusters, 1))))

    def _predictions_in_memory(self, n: int, n_heads: int) -> bool:
        """Whether ``(H, N, K)`` float32 predictions fit :data:`~nolabel.memory.IN_MEMORY_BYTES`;
        above it the whole-data statistics are computed in row chunks."""
        return n_heads * n * self.n_clusters * 4 <= memory.IN_MEMORY_BYTES

    @torch.no_grad()
    def _all_labels(self, head: MultiHead, x: torch.Tensor | StreamedRows) -> torch.Tensor:
        """Each head's argmax over every row of ``x``: ``(H, N)`` int64, computed in row chunks
        without the ``(H, N, K)`` logits (equal to ``_all_logits(head, x).argmax(-1)``)."""
        step = self._chunk_rows(head.n_heads)
        return torch.cat([head(x[i : i + step]).argmax(-1) for i in range(0, len(x), step)], dim=1)

    @torch.no_grad()
    def _all_max_proba(self, head: MultiHead, x: torch.Tensor | StreamedRows) -> tuple[torch.Tensor, torch.Tensor]:
        """The first head's largest probability and its cluster for every row, ``(N,)`` each, in
        row chunks: ``torch.softmax(_all_logits(head, x)[0], -1).max(-1)`` without the ``(N, K)`` array."""
        step = self._chunk_rows(head.n_heads)
        parts = [torch.softmax(head(x[i : i + step])[0], dim=-1).max(-1) for i in range(0, len(x), step)]
        return torch.cat([p.values for p in parts]), torch.cat([p.indices for p in parts])

    # ---- prediction and the head accessor --------------------------------------------
    @torch.no_grad()
    def _predict_proba(self, x: np.ndarray) -> np.ndarray:
        """``softmax(head_(x))`` (in float64, stored float32), in row chunks."""
        rows = self._inputs(x)
        out = np.empty((len(rows), self.head_.n_clusters), dtype=np.float32)
        for i in range(0, len(rows), PREDICT_CHUNK):
            logits = self.head_(rows[i : i + PREDICT_CHUNK])[0]
            out[i : i + len(logits)] = torch.softmax(logits.double(), dim=-1).float().cpu().numpy()
        return out

    @torch.no_grad()
    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        """``predict_proba(embeddings).argmax(axis=1)``, in row chunks (no ``(N, K)`` array)."""
        self._check_fitted()
        rows = self._inputs(validate_embeddings(embeddings, None))
        out = np.empty(len(rows), dtype=np.int64)
        for i in range(0, len(rows), PREDICT_CHUNK):
            logits = self.head_(rows[i : i + PREDICT_CHUNK])[0]
            out[i : i + len(logits)] = torch.softmax(logits.double(), dim=-1).float().cpu().numpy().argmax(axis=1)
        return out

    def cluster_head(self) -> tuple[MultiHead, bool]:
        """A trainable copy of the kept head, and whether its inputs are L2-normalised;
        ``softmax(head(l2norm(x) if normalised else x))[0]`` is ``predict_proba(x)``."""
        self._check_fitted()
        return copy.deepcopy(self.head_), bool(getattr(self, "_normalize_inputs", self.normalize))

    # ---- persistence -------------------------------------------------------------------
    def _state_tensors(self) -> dict[str, torch.Tensor]:
        if self.head_ is None:
            return {}
        return {f"head.{k}": v for k, v in self.head_.state_dict().items()}

    def _state_extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {
            "history": [float(v) for v in self.history_],
            "head_losses": [float(v) for v in self.head_losses_],
            "normalize_inputs": bool(getattr(self, "_normalize_inputs", self.normalize)),
        }
        if self.head_ is not None:
            extra["head"] = self.head_.config()
        return extra

    def _load_state(self, tensors: dict[str, torch.Tensor], extra: dict[str, Any]) -> None:
        self._device = resolve_device(self.device)
        self._normalize_inputs = bool(extra.get("normalize_inputs", self.normalize))
        self.history_ = list(extra.get("history", []))
        self.head_losses_ = list(extra.get("head_losses", []))
        self.head_ = None
        if "head" in extra:
            head = head_from_config(extra["head"])
            head.load_state_dict({k[len("head."):]: v for k, v in tensors.items() if k.startswith("head.")})
            self.head_ = head.to(self._device)
