"""LSD-C (Rebuffi et al.): pairwise BCE against in-batch adjacency, on frozen embeddings or the whole network.

For a batch with features ``f`` the targets are an in-batch adjacency ``A`` (``adjacency``):

- ``"knn"`` (default): ``i in kNN(j) or j in kNN(i)`` by ``knn_metric`` (``"cosine"``, or
  ``"l2"``: squared distance on the features as they are, the authors' code), k =
  ``adjacency_k``, default :func:`default_k` ``= max(1, round(0.78 B / K))`` (the paper's
  two kNN rows, CIFAR-10 k 20 and CIFAR-100-20 k 10 at batch 256, both sit at 0.78 of
  the expected same-cluster count B / K);
- ``"cosine"``: ``cos(f_i, f_j) > tau`` (default tau 0.9);
- ``"l2"``: ``||f_i - f_j||^2 < tau`` (default 0.2, i.e. cosine > 0.9 on unit vectors);
- ``"sne"``: symmetric SNE with one temperature, ``(p_{j|i} + p_{i|j}) / 2 > tau``
  (default tau 0.01, ``sne_temperature`` 1.0).

The diagonal is 1. Loss per head, with ``p`` the prediction on the anchor and ``p'``, ``p''``
on augmented views: ``BCE(A, p p'^T)`` (mean over the B^2 pairs) ``+ omega(t) ||p' - p''||^2 / (K B)``,
``omega(t) = consistency * exp(-5 (1 - t / T)^2)`` for ``t < T = rampup_epochs``
(default half the epochs; the paper's CIFAR-10 setting is lambda 5, T 100 of 220 epochs),
``+ entropy_weight (log K - H(pbar))`` (``pbar`` the batch's mean prediction; frozen regime only
by default, see below).

Frozen embeddings (``fit``). The paper trains a macro-block of the network and a linear
classifier, so the features the pairs come from can move towards the clusters. A linear
head on features that cannot move keeps a fixed, noisy kNN graph, and on such a graph the
pairwise BCE is lowest for hedged predictions: on StackOverflow MiniLM (K 20) k-means
assignments smoothed to confidence 0.5 score a lower loss than the same assignments at 0.9
or 0.99, so the linear head learned merged, low-confidence clusters (31 to 42 ACC, 11 to 16
of 20 clusters used, k-means 65; 2 to 3 of 100 used at K = 100). The defaults therefore:

- the head is the frozen-feature stand-in for the trained block: an MLP ``hidden`` 512,
  ``n_layers`` 2 (affine -> BatchNorm -> GELU -> linear; the BatchNorm is trained with batch
  statistics and folded into the first affine map afterwards, :class:`BatchNormedHead`);
- random batches (the paper's; ``batches="groups"``, neighbour-group batches whose kNN
  adjacency also holds the mined k-NN relation, remains an option) and k from
  :func:`default_k`, so that a row has about as many positives as it has cluster mates;
- ``entropy_weight`` 0.05 on ``log K - H(pbar)``: the BCE has no term that fills a cluster,
  and at K = 100 on 10 classes half the clusters never won an argmax; the weight is kept
  small so that the pairwise term stays in charge (weight 1 drove the mean confidence to
  uniform, a label-free sign; 0.03 and 0.1 behaved alike).
- uneven cluster sizes (``size_prior``, frozen regime): with ``"tempered"`` (default) head
  ``h`` of ``n_heads`` (default 3) replaces the uniform target of that size term by the
  tempered k-means profile ``r_h ∝ n^alpha_h`` (``alpha`` 0, 0.5, 1:
  :mod:`~nolabel.methods.size_prior`), i.e. ``KL(sort(pbar) || r_h)``, and the head kept
  is the one of highest neighbour kappa among those using the most clusters (the mined
  neighbours, or a 20-NN mined here), as for SCAN, SeLa and TEMI; ``"uniform"`` is the
  single-target term above, the head kept the one of lowest last-epoch loss. Why: on
  CIFAR-10 ResNet-56 features cut to an imbalance of 10 the uniform target scored 65.9
  ACC against k-means 73.8 (3 seeds); without any size term 68.0, towards the k-means
  profile 73.7 (seed 0, one empty cluster). Chosen with labels (labelled scores of the
  uneven benchmark sets compared these variants);
- start (``init``, frozen regime): ``"kmeans"`` (default) first trains every head (through
  its BatchNorm) for a few epochs by cross-entropy to the partition of nolabel's k-means
  on the same embeddings, whose sizes also give the profiles
  (:mod:`~nolabel.methods.kmeans_start`); ``"random"`` the random start; ``"both"`` half
  each. Chosen with labels, as for SCAN and SeLa. With these two defaults (3 seeds,
  ``benchmarks/uneven.py``; k-means in brackets): CIFAR-10 ResNet-56 test 84.5 (84.4),
  at imbalance 10 84.0 (83.4), at 100 68.8 (60.5); StackOverflow MiniLM at imbalance 10
  63.4 (57.3), at 100 58.6 (45.1). The single uniform head they replace was never measured
  on the uneven subsets; the whole regime keeps one head, uniform and random
  (``network_defaults``);
- opt-in, the in-batch kNN reads neighbour-averaged rows (``knn_smoothing`` = m > 0, frozen regime):
  ``x~_i = x^_i + sum_j x^_j`` over the first ``knn_smoothing`` mined neighbours ``j`` of ``i``
  (at most ``n_neighbors``; :func:`neighbor_mean`, one k-NN mean-shift step, per batch, no copy
  of the data); the head still reads ``x``. Not in the paper: there the kNN reads the features
  of the block being trained, which move towards the clusters; frozen rows do not, and at
  ``k = 0.78 B / K`` the in-batch kNN reaches far out (about the 1,500th neighbour over AG News,
  K 4), where the frozen text features are mixed. One averaging step makes those wide
  neighbourhoods purer (in-batch kNN purity at the default k, labels used to measure:
  SearchSnippets 0.46 -> 0.61, StackOverflow 0.52 -> 0.59; k-means on the averaged rows 74.1 ->
  79.7 and 65.3 -> 69.4). Effect of m = 10 (seeds 0-2, 2026-12-02, rows ``lsdc+avg10``; in
  brackets the default ``knn_smoothing=0``, then k-means; benchmarks/results/frozen_text.md,
  uneven.*.md, lsdc_large_k.md): AG News 84.4 +- 0.1 (79.9; 83.6), SearchSnippets 79.8 (78.9; 74.1),
  StackOverflow K 20 68.9 (68.2; 65.4), Biomedical 50.7 +- 1.3 (50.3; 52.6: still under
  k-means), CIFAR-10 ResNet-56 84.5 (84.5; 84.4), at K 100 the largest cluster 2.6-3.2x
  (3.0-4.3x), many-to-one 83.1 (83.1; 82.6). The cost is on long-tailed data, where averaging
  pulls members of small classes towards large ones: CIFAR imbalance 100 65.9 (68.8; 60.5),
  StackOverflow imbalance 10 62.1 (63.4; 57.3) and 100 54.9 (58.6; 45.1); and on the first 8
  StackOverflow classes 81.5 +- 2.9 with one cluster empty in two seeds (89.8; 83.6): averaging
  merged two close classes. Not the default for that collapse. Variants (seed 0): averaging over 5 neighbours
  (StackOverflow imbalance 100 53.9, CIFAR 68.6: no better), over mutual neighbours only (``i``
  among ``j``'s 20): AG News 83.8, Biomedical 51.7, StackOverflow K 20 68.4 with 2.91x, CIFAR K
  100 3.86x, StackOverflow imbalance 100 59.0, CIFAR imbalance 100 69.0 (between the two, and
  under k-means on Biomedical); the row weighted as much as its neighbours' mean: AG News 83.6,
  StackOverflow imbalance 100 55.3;
- the view ``p'`` (``view``) is a random one of the first ``n_neighbors`` mined neighbours
  (``"neighbor"``, the frozen-feature analogue of an augmentation, as in SCAN and TEMI) or the
  perturbed embedding (``"perturb"``: dropout ``dropout`` and noise ``noise``); ``p''`` is ``p``.
  With ``mixup`` = alpha a MixUp batch ``x~_j = l x_j + (1 - l) x_perm(j)``,
  ``l ~ Beta(alpha, alpha)`` adds ``BCE(T, p p~^T)``, ``T_ij = l A_ij + (1 - l) A_i,perm(j)``.
  Optimiser: Adam lr 1e-3, weight decay 1e-4, batch 256, 100 epochs.

Measured at larger K (benchmarks/results/lsdc_large_k.md, seeds 0-2), the default:
StackOverflow K 20: 68.2 ACC, 20/20 clusters, largest 3.0-3.1x uniform, smallest 3 to 57 items
(k-means 65.4); CIFAR-10 ResNet-56 K 100: 100/100 clusters, largest 3.0-4.3x, many-to-one ACC
83.1 (k-means 82.6). With ``knn_smoothing=10``: 68.9, largest 1.4x, 3.2x and 3.2x by seed; K 100 2.6-3.2x, 83.1. The one uniform head with a random start (``n_heads=1, size_prior="uniform",
init="random"``, the default until 2026-12-01) held sizes tighter there: 69.7 ACC and largest
1.5x at K 20, 82.9 and 2.1x at K 100, but had not been measured on uneven data. The tempered
heads trade that for the uneven sets above; the health check warns past 3x. Two changes
tried on CIFAR K 100 (seed 0, 2026-12-01, not kept): the size term read from a running mean
of the predictions (momentum 0.99) instead of the batch's own mean left 38 to 51 of 100
clusters non-empty (the soft sizes were even, the argmax sizes were not); batch 1024 gave
the three heads 2.4x, 3.8x and 4.3x and kept the 3.8x one (batch 256: 3.9x, 4.3x, 5.5x).
The size term acts on soft mean predictions, which LSD-C keeps low in confidence at large
K, so it bounds the argmax sizes only loosely. Two more tried on CIFAR K 100 (seed 0,
2026-12-02, not kept): the size term on sharpened predictions ``softmax(logits / 0.25)``
brought the largest cluster from 3.9x to 3.0x but many-to-one ACC from 82.9 to 82.2 (k-means
82.6); relabelling the kept head's predictions by Sinkhorn-Knopp to its size profile held every
cluster within 1.5x and lost 1.7 to 2.1 points (81.2 and 80.8 at lam 25 and 10). Per head
(seed 0, 2026-12-02): the default's three heads reach 3.9x, 4.3x and 5.8x (many-to-one 82.8 to
83.1) where k-means' own largest cluster is 2.7x; with ``entropy_weight`` 0.2 the uniform-target
head holds 1.65x (82.9) but neighbour kappa keeps the 3.58x one (83.2); at 0.5, 2.23x and a
kept 3.76x. Kappa favours the heads with larger clusters, and a rule that skipped heads the
health check flags would pick wrongly on long-tailed data, whose true largest class is above 3x.

Below k-means on AG News and Biomedical MiniLM features (79.9 +- 0.4 and 50.3 +- 0.5 against 83.6
and 52.6, seeds 0-2; with ``knn_smoothing=10`` 84.4 and 50.7, above): the three heads agree there (AG News: kappa 0.818 each, 1.2x), so the cause is
the in-batch kNN graph, whose k = 50 of 256 at K = 4 reaches about the 1,500th neighbour over the
data. ``batches="groups"`` (the mined 20-NN relation added), compared with labels against this
default (benchmarks/results/frozen_text_lsdc.md, uneven.*.md, lsdc_large_k.md; seeds 0-2 unless
stated): AG News 82.8 +- 0.5 (79.9), Biomedical 52.0 +- 1.1 (50.3), SearchSnippets 79.4 +- 0.4
(78.9); StackOverflow at imbalance 10 64.3 (63.4) and 100 60.9 (58.6); CIFAR-10 ResNet-56 at
imbalance 10 83.7 (84.0) and 100 69.1 (68.8); StackOverflow K 20 68.8 +- 0.4 with the largest
cluster 2.92x / 3.12x / 3.00x (default 68.2, up to 3.14x); CIFAR K 100 many-to-one 83.2 with
3.4-4.6x (83.1 with 3.0-4.3x). Better on the text sets and StackOverflow, 0.3 lower at CIFAR
imbalance 10, looser at K 100 and still under k-means on AG News and Biomedical (83.6, 52.6), so it
is not the default. Three more tried there (seed 0, 2026-12-02, not kept; default in brackets). The
in-batch kNN (per-row k) on each head's hidden layer, detached, as the paper's kNN reads the
features of the block it trains: AG News 83.7 (79.9), but Biomedical 45.9 (50.9), SearchSnippets
79.4 (79.2); with neighbour-group batches added, AG News 82.9. Positives only from the mined 20-NN
relation (group batches) and the in-batch kNN pairs that are not mined left out of the BCE: AG News
79.3, Biomedical 48.8; negatives only beyond 2.5 times the per-row k: AG News 81.9. On AG News the
in-batch kNN pairs are 50 % same-class at k = 50 of 256 and 74 % at k = 5 (labels used to measure):
half the same-class pairs are taught as negatives whatever the positives are.

Whole network (``LSDC.for_network(...).fit_dataset(dataset, backbone)``, :mod:`.network`),
one linear head, per batch, as the authors' code does it (github.com/srebuffi/lsd-clusters):
three augmented views (``augment``) of each image, the anchor ``x`` and ``x'``, ``x''``;
with ``ricap`` = beta, ``x'`` and ``x''`` become two RICAP composites with one boundary and
the same source image per corner, the corner larger than a quarter keeping the identity
order (:func:`~nolabel.nn.augment.ricap_pair`); with ``mixup`` = alpha two MixUp batches with
one weight and partner. ``A`` comes from the anchor's features ``f.detach()`` (default
squared L2, unnormalised), the BCE is taken between ``p(x)`` and ``p(x')`` against targets
mixed by area / weight (:func:`~nolabel.nn.augment.mix_targets`), the consistency between
``p(x')`` and ``p(x'')``. Each view has its own forward pass (BatchNorm statistics of one
kind of batch), and BatchNorm layers of frozen blocks run in training mode like the rest
(``frozen_bn="train"``; ``"eval"`` keeps their pretext statistics). ``anchor="clean"`` uses
the un-augmented image for ``x``. ``train_blocks``: train only the last that many backbone
blocks (the authors train the last macro-block, ``train_blocks=1``). Differences kept from
the authors: the in-batch k counts neighbours without the sample itself (their k = 20 keeps
18 neighbours); the RICAP targets pair composite j with the sources of composite j (the
authors' code indexes the permuted corners by the pure image's index instead). ``schedule``:
``"constant"``, ``"cosine"`` or ``"multistep"`` (torch's ``MultiStepLR``, divide by 10 at each
epoch of ``milestones``; default ``round(epochs * 140 / 220)`` and ``round(epochs * 180 / 220)``,
the authors' CIFAR-10 steps 140 and 180 of 220 epochs; their MNIST row has no step).

``batches="groups"`` (both regimes; not in the paper or the authors' code, SCAN's use of the
mined k-NN): a batch is ``B / group_size`` random anchors, each followed by ``group_size - 1``
of its first ``n_neighbors`` neighbours mined on the pretext features (``neighbors`` passed
to ``fit`` / ``fit_dataset``, else mined by cosine with
:func:`~nolabel.methods.network.mine_neighbors`), and ``A`` is the in-batch adjacency OR the
mined relation (``j`` among the mined neighbours of ``i`` or ``i`` among those of ``j``). The
in-batch adjacency comes from features that move while training; the mined one stays
anchored to the pretext's neighbourhoods (SimCLR 20-NN purity 93.5 on MNIST test), and a
random batch of 256 out of 10,000 holds almost no mined pair. Defaults
(``network_defaults``): RICAP beta 0.3, in-batch kNN by squared L2, linear head,
``batches="groups"``, size term 0.05, ``schedule="multistep"``, ramp-up T 50, Adam lr 1e-3,
weight decay 1e-4, 50 epochs (the paper: SGD lr 0.1, momentum 0.9, ``nesterov`` False, weight
decay 5e-4, no size term, random batches; ``optimizer="sgd"`` etc. give those). Under torchrun the
adjacency is computed within each rank's own batch.

With ``n_heads`` > 1 the head with the lowest mean loss over the last epoch is kept
(label-free).

End to end on MNIST test (benchmarks/results/mnist_end_to_end.lsdc*.md; the 10,000 test images, the
only MNIST images in the shared data; SimCLR small_cnn pretext of 15 epochs, 20-NN purity 93.7;
RICAP 0.3, in-batch 10-NN by squared L2, lambda 5, T 50, batch 256, Adam lr 1e-3, weight decay 1e-4;
seeds 0-2). The paper's row with Adam (15 epochs, random batches, no size term) reaches 86.9 +- 0.7,
with one cluster empty and one double in each seed; the paper's SGD lr 0.1 stays near the uniform
solution (32.7 on seed 0 against Adam's 72.3 +- 10.3 at 5 epochs, mnist_end_to_end.lsdc_e5.md).
``batches="groups"`` (mined 20-NN), the size term 0.05 and ``schedule="multistep"`` (chosen by
reasoning about that failure, not by comparing ACC) give 93.5 +- 2.7 at 10 epochs, 95.9 +- 0.3 at 15
and 96.3 +- 0.3 at 30 with only the last conv block trained (``train_blocks=1``, the authors'), and
**97.2 +- 0.1** at 30 epochs (1,170 steps) with the last two of small_cnn's four conv blocks
(``train_blocks=2``; about 3,100 s a seed at one thread on a loaded CPU). That one setting was
picked with labels, on seed 0 at 15 epochs, among five (1, 2 or 4 blocks, mined 5-NN, cosine
in-batch kNN: 95.9, 96.8, 95.6, 95.8, 96.0; mnist_end_to_end.lsdc_blocks.md); a block of small_cnn is
one conv layer, where the authors' macro-block of a ResNet holds four. The paper's 98.6 trains on
the 70,000 train + test images (about 4,100 steps) from RotNet.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import NolabelError, check_choice
from ..nn import augment as A
from ..nn.heads import MultiHead, _shared_affine
from ..nn.losses import ADJACENCIES, consistency_mse, entropy, lsdc_pairwise_bce, rampup
from ..nn.losses import adjacency as adjacency_targets
from ..train.loop import SCHEDULES
from . import register
from ..nn.losses import size_prior_kl
from .heads_base import HeadMethod, kmeans_size_prior, make_optimizer, perturb, random_neighbors
from .kmeans_start import INITS, distill_start_, kmeans_heads, kmeans_start, split_alphas
from .size_prior import profile_alphas, select_head, selection_neighbors, tempered_profiles
from .network import FrozenBlocks, Network, NetworkMethod, as_neighbors, mine_neighbors

VIEWS = ("neighbor", "perturb")
BATCHES = ("groups", "random")
KNN_METRICS = ("cosine", "l2")
ANCHORS = ("augmented", "clean")
SIZE_PRIORS = ("tempered", "uniform")


def neighbor_groups(anchors: torch.Tensor, neighbors: torch.Tensor, size: int,
                    generator: torch.Generator | None) -> torch.Tensor:
    """Each anchor followed by ``size - 1`` of its mined neighbours (uniform, with
    replacement): ``(len(anchors) * size,)`` row indices."""
    cols = torch.randint(neighbors.shape[1], (len(anchors), size - 1), generator=generator).to(neighbors.device)
    return torch.cat([anchors[:, None], neighbors[anchors[:, None], cols]], dim=1).reshape(-1)


def adjacency_mined(idx: torch.Tensor, neighbors: torch.Tensor) -> torch.Tensor:
    """``A_ij = [idx_j in kNN(idx_i) or idx_i in kNN(idx_j) or idx_i = idx_j]`` from the mined
    k-NN of the whole data (``neighbors``: the batch's rows of the table, ``(B, k)``)."""
    a = (neighbors[:, :, None] == idx[None, None, :]).any(1) | (idx[:, None] == idx[None, :])
    return (a | a.T).float()


def neighbor_mean(x: torch.Tensor, idx: torch.Tensor, neighbors: torch.Tensor) -> torch.Tensor:
    """``x~_i = x^_i + sum_{j in N(i)} x^_j`` for the rows ``idx`` (``x^`` the unit rows, ``N(i)``
    the columns of ``neighbors``): one k-NN mean-shift step, up to a scale that cosine ignores."""
    rows = torch.cat([idx[:, None], neighbors[idx]], dim=1)
    return torch.nn.functional.normalize(x[rows.reshape(-1)], dim=-1).reshape(*rows.shape, -1).sum(1)


def default_k(batch: int, n_clusters: int) -> int:
    """In-batch kNN size ``max(1, round(0.78 B / K))``: both of the paper's kNN settings keep
    k at 0.78 of the expected same-cluster count B / K (CIFAR-10 k 20 at 256 / 10, CIFAR-100-20
    k 10 at 256 / 20), so a row's positives match its cluster and a confident clustering pays
    few false negatives."""
    return max(1, round(0.78 * batch / n_clusters))


def adjacency_knn_rows(f: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """In-batch cosine kNN adjacency with one ``k`` per row (``k`` ``(B,)`` int, self excluded):
    ``A_ij = [j in kNN_{k_i}(i) or i in kNN_{k_j}(j)]``, diagonal 1."""
    n = len(f)
    eye = torch.eye(n, dtype=torch.bool, device=f.device)
    z = torch.nn.functional.normalize(f, dim=-1)
    order = (z @ z.T).masked_fill(eye, float("-inf")).argsort(dim=1, descending=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(n, device=f.device).expand(n, -1))
    a = rank < k.clamp(1, n - 1)[:, None]
    return (a | a.T | eye).to(f.dtype)


def start_k(start_labels: torch.Tensor) -> torch.Tensor:
    """Per-row in-batch k from a batch's k-means labels: ``max(1, round(0.78 n_i))`` with
    ``n_i`` the batch rows sharing row ``i``'s k-means cluster (itself included): the rule of
    :func:`default_k` with the expected count ``B / K`` replaced by the row's own cluster's."""
    same = (start_labels[:, None] == start_labels[None, :]).sum(1)
    return torch.clamp(torch.round(0.78 * same.float()).long(), min=1)


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

    network_defaults = {"n_heads": 1, "size_prior": "uniform", "init": "random", "ricap": 0.3, "knn_metric": "l2", "hidden": None, "n_layers": 1, "entropy_weight": 0.05,
                        "batches": "groups", "schedule": "multistep", "rampup_epochs": 50, "epochs": 50, "lr": 1e-3}

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
        anchor: str = "augmented",
        frozen_bn: str = "train",
        optimizer: str = "adam",
        nesterov: bool = False,
        schedule: str = "constant",
        milestones: list[int] | None = None,
        amp: bool | None = None,
        n_heads: int = 3,
        hidden: int | None = 512,
        n_layers: int = 2,
        entropy_weight: float = 0.05,
        size_prior: str = "tempered",
        init: str = "kmeans",
        knn_smoothing: int = 0,
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
        check_choice("adjacency", adjacency, ADJACENCIES)
        check_choice("view", view, VIEWS)
        self.adjacency = adjacency
        self.adjacency_k = adjacency_k
        self.tau = tau
        self.sne_temperature = sne_temperature
        check_choice("knn_metric", knn_metric, KNN_METRICS)
        self.knn_metric = knn_metric
        self.view = view
        self.n_neighbors = n_neighbors
        check_choice("batches", batches, BATCHES)
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
        self.anchor = anchor
        self.frozen_bn = frozen_bn
        self.optimizer = optimizer
        self.nesterov = nesterov
        check_choice("schedule", schedule, SCHEDULES)
        self.schedule = schedule
        self.milestones = None if milestones is None else [int(m) for m in milestones]
        self.amp = amp
        self.n_heads = n_heads
        self.hidden = hidden
        self.n_layers = n_layers
        self.entropy_weight = entropy_weight
        check_choice("size_prior", size_prior, SIZE_PRIORS)
        self.size_prior = size_prior
        check_choice("init", init, INITS)
        self.init = init
        if int(knn_smoothing) < 0:
            raise NolabelError(f"knn_smoothing must be a count of neighbours >= 0, got {knn_smoothing}")
        self.knn_smoothing = int(knn_smoothing)
        self.needs_neighbors = self.needs_neighbors or self.knn_smoothing > 0

    @classmethod
    def neighbors_needed(cls, params: dict[str, Any]) -> int:
        """``n_neighbors`` with the default ``view="neighbor"``, ``batches="groups"`` or
        ``knn_smoothing`` > 0, else none."""
        if (params.get("view", "neighbor") != "neighbor" and params.get("batches", "groups") != "groups"
                and not int(params.get("knn_smoothing", 0))):
            return 0
        return int(params.get("n_neighbors", 20))

    def _targets(self, f: torch.Tensor, idx: torch.Tensor | None = None, nb: torch.Tensor | None = None,
                 start_labels: torch.Tensor | None = None) -> torch.Tensor:
        """In-batch adjacency of ``f`` (B, d); kNN's k defaults to :func:`default_k`, or per
        row :func:`start_k` when the batch's k-means labels ``start_labels`` are given (cosine
        kNN); with neighbour-group batches the kNN adjacency also holds the mined k-NN relation."""
        k = self.adjacency_k or default_k(len(f), self.n_clusters)
        if (start_labels is not None and self.adjacency == "knn" and self.adjacency_k is None
                and self.knn_metric == "cosine"):
            a = adjacency_knn_rows(f, start_k(start_labels))
        else:
            a = adjacency_targets(f, self.adjacency, k, self.tau, self.sne_temperature, self.knn_metric)
        if nb is not None and self.batches == "groups":
            a = torch.maximum(a, adjacency_mined(idx.to(a.device), nb[idx].to(a.device)).to(a.dtype))
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
        start = None
        if self.init != "random":
            start = kmeans_start(x, self.n_clusters, self.seed, self._device)
            self.start_history_ = distill_start_(norms, list(head.parameters()) + list(norms.parameters()), X,
                                                 start.labels, kmeans_heads(self.n_heads, self.init),
                                                 self.batch_size, self._cpu_gen)
        profiles = None
        if self.size_prior == "tempered" and self.entropy_weight:
            base = start.profile if start is not None else kmeans_size_prior(X, self.n_clusters, self.seed)
            profiles = tempered_profiles(base, split_alphas(profile_alphas, self.n_heads, self.init))
        head_sums = torch.zeros(self.n_heads, dtype=torch.float64, device=self._device)

        def step(idx: torch.Tensor, t: int) -> float:
            if t % per_epoch == 0:
                head_sums.zero_()
            if self.batches == "groups":
                idx = neighbor_groups(idx[: max(1, len(idx) // self.group_size)], nb, self.group_size, self._cpu_gen)
            f = X[idx]
            f_knn = neighbor_mean(X, idx, nb[:, : self.knn_smoothing]) if self.knn_smoothing else f
            a = self._targets(f_knn, idx, nb, None if start is None else start.labels[idx])
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
                size = size_kl_uniform(p[0]) if profiles is None else size_prior_kl(p[0].mean(-2), profiles)
                losses = losses + self.entropy_weight * size
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
        best = int(head_losses.argmin())
        if profiles is not None:
            if nb is None:
                nb = self._neighbors(selection_neighbors(x, self._device, self.seed))
            best, kappas = select_head(self._all_logits(head, X), nb)
            self.head_losses_ = [-q for q in kappas]
        self.prior_ = None if profiles is None else profiles[best].cpu().tolist()
        self.head_ = head.select([best])

    def _fit_network(self, dataset, backbone, neighbors, out_dir, resume: bool):
        if backbone is None:
            raise NolabelError("LSD-C end to end starts from a pretext checkpoint: pass backbone=PATH.safetensors")
        if self.ricap and self.mixup:
            raise NolabelError("give ricap or mixup (the composition of the augmented view), not both")
        check_choice("anchor", self.anchor, ANCHORS)
        if self.frozen_bn not in ("train", "eval"):
            raise NolabelError(f"unknown frozen_bn {self.frozen_bn!r}; choose train or eval")
        net = Network.from_checkpoint(dataset, backbone, self.n_clusters, 1, self.hidden, self.n_layers,
                                      seed=self.seed, device=self.device, find_unused_parameters=False)
        nb = None
        if self.batches == "groups":
            if neighbors is None:
                neighbors = mine_neighbors(dataset, backbone, self.n_neighbors, self.device)
            nb = as_neighbors(neighbors, len(net.images))[:, : self.n_neighbors]
        frozen = None
        if self.train_blocks is not None:
            frozen = FrozenBlocks(net.net.backbone, self.train_blocks, bn_eval=self.frozen_bn == "eval")
        aug = net.augment(self.augment)
        ramp = self.epochs / 2 if self.rampup_epochs is None else self.rampup_epochs

        def step(idx: torch.Tensor, epoch: int) -> dict[str, Any]:
            if frozen is not None:
                frozen.apply()
            if nb is not None:  # torch's global generator: restored on resume
                idx = neighbor_groups(idx[: max(1, len(idx) // self.group_size)], nb, self.group_size, None)
            x = net.images.batch(idx)
            anchor = (aug(x) if self.anchor == "augmented" else net.norm(x)).to(net.device)
            v1, v2 = aug(x).to(net.device), aug(x).to(net.device)
            if self.ricap:
                v1, v2, indices, weights = A.ricap_pair(v1, v2, beta=self.ricap)
            elif self.mixup:
                v1, perm, lam = A.mixup(v1, alpha=self.mixup)
                v2, indices, weights = lam * v2 + (1.0 - lam) * v2[perm], perm, lam
            # one forward pass per view: BatchNorm statistics of a batch of one kind (the authors')
            logits, feats = net.model(anchor, features=True)
            p = torch.softmax(logits[0].float(), dim=-1)
            p1 = torch.softmax(net.model(v1)[0].float(), dim=-1)
            p2 = torch.softmax(net.model(v2)[0].float(), dim=-1)
            adj = self._targets(feats.detach().float(), idx, nb)
            targets = adj if not (self.ricap or self.mixup) else A.mix_targets(adj, indices, weights)
            bce = lsdc_pairwise_bce(p, p1, targets)
            mse = consistency_mse(p1, p2)
            loss = bce + rampup(epoch, ramp, self.consistency) * mse
            if self.entropy_weight:
                loss = loss + self.entropy_weight * size_kl_uniform(p)
            return {"loss": loss, "bce": bce, "consistency": mse, "positives": adj.mean(), "n": 3 * len(idx)}

        history = net.fit(self, step, out_dir, resume)
        return net, 0, history
