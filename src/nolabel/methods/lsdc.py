"""LSD-C (Rebuffi et al.) on frozen embeddings: pairwise BCE against in-batch adjacency.

For a batch with features ``f`` (the frozen embeddings, L2-normalised when
``normalize``) the targets are an in-batch adjacency ``A`` (``adjacency``):

- ``"knn"`` (default): ``i in kNN(j) or j in kNN(i)`` by cosine, ``adjacency_k``
  neighbours (default ``min(20, max(2, B // (2 K)))``: the paper's k = 20 for CIFAR-10 at
  batch 256, capped so that k stays below the expected number of same-cluster rows in a
  batch when K is large);
- ``"cosine"``: ``cos(f_i, f_j) > tau`` (default tau 0.9);
- ``"l2"``: ``||f_i - f_j||^2 < tau`` (default 0.2, i.e. cosine > 0.9 on unit vectors);
- ``"sne"``: symmetric SNE with one temperature, ``(p_{j|i} + p_{i|j}) / 2 > tau``
  (default tau 0.01, ``sne_temperature`` 1.0).

The diagonal is 1 (a sample is its own neighbour). Loss per head, with ``p`` the
prediction on the embedding and ``p'`` on an "augmented view":
``BCE(A, p p'^T)`` (mean over the B^2 pairs) ``+ omega(t) ||p - p'||^2 / (K B)``,
``omega(t) = consistency * exp(-5 (1 - t / T)^2)`` for ``t < T = rampup_epochs``
(default half the epochs; the paper's CIFAR-10 setting is lambda 5, T 100 of 220 epochs).

The augmented view (``view``) in the frozen regime is either a random one of the first
``n_neighbors`` mined neighbours (``"neighbor"``, default; the frozen-feature analogue of
an augmentation, as in SCAN and TEMI) or the perturbed embedding (``"perturb"``: dropout
``dropout`` and noise ``noise`` as :func:`~nolabel.methods.heads_base.perturb`; no mined
neighbours needed). With ``mixup`` = alpha, a MixUp batch
``x~_j = l x_j + (1 - l) x_perm(j)``, ``l ~ Beta(alpha, alpha)`` (paper: 0.3) is added:
``BCE(T, p p~^T)`` with ``T_ij = l A_ij + (1 - l) A_i,perm(j)``.

With ``n_heads`` > 1 the head with the lowest mean loss over the last epoch is kept
(label-free). Optimiser: Adam lr 1e-3, weight decay 1e-4, batch 256 (the paper's
batch), 100 epochs.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import NolabelError
from .heads_base import HeadMethod, make_optimizer, perturb, random_neighbors
from ..nn.losses import (
    adjacency_cosine,
    adjacency_knn,
    adjacency_l2,
    adjacency_sne,
    consistency_mse,
    lsdc_pairwise_bce,
    rampup,
)
from . import register

ADJACENCIES = ("knn", "cosine", "l2", "sne")
VIEWS = ("neighbor", "perturb")
BATCHES = ("groups", "random")
DEFAULT_TAU = {"cosine": 0.9, "l2": 0.2, "sne": 0.01}


def neighbor_groups(anchors: torch.Tensor, neighbors: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Each anchor followed by ``size - 1`` of its mined neighbours (uniform, with
    replacement): ``(len(anchors) * size,)`` row indices."""
    cols = torch.randint(neighbors.shape[1], (len(anchors), size - 1), generator=generator).to(neighbors.device)
    return torch.cat([anchors[:, None], neighbors[anchors[:, None], cols]], dim=1).reshape(-1)


def adjacency_mined(idx: torch.Tensor, neighbors: torch.Tensor) -> torch.Tensor:
    """``A_ij = [idx_j in kNN(idx_i) or idx_i in kNN(idx_j) or idx_i = idx_j]`` from the mined
    k-NN of the whole data (``neighbors``: the batch's rows of the table, ``(B, k)``)."""
    a = (neighbors[:, :, None] == idx[None, None, :]).any(1) | (idx[:, None] == idx[None, :])
    return (a | a.T).float()


