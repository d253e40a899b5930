"""Balanced pseudo-labels by Sinkhorn-Knopp (SeLa).

For log-probabilities ``log P`` (N, K), find ``Q = diag(u) P^lambda diag(v)`` whose rows
sum to 1 and whose columns (clusters) each sum to ``N / K`` (equal partition), by
alternating the scalings ``v = (N / K) / (P^lambda' u)`` and ``u = 1 / (P^lambda v)``
in float64, as the authors' code does. ``P^lambda`` is formed once, shifted by each row's
maximum in the log domain (absorbed into ``u``), so it cannot overflow; each iteration is
then two matrix-vector products instead of two log-sum-exps over the whole matrix.
Leading batch dimensions (e.g. one problem per head) are solved together.
"""
from __future__ import annotations

import torch

_TINY = torch.finfo(torch.float64).tiny


@torch.no_grad()
def sinkhorn_knopp(
    log_probs: torch.Tensor,
    lam: float = 10.0,
    tol: float = 1e-2,
    max_iter: int = 1000,
    check_every: int = 10,
    marginals: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(..., N, K)`` log-probabilities -> ``(Q, labels)``.

    ``Q`` (..., N, K) float32 has rows summing to 1 and column sums within ``tol`` (relative,
    max over clusters) of ``N / K``, checked every ``check_every`` iterations, at most
    ``max_iter``; ``labels = argmax_k Q`` (..., N) int64. ``marginals`` (K,), a probability
    vector, replaces the equal partition: column k then sums to ``N * marginals[k]``.
    """
    n, k = log_probs.shape[-2], log_probs.shape[-1]
    scaled = lam * log_probs.to(torch.float64)
    kernel = (scaled - scaled.amax(dim=-1, keepdim=True)).exp()  # (..., N, K), row maximum 1
    kernel_t = kernel.transpose(-1, -2)
    u = 1.0 / kernel.sum(dim=-1)  # rows of diag(u) P^lambda sum to 1
    target = torch.full((k,), n / k, dtype=torch.float64, device=kernel.device)
    if marginals is not None:
        m = torch.as_tensor(marginals, dtype=torch.float64, device=kernel.device)
        target = n * m / m.sum()
    for it in range(max_iter):
        col = (kernel_t @ u.unsqueeze(-1)).squeeze(-1).clamp_min(_TINY)
        v = target / col
        u = 1.0 / (kernel @ v.unsqueeze(-1)).squeeze(-1)
        if (it + 1) % check_every == 0:
            cols = v * (kernel_t @ u.unsqueeze(-1)).squeeze(-1) / target
            if float((cols - 1.0).abs().max()) < tol:
                break
    q = (u.unsqueeze(-1) * kernel * v.unsqueeze(-2)).to(torch.float32)
    return q, q.argmax(-1)
