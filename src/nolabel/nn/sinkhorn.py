"""Balanced pseudo-labels by Sinkhorn-Knopp (SeLa), in place on one float32 array.

For log-probabilities ``log P`` (N, K) find ``Q = diag(c) P^lam diag(r)`` whose rows each
sum to ``1 / N`` and whose columns sum to the cluster marginals ``m`` (uniform ``1 / K``
unless ``marginals`` is given), by SeLa's alternation::

    r = m / (P^lam' c)        c_new = (1 / N) / (P^lam r)

Stopping rule and tolerance are SeLa's (``optimize_L_sk`` in yukimasano/self-label):
every ``check_every`` (10) iterations, counting from the first, the error
``sum_i |c_i / c_new_i - 1|`` (a sum over the N samples, not a mean) is measured, and the
loop ends once it is ``<= tol`` (0.1).

Memory and numerics. The kernel ``P^lam`` is written once, in float32, into the output
array (no other N x K buffer), shifted in the log domain so nothing overflows or
underflows wholesale: row ``i`` by ``a_i = max_j lam log P_ij`` (each row's largest entry
is 1) and column ``j`` up by ``s_j = max(0, -50 - max_i (lam log P_ij - a_i))`` (a cluster
no sample likes keeps entries of at least ``e^-50``). Both shifts are absorbed into the
scalings (``u = c e^a``, ``v = r e^-s``), which are kept in float64, so the iterates are
SeLa's. The start is ``c_i = e^-a_i / N`` (each row's largest entry of ``diag(c) P^lam`` is
``1 / N``) where SeLa starts from ``c = 1 / N``: the same fixed point, but no row
starts e^-a_i times too light (with ``c = 1 / N`` a row whose best cluster has
probability 1e-2 at ``lam = 10`` weighs e^-46 in the first ``r``, which underflows float32). One iteration is a single pass over the array in row blocks that fit in cache:
each block gives its ``c_new`` (``blk @ v``) and at once adds its share ``blk' c_new`` to
the next ``r``, so the array is read once per iteration, not twice. Finally the array
becomes ``N Q`` in place (rows sum to 1, columns to ``N m``).
"""
from __future__ import annotations

import numpy as np
import torch

_COLUMN_FLOOR = -50.0  # log of the smallest largest-entry a column keeps (see above)
_BLOCK_BYTES = 512 << 10  # row blocks of about this many bytes (L2-resident)


@torch.no_grad()
def sinkhorn_knopp(
    log_probs: torch.Tensor,
    lam: float = 10.0,
    tol: float = 0.1,
    max_iter: int = 1000,
    check_every: int = 10,
    marginals: torch.Tensor | np.ndarray | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(..., N, K)`` log-probabilities -> ``(Q, labels)``.

    ``Q`` (..., N, K) float32 has rows summing to 1 and columns summing to about
    ``N * marginals`` (SeLa's rule, ``tol`` on ``sum_i |c_i / c_new_i - 1|``; at most
    ``max_iter`` iterations); ``labels = argmax_k Q`` (..., N) int64. ``marginals`` (K,)
    is a probability vector over the clusters (default uniform). Leading dimensions are
    independent problems (e.g. one per head). ``Q`` and ``labels`` are on the input's device.
    """
    device = log_probs.device
    x = log_probs.detach().to("cpu")
    n, k = x.shape[-2], x.shape[-1]
    m = _marginals(marginals, k)
    q = torch.empty(x.shape, dtype=torch.float32)
    flat_x, flat_q = x.reshape(-1, n, k), q.view(-1, n, k)
    for b in range(flat_x.shape[0]):
        solve_inplace(flat_x[b].numpy(), flat_q[b].numpy(), lam, tol, max_iter, check_every, m)
    return q.to(device), q.argmax(-1).to(device)


def _marginals(marginals: torch.Tensor | np.ndarray | None, k: int) -> np.ndarray:
    if marginals is None:
        return np.full(k, 1.0 / k)
    m = np.asarray(marginals.cpu() if isinstance(marginals, torch.Tensor) else marginals, dtype=np.float64).ravel()
    if m.shape != (k,) or not np.isfinite(m).all() or (m <= 0).any():
        raise ValueError(f"marginals must be {k} positive finite numbers, got shape {m.shape}")
    return m / m.sum()


def solve_inplace(
    log_p: np.ndarray,
    out: np.ndarray,
    lam: float,
    tol: float,
    max_iter: int,
    check_every: int,
    marginals: np.ndarray,
) -> int:
    """Write ``N Q`` for one (N, K) problem into the float32 array ``out``; return the iterations.

    ``log_p`` may be any real dtype and may be ``out`` itself (then the input is overwritten).
    """
    n, k = log_p.shape
    step = max(8, _BLOCK_BYTES // (4 * k))
    blocks = [slice(s, min(s + step, n)) for s in range(0, n, step)]
    row_shift = np.empty(n)
    col_log_max = np.full(k, -np.inf, dtype=np.float32)
    for sl in blocks:  # pass 1: the shifts
        z = np.asarray(log_p[sl], dtype=np.float32) * np.float32(lam)
        row_max = z.max(axis=1)
        row_shift[sl] = row_max
        np.maximum(col_log_max, (z - row_max[:, None]).max(axis=0), out=col_log_max)
    col_boost = np.maximum(0.0, _COLUMN_FLOOR - col_log_max).astype(np.float32)
    for sl in blocks:  # pass 2: the kernel, in place
        z = np.asarray(log_p[sl], dtype=np.float32) * np.float32(lam)
        z -= row_shift[sl, None].astype(np.float32)
        z += col_boost
        np.exp(z, out=out[sl])

    u = np.full(n, 1.0 / n)  # c_i = e^-a_i / N: every row of the start has largest entry 1 / N
    col = np.zeros(k)
    for sl in blocks:
        col += u[sl].astype(np.float32) @ out[sl]
    v = marginals / np.maximum(col, np.finfo(np.float64).tiny)
    inv_n = 1.0 / n
    it = 0
    while True:
        check = it % check_every == 0
        v32 = v.astype(np.float32)
        col[:] = 0.0
        err = 0.0
        for sl in blocks:
            blk = out[sl]
            u_new = inv_n / np.maximum(blk @ v32, np.finfo(np.float32).tiny).astype(np.float64)
            if check:
                err += float(np.abs(u[sl] / u_new - 1.0).sum())
            u[sl] = u_new
            col += u_new.astype(np.float32) @ blk
        it += 1
        if (check and err <= tol) or it >= max_iter:
            break
        v = marginals / np.maximum(col, np.finfo(np.float64).tiny)
    # N Q = N u_i K_ij v_j with the v that produced the final u (so rows sum to 1)
    v32 = v.astype(np.float32)
    for sl in blocks:
        blk = out[sl]
        blk *= (u[sl] * n).astype(np.float32)[:, None]
        blk *= v32
    return it
