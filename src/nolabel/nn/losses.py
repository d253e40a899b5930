"""Clustering losses as pure functions of probability / logit tensors.

Shapes: ``p`` is ``(..., B, K)`` (softmax outputs; a leading head dimension ``H`` is
allowed wherever it says ``...``), ``f`` is a ``(B, D)`` feature batch.
Logarithms of probabilities are clamped at ``EPS`` so that a zero never gives ``-inf``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

EPS = 1e-8
#: upper clamp margin of LSD-C's pair probabilities: the smallest that float32 keeps below 1 with room
PAIR_EPS = 1e-6


def entropy(p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``H(p) = -sum_c p_c log p_c`` along ``dim``."""
    return -(p * p.clamp_min(EPS).log()).sum(dim)


def scan_loss(
    p_anchor: torch.Tensor, p_neighbor: torch.Tensor, entropy_weight: float = 5.0,
    pbar: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SCAN: ``total = -mean_b log <p(x_b), p(k_b)> - w * H(pbar)``, ``pbar = mean_b p(x_b)``.

    ``p_anchor``, ``p_neighbor``: ``(..., B, K)``. Returns ``(total, consistency, entropy)``
    each of shape ``(...)`` (one value per head), with ``entropy = H(pbar)``. ``pbar``
    ``(..., K)`` may be given (under DDP: the mean over the global batch, all ranks);
    by default it is the anchors' mean prediction.
    """
    dot = (p_anchor * p_neighbor).sum(-1)
    consistency = -dot.clamp_min(EPS).log().mean(-1)
    ent = entropy(p_anchor.mean(-2) if pbar is None else pbar)
    return consistency - entropy_weight * ent, consistency, ent


def size_prior_kl(pbar: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """KL of a mean prediction to a cluster-size profile, blind to cluster order:
    ``sum_c s_c log(s_c / r_c)`` with ``s = sort(pbar)`` and ``r = sort(prior)`` (both
    descending). ``pbar`` ``(..., K)``, ``prior`` ``(K,)`` or one profile per head ``(..., K)``; returns ``(...)``. With a
    uniform prior it is ``log K - H(pbar)``, SCAN's entropy term up to a constant.
    """
    s = pbar.sort(dim=-1, descending=True).values
    r = prior.sort(dim=-1, descending=True).values.to(s)
    return (s * (s.clamp_min(EPS).log() - r.clamp_min(EPS).log())).sum(-1)


def temi_loss(
    student_a: torch.Tensor,
    student_b: torch.Tensor,
    teacher_a: torch.Tensor,
    teacher_b: torch.Tensor,
    prior: torch.Tensor,
    beta: float = 0.6,
    tau: float = 0.1,
) -> torch.Tensor:
    """TEMI's weighted PMI loss, one value per head, from logits ``(H, B, K)``.

    ``q = softmax(logits / tau)``; ``prior`` ``(H, K)`` is the EMA cluster prior ``q~_t``.
    ``pmi_i(x, x') = log sum_c (q_s^i(c|x) q_t^i(c|x'))^beta / q~_t^i(c)`` (log-sum-exp),
    ``L_i = -(pmi_i(x, x') + pmi_i(x', x)) / 2``; instance weight (teacher ensemble, no
    gradient) ``w(x, x') = mean_j sum_c q_t^j(c|x) q_t^j(c|x')``.
    Returns ``mean_batch w * L_i`` of shape ``(H,)``.
    """
    ls_a, ls_b = F.log_softmax(student_a / tau, -1), F.log_softmax(student_b / tau, -1)
    lt_a, lt_b = F.log_softmax(teacher_a / tau, -1), F.log_softmax(teacher_b / tau, -1)
    log_prior = prior.clamp_min(EPS).log().unsqueeze(-2)
    pmi_ab = torch.logsumexp(beta * (ls_a + lt_b) - log_prior, -1)
    pmi_ba = torch.logsumexp(beta * (ls_b + lt_a) - log_prior, -1)
    with torch.no_grad():
        weight = (lt_a.exp() * lt_b.exp()).sum(-1).mean(0)
    return (weight * -(pmi_ab + pmi_ba) / 2).mean(-1)


def temi_prior_update(prior: torch.Tensor, teacher_probs: torch.Tensor, momentum: float = 0.9) -> torch.Tensor:
    """New EMA prior ``m * prior + (1 - m) * mean_batch q_t`` (``(H, K)`` from ``(H, B, K)``)."""
    return momentum * prior + (1.0 - momentum) * teacher_probs.detach().mean(-2)


def lsdc_pairwise_bce(p: torch.Tensor, p_aug: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """LSD-C: ``-mean_ij [A_ij log(p_i . p'_j) + (1 - A_ij) log(1 - p_i . p'_j)]``.

    ``p``, ``p_aug``: ``(..., B, K)``; ``targets`` ``A`` (or mixed soft targets): ``(B, B)``.
    The inner products are clamped to ``[EPS, 1 - PAIR_EPS]`` (``1 - EPS`` rounds to 1 in
    float32, and two one-hot predictions of one cluster then gave ``0 * log 0 = NaN``); the
    mean over the ``B^2`` pairs (the paper writes a sum) keeps the scale independent of the
    batch size. Returns shape ``(...)``.
    """
    s = (p @ p_aug.transpose(-1, -2)).clamp(EPS, 1.0 - PAIR_EPS)
    bce = -(targets * s.log() + (1.0 - targets) * (1.0 - s).log())
    return bce.mean((-1, -2))


def consistency_mse(p: torch.Tensor, p_aug: torch.Tensor) -> torch.Tensor:
    """``sum_i ||p_i - p'_i||^2 / (K N)`` over the last two dims; shape ``(...)``."""
    n, k = p.shape[-2], p.shape[-1]
    return ((p - p_aug) ** 2).sum((-1, -2)) / (k * n)


