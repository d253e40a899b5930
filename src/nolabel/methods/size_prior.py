"""Label-free answer to uneven cluster sizes: a family of size profiles, one per head,
and a size-neutral choice among the heads.

Why. The size terms of SCAN (entropy of the mean prediction) and SeLa (equipartition)
force equal clusters; the k-means size profile is no fix on its own, because k-means
makes uneven clusters on balanced data (StackOverflow MiniLM, 20 equal classes: k-means
clusters of 1380 down to 375 items) and too even ones on long-tailed data (CIFAR-10
ResNet-56 features, imbalance 10: k-means 717..219 where the classes are 1000..100).
Which one the data has is not knowable from sizes alone, so each head is trained
towards a different profile and the result chooses:

- profiles :func:`tempered_profiles`: ``r_h ∝ n^alpha_h`` with ``n`` the sorted,
  add-one smoothed k-means sizes (:func:`~nolabel.methods.heads_base.kmeans_size_prior`)
  and ``alpha_h`` evenly spaced over ``[0, MAX_ALPHA = 1]``, from uniform to the k-means
  profile (a single head takes ``alpha = 1``). Exponents up to 2 were tried: k-means
  under-states a long tail, but heads pulled past its profile left clusters empty
  (CIFAR-10 at imbalance 10: 6 to 9 of 10 clusters used from alpha 1.1 on) and so
  were never kept by the rule below;
- choice :func:`select_head`: among the heads that leave the fewest of the K clusters
  empty (K is what the user asked for; a head that merges groups into fewer clusters
  does not answer it), the one whose hard partition has the highest
  :func:`neighbor_kappa` on the k-NN graph the method already uses: Cohen's kappa of
  "an item and its neighbour share a cluster", i.e. Newman's modularity divided by its
  largest value for the same cluster sizes. Modularity itself, ``p_o - sum_c a_c^2``,
  favours equal sizes: on 4 separated blobs of 320, 160, 80 and 40 points (10-NN), a
  SCAN head that split the big blob into near-equal clusters (sizes 173..120) scored
  0.605, the head that found 320, 160, 72, 48 scored 0.578. Normalised, a partition
  that keeps every edge inside scores 1 whatever its sizes, and one cluster scores 0.
  Both the empty-cluster rule and kappa are the same yardstick for every head whatever
  its profile, unlike the training losses.

Measured while choosing (seed 0, SCAN, 10 heads; labels only scored per head, never
to choose): the rule keeps a head of 75.3 ACC on CIFAR-10 ResNet-56 at imbalance 10
(k-means 74.7, uniform-prior head 61.9), 62.3 at imbalance 100 (k-means 59.5, uniform
45.5) and 67.1 on StackOverflow MiniLM balanced (uniform 67.7, k-means 67.2).
"""
from __future__ import annotations

import numpy as np
import torch

from ..neighbors import knn

#: the largest tempering exponent of the size profiles
MAX_ALPHA = 1.0
#: the modularity graph: the first this many neighbours of each row
SELECT_NEIGHBORS = 20


def profile_alphas(n_heads: int, max_alpha: float = MAX_ALPHA) -> torch.Tensor:
    """``n_heads`` exponents evenly spaced over ``[0, max_alpha]``; a single head gets 1
    (the k-means profile itself)."""
    if n_heads == 1:
        return torch.ones(1)
    return torch.linspace(0.0, max_alpha, n_heads)


def tempered_profiles(base: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """``(H, K)`` size profiles ``r_h = base^alpha_h / sum base^alpha_h`` from a positive
    ``(K,)`` profile ``base`` (sorted order is kept)."""
    return torch.softmax(alphas.to(base)[:, None] * base.clamp_min(1e-12).log()[None], dim=-1)


@torch.no_grad()
def neighbor_kappa(neighbors: torch.Tensor, labels: torch.Tensor, n_clusters: int) -> torch.Tensor:
    """Cohen's kappa between the clusters of the two ends of a k-NN edge: Newman's
    modularity over its largest value for the same cluster volumes.

    ``neighbors`` ``(N, k)`` int (row ``i`` lists ``i``'s neighbours), ``labels`` ``(..., N)``
    int. On the graph ``A + A^T`` (total weight ``2m = 2 N k``, degree ``d_i = k + indegree_i``,
    cluster volume share ``a_c = sum_{i in c} d_i / 2m``) the observed agreement is
    ``p_o = 2 #{(i, j): j in kNN(i), y_i = y_j} / 2m`` and the chance agreement
    ``p_e = sum_c a_c^2``; ``kappa = (p_o - p_e) / (1 - p_e)`` (0 for a single cluster).
    Returns ``(...)`` float64.
    """
    n, k = neighbors.shape
    deg = torch.full((n,), float(k), dtype=torch.float64, device=neighbors.device)
    deg.index_add_(0, neighbors.reshape(-1), torch.ones(n * k, dtype=torch.float64, device=neighbors.device))
    step = max(1, (1 << 22) // k)  # rows per block of edges: O(block * k) temporaries, not O(N * k)
    two_m = 2.0 * n * k
    flat = labels.reshape(-1, n)
    out = torch.empty(len(flat), dtype=torch.float64)
    for h, lab in enumerate(flat):
        same = sum(int((lab[s : s + step, None] == lab[neighbors[s : s + step]]).sum()) for s in range(0, n, step))
        p_o = 2.0 * same / two_m
        a = torch.zeros(n_clusters, dtype=torch.float64, device=neighbors.device).index_add_(0, lab, deg) / two_m
        p_e = float((a**2).sum())
        out[h] = (p_o - p_e) / (1.0 - p_e) if p_e < 1.0 - 1e-12 else 0.0
    return out.reshape(labels.shape[:-1])


def selection_neighbors(x: np.ndarray, device: torch.device | str | None, seed: int) -> np.ndarray:
    """The k-NN graph :func:`select_head` reads when the method was given none: the first
    ``SELECT_NEIGHBORS`` cosine neighbours of each row (fewer on a set that has fewer rows)."""
    return knn(x, min(SELECT_NEIGHBORS, len(x) - 1), device=device, seed=seed).indices


def select_head(logits: torch.Tensor, neighbors: torch.Tensor, n_clusters: int | None = None) -> tuple[int, list[float]]:
    """The head to keep from ``logits`` ``(H, N, K)``: among the heads whose argmax
    partition leaves the fewest clusters empty, the one of highest :func:`neighbor_kappa`
    on the first ``SELECT_NEIGHBORS`` neighbours. Returns its index and every head's kappa.
    ``logits`` may instead be the argmax labels ``(H, N)`` (integers, with ``n_clusters``),
    which the head methods compute in row chunks without the ``(H, N, K)`` array."""
    nb = neighbors[:, :SELECT_NEIGHBORS].to(logits.device)
    if logits.is_floating_point():
        labels, k = logits.argmax(-1), logits.shape[-1]
    else:
        labels, k = logits, int(n_clusters)
    used = torch.stack([torch.bincount(lab, minlength=k).gt(0).sum() for lab in labels]).cpu()
    q = neighbor_kappa(nb, labels, k)
    return int(q.masked_fill(used < used.max(), float("-inf")).argmax()), q.tolist()
