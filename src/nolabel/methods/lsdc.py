"""LSD-C (Rebuffi et al.): pairwise BCE against in-batch adjacency, on frozen embeddings or the whole network.

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

Whole network (``LSDC.for_network(...).fit_dataset(dataset, backbone)``, :mod:`.network`),
one head, per batch: clean images -> ``p`` and features ``f`` (``A`` from ``f.detach()``,
same ``adjacency`` options); an augmented view (``augment``) -> ``p'``; with ``ricap``
= beta (RICAP) or ``mixup`` = alpha (MixUp) the view is composed
(:func:`~nolabel.nn.augment.ricap`, :func:`~nolabel.nn.augment.mixup`) and the BCE is
taken against the composites' predictions with targets mixed by area / weight
(:func:`~nolabel.nn.augment.mix_targets`); with neither, against ``p'`` and ``A``.
Plus ``omega(epoch) ||p - p'||^2 / (K B)``. ``train_blocks``: train only the last that
many backbone blocks (the authors train the last macro-block, ``train_blocks=1``).
Whole-network defaults (``network_defaults``): RICAP beta 0.3, in-batch kNN with k 20
(the paper's CIFAR-10 value; every row keeps about k positives, whereas a cosine
threshold on features that are themselves trained drifted from 14 % to 20 % positives
in 8 MNIST epochs and ended in a few clusters), ramp-up over 50 epochs, Adam lr 1e-4,
50 epochs. Under torchrun the adjacency is computed within each rank's own batch.

With ``n_heads`` > 1 the head with the lowest mean loss over the last epoch is kept
(label-free). Optimiser: Adam lr 1e-3, weight decay 1e-4, batch 256 (the paper's
batch), 100 epochs.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import NolabelError
from ..nn import augment as A
from ..nn.heads import MultiHead, _shared_affine
from ..nn.losses import ADJACENCIES, consistency_mse, entropy, lsdc_pairwise_bce, rampup
from ..nn.losses import adjacency as adjacency_targets
from . import register
from .heads_base import HeadMethod, make_optimizer, perturb, random_neighbors
from .network import FrozenBlocks, Network, NetworkMethod

VIEWS = ("neighbor", "perturb")
BATCHES = ("groups", "random")
KNN_METRICS = ("cosine", "l2")


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


def default_k(batch: int, n_clusters: int) -> int:
    """In-batch kNN size ``max(1, round(0.78 B / K))``: both of the paper's kNN settings keep
    k at 0.78 of the expected same-cluster count B / K (CIFAR-10 k 20 at 256 / 10, CIFAR-100-20
    k 10 at 256 / 20), so a row's positives match its cluster and a confident clustering pays
    few false negatives."""
    return max(1, round(0.78 * batch / n_clusters))


def size_kl_uniform(p: torch.Tensor) -> torch.Tensor:
    """``log K - H(pbar)`` (KL of the batch's mean prediction to uniform), ``(..., B, K) -> (...)``."""
    return math.log(p.shape[-1]) - entropy(p.mean(-2))


class BatchNormedHead(nn.Module):
    """Training-time view of an MLP :class:`~nolabel.nn.heads.MultiHead` with BatchNorm after each
    hidden affine map (``affine -> BN -> GELU``); :meth:`fold_` writes the BN's running
    statistics into the affine maps, so the head alone then computes the eval-mode network.
    A linear head (no hidden layer) passes through unchanged."""

    def __init__(self, head: MultiHead):
        super().__init__()
        self.head = [head]  # not a submodule: its parameters stay the head's own
        n_hidden = len(head.biases) - 1
        self.norms = nn.ModuleList(nn.BatchNorm1d(head.n_heads * head.hidden) for _ in range(n_hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = self.head[0]
        if not len(self.norms):
            return head(x)
        h = _shared_affine(x, head.weights[0], head.biases[0])
        for layer, bn in enumerate(self.norms):
            n_heads, b, d = h.shape
            h = bn(h.transpose(0, 1).reshape(b, n_heads * d)).reshape(b, n_heads, d).transpose(0, 1)
            h = torch.baddbmm(head.biases[layer + 1], nn.functional.gelu(h), head.weights[layer + 1])
        return h * head.scale

    @torch.no_grad()
    def fold_(self) -> None:
        """``W' = W s``, ``b' = (b - mu) s + beta`` with ``s = gamma / sqrt(var + eps)``, per hidden unit."""
        head = self.head[0]
        for layer, bn in enumerate(self.norms):
            shape = (head.n_heads, 1, head.hidden)
            s = (bn.weight / (bn.running_var + bn.eps).sqrt()).reshape(shape)
            head.weights[layer].mul_(s)
            head.biases[layer].sub_(bn.running_mean.reshape(shape)).mul_(s).add_(bn.bias.reshape(shape))


@register("lsdc")
class LSDC(NetworkMethod, HeadMethod):
    """LSD-C pairwise-similarity clustering: linear heads on frozen embeddings, or the whole network."""

    network_defaults = {"ricap": 0.3, "adjacency_k": 20, "rampup_epochs": 50, "epochs": 50, "lr": 1e-4}

    def __init__(
        self,
        n_clusters: int = 10,
        adjacency: str = "knn",
        adjacency_k: int | None = None,
        tau: float | None = None,
        sne_temperature: float = 1.0,
        knn_metric: str = "cosine",
        view: str = "neighbor",
        batches: str = "random",
        group_size: int = 4,
        n_neighbors: int = 20,
        dropout: float = 0.1,
        noise: float = 0.1,
        consistency: float = 5.0,
        rampup_epochs: int | None = None,
        mixup: float | None = None,
        ricap: float | None = None,
        train_blocks: int | None = None,
        augment: str = "auto",
        optimizer: str = "adam",
        schedule: str = "constant",
        amp: bool | None = None,
        n_heads: int = 1,
        hidden: int | None = 512,
        n_layers: int = 2,
        entropy_weight: float = 0.05,
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
        if knn_metric not in KNN_METRICS:
            raise NolabelError(f"unknown knn_metric {knn_metric!r}; choose one of {', '.join(KNN_METRICS)}")
        self.knn_metric = knn_metric
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
        self.ricap = ricap
        self.train_blocks = train_blocks
        self.augment = augment
        self.optimizer = optimizer
        self.schedule = schedule
        self.amp = amp
        self.n_heads = n_heads
        self.hidden = hidden
        self.n_layers = n_layers
        self.entropy_weight = entropy_weight

    @classmethod
    def neighbors_needed(cls, params: dict[str, Any]) -> int:
        """``n_neighbors`` with the default ``view="neighbor"`` or ``batches="groups"``, else none."""
        if params.get("view", "neighbor") != "neighbor" and params.get("batches", "groups") != "groups":
            return 0
        return int(params.get("n_neighbors", 20))

    def _targets(self, f: torch.Tensor, idx: torch.Tensor | None = None, nb: torch.Tensor | None = None) -> torch.Tensor:
        """In-batch adjacency of ``f`` (B, d); kNN's k defaults to :func:`default_k`;
        with neighbour-group batches the kNN adjacency also holds the mined k-NN relation."""
        k = self.adjacency_k or default_k(len(f), self.n_clusters)
        a = adjacency_targets(f, self.adjacency, k, self.tau, self.sne_temperature, self.knn_metric)
        if self.adjacency == "knn" and nb is not None and self.batches == "groups":
            a = torch.maximum(a, adjacency_mined(idx, nb[idx, : self.adjacency_k or 20]))
        return a

    def _fit(self, x: np.ndarray, neighbors: np.ndarray | None) -> None:
        X = self._setup(x)
        nb = self._neighbors(neighbors) if self.needs_neighbors else None
        head = self._new_head(X.shape[1], self.n_heads, self.hidden, self.n_layers)
        norms = BatchNormedHead(head).to(self._device)
        opt = make_optimizer("adam", list(head.parameters()) + list(norms.parameters()), self.lr, self.weight_decay)
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
            p = torch.softmax(norms(torch.cat(inputs)), dim=-1).split(len(idx), dim=1)
            omega = rampup(t / per_epoch, ramp, self.consistency)
            losses = lsdc_pairwise_bce(p[0], p[1], a) + omega * consistency_mse(p[0], p[1])
            if self.mixup:
                losses = losses + lsdc_pairwise_bce(p[0], p[2], lam * a + (1.0 - lam) * a[:, perm])
            if self.entropy_weight:
                losses = losses + self.entropy_weight * size_kl_uniform(p[0])
            loss = losses.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            head_sums.add_(losses.detach().double())
            return float(loss.detach()) / self.n_heads

        self._run_epochs(len(X), step)
        norms.fold_()
        head_losses = (head_sums / per_epoch).cpu()
        self.head_losses_ = head_losses.tolist()
        self.head_ = head.select([int(head_losses.argmin())])

    def _fit_network(self, dataset, backbone, neighbors, out_dir, resume: bool):
        if backbone is None:
            raise NolabelError("LSD-C end to end starts from a pretext checkpoint: pass backbone=PATH.safetensors")
        if self.ricap and self.mixup:
            raise NolabelError("give ricap or mixup (the composition of the augmented view), not both")
        net = Network.from_checkpoint(dataset, backbone, self.n_clusters, 1, self.hidden, self.n_layers,
                                      seed=self.seed, device=self.device, find_unused_parameters=False)
        frozen = FrozenBlocks(net.net.backbone, self.train_blocks) if self.train_blocks is not None else None
        aug = net.augment(self.augment)
        ramp = self.epochs / 2 if self.rampup_epochs is None else self.rampup_epochs

        def step(idx: torch.Tensor, epoch: int) -> dict[str, Any]:
            if frozen is not None:
                frozen.apply()
            x = net.images.batch(idx)
            b = len(idx)
            clean, view = net.norm(x).to(net.device), aug(x).to(net.device)
            parts = [clean, view]
            if self.ricap:
                mixed, indices, weights = A.ricap(view, beta=self.ricap)
                parts.append(mixed)
            elif self.mixup:
                mixed, indices, weights = A.mixup(view, alpha=self.mixup)
                parts.append(mixed)
            logits, feats = net.model(torch.cat(parts), features=True)
            p_all = torch.softmax(logits[0].float(), dim=-1)
            p, p_aug = p_all[:b], p_all[b:2 * b]
            adj = self._targets(feats[:b].detach().float())
            if len(parts) == 2:
                p_pair, targets = p_aug, adj
            else:
                p_pair, targets = p_all[2 * b:], A.mix_targets(adj.float(), indices, weights)
            bce = lsdc_pairwise_bce(p, p_pair, targets)
            mse = consistency_mse(p, p_aug)
            return {"loss": bce + rampup(epoch, ramp, self.consistency) * mse, "bce": bce, "consistency": mse,
                    "positives": adj.float().mean(), "n": len(parts) * b}

        history = net.fit(self, step, out_dir, resume)
        return net, 0, history
