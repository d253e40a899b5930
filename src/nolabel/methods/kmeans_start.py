"""Heads started from the k-means partition, for uneven cluster sizes.

``kmeans_start`` runs nolabel's own k-means (:class:`~nolabel.methods.kmeans.KMeans` with
its defaults, on the embeddings exactly as given to ``fit``: the baseline a user compares
against) and returns its hard labels and its size profile ``(sizes + 1) / (N + K)``,
sorted descending. :func:`distill_start_` then trains the selected heads (any
architecture) by cross-entropy to those labels for ``START_EPOCHS`` epochs (Adam,
``START_LR``, no weight decay) before the method's own objective takes over; the other
heads keep their random start.

Why. Heads from a random start find the clusters of the training objective, and on
long-tailed data the size term of that objective (even a tempered k-means profile, see
:mod:`~nolabel.methods.size_prior`) has already split the large classes before the
consistency term can hold them together. Started on the k-means partition, the
consistency term moves the boundaries from there. The k-means is the one on the raw
embeddings (not the cosine k-means of
:func:`~nolabel.methods.heads_base.kmeans_size_prior`): on CIFAR-10 ResNet-56 features at
imbalance 10 it scores 83.5 ACC against 74.7 for k-means on L2-normalised rows, and its
sizes (934..93 for classes of 1000..100) are nearer the truth (717..219).

Chosen with labels: the k-means start was picked by comparing labelled scores on the
uneven benchmark sets (seed 0, SCAN, 10 heads, the kept head; a closed-form start of
linear heads at k-means of the L2-normalised rows): StackOverflow MiniLM at imbalance
10, 60.8 ACC against 58.5 from a random start (k-means 57.7). Its cost, seen the same
way: on balanced StackOverflow the k-means start stays near k-means (66.0) where the
random start reached 68.5; ``"both"`` (half the heads from each start, the kept head
chosen by the same label-free rule, :func:`~nolabel.methods.size_prior.select_head`) did
not recover it, because that rule prefers the k-means-started heads there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch

#: how heads are started: every head from k-means, every head at random, or half and half
INITS = ("both", "kmeans", "random")
#: epochs of cross-entropy to the k-means labels before the method's objective
START_EPOCHS = 10
#: Adam learning rate of that start
START_LR = 1e-2


@dataclass
class KMeansStart:
    """nolabel's k-means of the embeddings: ``labels`` ``(N,)`` int64 and ``profile`` ``(K,)``,
    the sorted, add-one smoothed sizes ``(sizes + 1) / (N + K)``, both on the device."""

    labels: torch.Tensor
    profile: torch.Tensor


def kmeans_start(x: np.ndarray, n_clusters: int, seed: int, device: torch.device | str = "cpu") -> KMeansStart:
    """nolabel's :class:`~nolabel.methods.kmeans.KMeans` (defaults, ``seed``) on ``x`` as given."""
    from .kmeans import KMeans

    labels = np.asarray(KMeans(n_clusters, seed=int(seed)).fit(x).labels_, dtype=np.int64)
    sizes = np.sort(np.bincount(labels, minlength=n_clusters))[::-1].astype(np.float64)
    profile = torch.as_tensor((sizes + 1.0) / (sizes.sum() + n_clusters), dtype=torch.float32, device=device)
    return KMeansStart(torch.as_tensor(labels, device=device), profile)


def kmeans_heads(n_heads: int, init: str) -> torch.Tensor:
    """Boolean ``(n_heads,)``: which heads start from k-means (``"both"``: the second half)."""
    mask = torch.zeros(n_heads, dtype=torch.bool)
    if init == "kmeans":
        mask[:] = True
    elif init == "both":
        mask[n_heads // 2:] = True
    return mask


def split_alphas(alphas_of: Callable[[int], torch.Tensor], n_heads: int, init: str) -> torch.Tensor:
    """The tempering exponent of each head: with ``"both"`` each half (random and k-means
    start) spans the whole range ``alphas_of(size of the half)``, so every profile is tried
    from both starts."""
    if init != "both" or n_heads < 2:
        return alphas_of(n_heads)
    half = n_heads // 2
    return torch.cat([alphas_of(half), alphas_of(n_heads - half)])


def distill_start_(
    forward: Callable[[torch.Tensor], torch.Tensor],
    params: Iterable[torch.nn.Parameter],
    X,
    labels: torch.Tensor,
    mask: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    epochs: int = START_EPOCHS,
    lr: float = START_LR,
) -> list[float]:
    """Train the heads ``mask`` selects (``forward(rows) -> (H, B, K)`` logits) by
    cross-entropy to ``labels`` over ``epochs`` seeded shuffled passes (last incomplete
    batch dropped when there is a full one), Adam ``lr``, no weight decay; the other heads
    get no gradient. Returns the mean loss per epoch."""
    heads = torch.nonzero(mask).flatten().tolist()
    if not heads or epochs < 1:
        return []
    opt = torch.optim.Adam(list(params), lr=lr)
    n = len(labels)
    bs = min(batch_size, n)
    history = []
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator).to(labels.device)
        total = 0.0
        steps = max(1, n // bs)
        for b in range(steps):
            idx = order[b * bs : (b + 1) * bs]
            logits = forward(X[idx])[heads]
            target = labels[idx].repeat(len(heads))
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), target) * len(heads)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) / len(heads)
        history.append(total / steps)
    return history