@register("lsdc")
class LSDC(HeadMethod):
    """LSD-C pairwise-similarity clustering with linear heads on frozen embeddings."""

    def __init__(
        self,
        n_clusters: int = 10,
        adjacency: str = "knn",
        adjacency_k: int | None = None,
        tau: float | None = None,
        sne_temperature: float = 1.0,
        view: str = "neighbor",
        batches: str = "groups",
        group_size: int = 4,
        n_neighbors: int = 20,
        dropout: float = 0.1,
        noise: float = 0.1,
        consistency: float = 5.0,
        rampup_epochs: int | None = None,
        mixup: float | None = None,
        n_heads: int = 1,
        hidden: int | None = None,
        n_layers: int = 1,
        epochs: int = 100,
        batch_size: int = 256,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        normalize: bool = True,
        seed: int = 0,
        device: str | None = None,
        progress: bool = False,
    ):
        super().__init__(n_clusters=n_clusters, seed=seed, epochs=epochs, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, normalize=normalize, device=device, progress=progress)
        if adjacency not in ADJACENCIES:
            raise NolabelError(f"unknown adjacency {adjacency!r}; choose one of {', '.join(ADJACENCIES)}")
        if view not in VIEWS:
            raise NolabelError(f"unknown view {view!r}; choose one of {', '.join(VIEWS)}")
        self.adjacency = adjacency
        self.adjacency_k = adjacency_k
        self.tau = tau
        self.sne_temperature = sne_temperature
        self.view = view
        self.n_neighbors = n_neighbors
        if batches not in BATCHES:
            raise NolabelError(f"unknown batches {batches!r}; choose one of {', '.join(BATCHES)}")
        self.batches = batches
        self.group_size = group_size
        self.needs_neighbors = view == "neighbor" or batches == "groups"
        self.dropout = dropout
        self.noise = noise
        self.consistency = consistency
        self.rampup_epochs = rampup_epochs
        self.mixup = mixup
        self.n_heads = n_heads
        self.hidden = hidden
        self.n_layers = n_layers

    def _targets(self, f: torch.Tensor, idx: torch.Tensor, nb: torch.Tensor | None) -> torch.Tensor:
        tau = DEFAULT_TAU.get(self.adjacency) if self.tau is None else self.tau
        if self.adjacency == "knn":
            k = self.adjacency_k or min(20, max(2, len(f) // (2 * self.n_clusters)))
            a = adjacency_knn(f, k)
            if nb is not None and self.batches == "groups":
                a = torch.maximum(a, adjacency_mined(idx, nb[idx, : self.adjacency_k or 20]))
            return a
        if self.adjacency == "cosine":
            return adjacency_cosine(f, tau)
        if self.adjacency == "l2":
            return adjacency_l2(f, tau)
        return adjacency_sne(f, tau, self.sne_temperature)

    def _fit(self, x: np.ndarray, neighbors: np.ndarray | None) -> None:
        X = self._setup(x)
        nb = self._neighbors(neighbors) if self.needs_neighbors else None
        head = self._new_head(X.shape[1], self.n_heads, self.hidden, self.n_layers)
        opt = make_optimizer("adam", head.parameters(), self.lr, self.weight_decay)
        per_epoch = self._steps_per_epoch(len(X))
        ramp = self.epochs / 2 if self.rampup_epochs is None else self.rampup_epochs
        mix_rng = np.random.default_rng(self.seed)
        head_sums = torch.zeros(self.n_heads, dtype=torch.float64, device=self._device)

        def step(idx: torch.Tensor, t: int) -> float:
            if t % per_epoch == 0:
                head_sums.zero_()
            if self.batches == "groups":
                idx = neighbor_groups(idx[: max(1, len(idx) // self.group_size)], nb, self.group_size, self._cpu_gen)
            f = X[idx]
            a = self._targets(f, idx, nb)
            if nb is not None:
                view = X[random_neighbors(nb, idx, self._cpu_gen)]
            else:
                view = perturb(f, self.dropout, self.noise, self._dev_gen)
            inputs = [f, view]
            if self.mixup:
                lam = float(mix_rng.beta(self.mixup, self.mixup))
                perm = torch.randperm(len(idx), generator=self._cpu_gen).to(self._device)
                inputs.append(lam * f + (1.0 - lam) * f[perm])
            p = torch.softmax(head(torch.cat(inputs)), dim=-1).split(len(idx), dim=1)
            omega = rampup(t / per_epoch, ramp, self.consistency)
            losses = lsdc_pairwise_bce(p[0], p[1], a) + omega * consistency_mse(p[0], p[1])
            if self.mixup:
                losses = losses + lsdc_pairwise_bce(p[0], p[2], lam * a + (1.0 - lam) * a[:, perm])
            loss = losses.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            head_sums.add_(losses.detach().double())
            return float(loss.detach()) / self.n_heads

        self._run_epochs(len(X), step)
        head_losses = (head_sums / per_epoch).cpu()
        self.head_losses_ = head_losses.tolist()
        self.head_ = head.select([int(head_losses.argmin())])