def rampup(t: float, length: float, lam: float) -> float:
    """``omega(t) = lam * exp(-5 (1 - t / T)^2)`` for ``t < T``, else ``lam``."""
    if length <= 0 or t >= length:
        return float(lam)
    return float(lam) * math.exp(-5.0 * (1.0 - t / length) ** 2)


def balanced_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Weighted cross-entropy ``sum_b w[y_b] CE_b / sum_b w[y_b]`` (plain mean if no weights).

    ``logits`` ``(..., B, K)``, ``targets`` ``(B,)`` or ``(..., B)`` int, ``weights`` ``(K,)``.
    Returns shape ``(...)``.
    """
    targets = targets.expand(logits.shape[:-1])
    ce = -F.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    if weights is None:
        return ce.mean(-1)
    w = weights[targets]
    return (w * ce).sum(-1) / w.sum(-1).clamp_min(EPS)


def class_balance_weights(targets: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``w_c = B / count_c`` for classes present in ``targets`` (1 for absent ones)."""
    counts = torch.bincount(targets, minlength=n_classes).to(torch.float32)
    return torch.where(counts > 0, len(targets) / counts.clamp_min(1.0), torch.ones_like(counts))


# ---- in-batch adjacency (LSD-C pairwise targets); each gives a symmetric (B, B) float 0/1 matrix


def adjacency_cosine(f: torch.Tensor, tau: float = 0.9) -> torch.Tensor:
    """``A_ij = [cos(f_i, f_j) > tau]``."""
    z = F.normalize(f, dim=-1)
    return (z @ z.T > tau).to(f.dtype)


def adjacency_l2(f: torch.Tensor, tau: float) -> torch.Tensor:
    """``A_ij = [||f_i - f_j||^2 < tau]``."""
    return (torch.cdist(f, f).pow(2) < tau).to(f.dtype)


def adjacency_sne(f: torch.Tensor, tau: float = 0.01, temperature: float = 1.0) -> torch.Tensor:
    """Symmetric SNE with one shared variance: ``p_{j|i} = softmax_{j != i}(-||f_i - f_j||^2 / T)``,
    ``A_ij = [(p_{j|i} + p_{i|j}) / 2 > tau]``, diagonal set to 1."""
    d2 = torch.cdist(f, f).pow(2)
    eye = torch.eye(len(f), dtype=torch.bool, device=f.device)
    cond = torch.softmax((-d2 / temperature).masked_fill(eye, float("-inf")), dim=1)
    a = ((cond + cond.T) / 2 > tau) | eye
    return a.to(f.dtype)


def adjacency_knn(f: torch.Tensor, k: int = 20, metric: str = "cosine") -> torch.Tensor:
    """``A_ij = [i in kNN(j) or j in kNN(i)]`` within the batch (self excluded from the k),
    diagonal set to 1; neighbours by ``metric``: ``"cosine"`` or ``"l2"`` (squared Euclidean
    distance on the features as they are, unnormalised: the authors' code)."""
    n = len(f)
    eye = torch.eye(n, dtype=torch.bool, device=f.device)
    if metric == "l2":
        sim = -torch.cdist(f, f).pow(2)
    elif metric == "cosine":
        z = F.normalize(f, dim=-1)
        sim = z @ z.T
    else:
        raise ValueError(f"unknown kNN metric {metric!r}; choose cosine or l2")
    idx = sim.masked_fill(eye, float("-inf")).topk(min(k, n - 1), dim=1).indices
    a = torch.zeros(n, n, dtype=torch.bool, device=f.device)
    a.scatter_(1, idx, True)
    return (a | a.T | eye).to(f.dtype)


#: default threshold of each thresholded adjacency (``l2``: squared distance, i.e. cosine > 0.9 on unit vectors)
ADJACENCY_TAU = {"cosine": 0.9, "l2": 0.2, "sne": 0.01}
ADJACENCIES = ("knn", "cosine", "l2", "sne")


def adjacency(f: torch.Tensor, kind: str = "knn", k: int = 20, tau: float | None = None,
              temperature: float = 1.0, metric: str = "cosine") -> torch.Tensor:
    """LSD-C's in-batch targets (B, B) of features ``f`` by ``kind`` (the functions above);
    ``tau`` defaults to :data:`ADJACENCY_TAU` of the kind, ``k`` and ``metric`` are used by ``"knn"`` only."""
    tau = ADJACENCY_TAU.get(kind) if tau is None else tau
    if kind == "knn":
        return adjacency_knn(f, k, metric)
    if kind == "cosine":
        return adjacency_cosine(f, tau)
    if kind == "l2":
        return adjacency_l2(f, tau)
    if kind == "sne":
        return adjacency_sne(f, tau, temperature)
    raise ValueError(f"unknown adjacency {kind!r}; choose one of {', '.join(ADJACENCIES)}")


__all__ = [
    "EPS", "entropy", "scan_loss", "size_prior_kl", "temi_loss", "temi_prior_update", "lsdc_pairwise_bce", "consistency_mse",
    "rampup", "balanced_cross_entropy", "class_balance_weights",
    "adjacency_cosine", "adjacency_l2", "adjacency_sne", "adjacency_knn", "adjacency", "ADJACENCIES", "ADJACENCY_TAU",
]
