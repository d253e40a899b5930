"""Balanced pseudo-labels by Sinkhorn-Knopp (SeLa), in the log domain.

For log-probabilities ``log P`` (N, K), find ``Q = diag(a) P^lambda diag(b)`` whose rows
sum to 1 and whose columns (clusters) each sum to ``N / K`` (equal partition), by
alternating column and row normalisation with ``logsumexp`` (float64). Leading batch
dimensions (e.g. one problem per head) are solved together.
"""
from __future__ import annotations

import math

import torch


@torch.no_grad()
def sinkhorn_knopp(
    log_probs: torch.Tensor,
    lam: float = 10.0,
    tol: float = 1e-2,
    max_iter: int = 1000,
    check_every: int = 10,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(..., N, K)`` log-probabilities -> ``(Q, labels)``.

    ``Q`` (..., N, K) float32 has rows summing to 1 and column sums within ``tol`` (relative,
    max over clusters) of ``N / K``, checked every ``check_every`` iterations, at most
    ``max_iter``; ``labels = argmax_k Q`` (..., N) int64.
    """
    n, k = log_probs.shape[-2], log_probs.shape[-1]
    log_q = lam * log_probs.to(torch.float64)
    log_q = log_q - torch.logsumexp(log_q, dim=-1, keepdim=True)
    log_col_target = math.log(n / k)
    for it in range(max_iter):
        log_q = log_q - torch.logsumexp(log_q, dim=-2, keepdim=True) + log_col_target
        log_q = log_q - torch.logsumexp(log_q, dim=-1, keepdim=True)
        if (it + 1) % check_every == 0:
            cols = torch.logsumexp(log_q, dim=-2).exp() * (k / n)
            if float((cols - 1.0).abs().max()) < tol:
                break
    q = log_q.exp().to(torch.float32)
    return q, q.argmax(-1)
