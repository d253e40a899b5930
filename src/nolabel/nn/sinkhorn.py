"""Balanced pseudo-labels by Sinkhorn-Knopp (SeLa), in place on one float32 array.

For log-probabilities ``log P`` (N, K) find ``Q = diag(c) P^lam diag(r)`` whose rows each
sum to ``1 / N`` and whose columns sum to the cluster marginals ``m`` (uniform ``1 / K``
unless ``marginals`` is given), by SeLa's alternation::

    r = m / (P^lam' c)        c_new = (1 / N) / (P^lam r)

Tolerance and error are SeLa's (``optimize_L_sk`` in yukimasano/self-label): the loop ends
once ``sum_i |c_i / c_new_i - 1|`` (a sum over the N samples, not a mean) is ``<= tol``
(0.1). SeLa measures it every 10th iteration (counting from the first), since on its GPU
path each measurement is a device sync; here it is an O(N) sum beside an O(NK) pass, so by
default (``check_every=1``) it is measured every iteration and the loop stops at the first
iterate within the tolerance, up to 9 iterations before SeLa would notice (115 against 121
on the 100k x 1,000 benchmark of ``benchmarks/scale.py``). ``check_every=10`` reproduces
SeLa's stopping point exactly.

Memory and numerics. The kernel ``P^lam`` is written once, in float32, into the output
array (no other N x K buffer), shifted in the log domain so nothing overflows or
underflows wholesale: row ``i`` by ``a_i = max_j lam log P_ij`` (each row's largest entry
is 1) and column ``j`` up by ``s_j = max(0, -50 - max_i (lam log P_ij - a_i))`` (a cluster
no sample likes keeps entries of at least ``e^-50``). Both shifts are absorbed into the
scalings (``u = c e^a``, ``v = r e^-s``), which are kept in float64, so the iterates are
SeLa's. The start is ``c_i = e^-a_i / N`` (each row's largest entry of ``diag(c) P^lam`` is
``1 / N``) where SeLa starts from ``c = 1 / N``: the same fixed point, but no row
starts e^-a_i times too light (with ``c = 1 / N`` a row whose best cluster has
probability 1e-2 at ``lam = 10`` weighs e^-46 in the first ``r``, which underflows
float32). Kernel entries below ``e^-87`` (float32's smallest normal number; at most 1e-38
of their row's largest entry) are raised to it, which halves the cost of ``exp`` (its
underflow path) and changes no sum measurably. One iteration is a single pass over the
array in row blocks that fit in L2 cache: each block gives its ``c_new`` (``blk @ v``,
float32 BLAS) and at once adds its share ``blk' c_new`` to the next ``r`` (per-block
float32 products summed in float64), so the array is read from memory once per iteration,
not twice, with four numpy calls per block. Finally the array becomes ``N Q`` in place
(rows sum to 1, columns to ``N m``).

Over-relaxation (``relax``; not in SeLa, Thibault et al. 2017, "Overrelaxed Sinkhorn-Knopp"):
each scaling moves ``omega`` times as far as SeLa's step in the log domain,
``c <- c^(1 - omega) c_new^omega`` and likewise ``r``. It has SeLa's fixed point and the
loop stops by SeLa's rule (``sum_i |c_i / c_new_i - 1| <= tol`` for the current iterate,
then the output takes ``c_new``), but it gets there in fewer iterations: on the 100k x
1,000 benchmark of ``benchmarks/scale.py`` (see ``benchmarks/results/scale.md``) and on
20k x 1,000 test problems, 2.5 to 6 times fewer, with the same argmax labels. ``relax=1``
gives SeLa's iterates exactly. The default ``"auto"`` takes ``_WARMUP`` (10) of SeLa's
steps, reads the rate ``rho`` at which their error fell over the last five, and then uses
``omega = 2 / (1 + sqrt(1 - rho))`` (Young's rule for successive over-relaxation, the choice
Thibault et al. derive for Sinkhorn), at most 1.9. A guard halves ``omega - 1`` whenever the
error has risen at three iterations in a row, so a badly chosen ``omega`` cannot stall the loop.
"""
from __future__ import annotations

import numpy as np
import torch

_COLUMN_FLOOR = -50.0  # log of the smallest largest-entry a column keeps (see above)
_BLOCK_BYTES = 768 << 10  # row blocks of about this many bytes (L2-resident: 1 MiB per core on the EPYC measured)
#: exponents are raised to this before exp: e^-87 is float32's smallest normal number (1.2e-38) and below it
#: exp is 2x slower (underflow handling) while the entries, at most 1e-38 of their row's largest, do not matter
_EXP_FLOOR = np.float32(-87.0)
_WARMUP = 10  # plain iterations before "auto" picks the over-relaxation from their rate
_OMEGA_MAX = 1.9


@torch.no_grad()
def sinkhorn_knopp(
    log_probs: torch.Tensor,
    lam: float = 10.0,
    tol: float = 0.1,
    max_iter: int = 1000,
    check_every: int = 1,
    marginals: torch.Tensor | np.ndarray | None = None,
    relax: float | str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(..., N, K)`` log-probabilities -> ``(Q, labels)``.

    ``Q`` (..., N, K) float32 has rows summing to 1 and columns summing to about
    ``N * marginals`` (SeLa's tolerance ``tol`` on ``sum_i |c_i / c_new_i - 1|``, measured
    every ``check_every`` iterations; at most ``max_iter`` iterations); ``labels = argmax_k Q``
    (..., N) int64. ``marginals`` (K,) is a probability vector over the clusters (default uniform). Leading dimensions are
    independent problems (e.g. one per head). ``Q`` and ``labels`` are on the input's device.
    ``relax``: the over-relaxation ``omega`` in [1, 2) (1: SeLa's iterates) or ``"auto"``
    (module docstring).
    """
    if relax != "auto" and not 1.0 <= float(relax) < 2.0:
        raise ValueError(f"relax must be 'auto' or a number in [1, 2), got {relax!r}")
    device = log_probs.device
    x = log_probs.detach().to("cpu")
    n, k = x.shape[-2], x.shape[-1]
    m = _marginals(marginals, k)
    q = torch.empty(x.shape, dtype=torch.float32)
    flat_x, flat_q = x.reshape(-1, n, k), q.view(-1, n, k)
    for b in range(flat_x.shape[0]):
        solve_inplace(flat_x[b].numpy(), flat_q[b].numpy(), lam, tol, max_iter, check_every, m, relax)
    return q.to(device), q.argmax(-1).to(device)


def _next_omega(omega: float, relax: float | str, errors: list[float], changed_at: int) -> tuple[float, int]:
    """The relaxation for the next iteration, and the iteration it last changed at.

    ``"auto"``: plain steps until iteration ``_WARMUP``, then Young's choice
    ``2 / (1 + sqrt(1 - rho))`` for the rate ``rho`` the plain error fell at over its last
    five iterations (capped at ``_OMEGA_MAX``). Either way, an error that rose at each of
    the last three iterations halves ``omega - 1``.
    """
    it = len(errors)
    if relax == "auto" and it == _WARMUP and errors[-6] > 0:
        rho = (errors[-1] / errors[-6]) ** 0.2
        return (min(_OMEGA_MAX, 2.0 / (1.0 + np.sqrt(1.0 - rho))) if rho < 1.0 else 1.0), it
    if omega > 1.0 and it - changed_at >= 4 and errors[-1] > errors[-2] > errors[-3] > errors[-4]:
        return 1.0 + (omega - 1.0) / 2.0, it
    return omega, changed_at


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
    relax: float | str = "auto",
) -> int:
    """Write ``N Q`` for one (N, K) problem into the float32 array ``out``; return the iterations.

    ``log_p`` may be any real dtype and may be ``out`` itself (then the input is overwritten).
    """
    n, k = log_p.shape
    step = max(8, _BLOCK_BYTES // (4 * k))
    blocks = [slice(s, min(s + step, n)) for s in range(0, n, step)]
    col_log_max = np.full(k, -np.inf, dtype=np.float32)
    lam32 = np.float32(lam)
    for sl in blocks:  # pass 1: lam log P minus each row's largest entry, into out; the column maxima
        z = out[sl]
        np.multiply(log_p[sl], lam32, out=z, casting="same_kind")
        z -= z.max(axis=1)[:, None]
        np.maximum(col_log_max, z.max(axis=0), out=col_log_max)
    col_boost = np.maximum(0.0, _COLUMN_FLOOR - col_log_max).astype(np.float32)
    boost = bool(col_boost.any())
    for sl in blocks:  # pass 2: the kernel, in place
        z = out[sl]
        if boost:
            z += col_boost
        np.maximum(z, _EXP_FLOOR, out=z)
        np.exp(z, out=z)

    # per-block views made once: an iteration is then four BLAS/ufunc calls per block, all in float32
    views = [(out[sl], sl) for sl in blocks]
    dots = np.empty(n, dtype=np.float32)  # K v for every row
    w = np.empty(n, dtype=np.float32)  # the new u, in float32, for the column pass
    parts = np.empty((len(blocks), k), dtype=np.float32)  # each block's u' K, summed in float64
    tiny = np.finfo(np.float32).tiny
    inv_n = 1.0 / n
    inv_n32 = np.float32(inv_n)

    u = np.full(n, inv_n)  # c_i = e^-a_i / N: every row of the start has largest entry 1 / N
    w[:] = u
    for b, (blk, sl) in enumerate(views):
        np.dot(w[sl], blk, out=parts[b])
    v = marginals / np.maximum(parts.sum(axis=0, dtype=np.float64), np.finfo(np.float64).tiny)
    omega = 1.0 if relax == "auto" else float(relax)
    omega32 = np.float32(omega)
    errors: list[float] = []
    changed_at, it = 0, 0
    while True:
        v32 = v.astype(np.float32)
        for b, (blk, sl) in enumerate(views):  # one read of the array: K v, then u_new' K from cache
            a = dots[sl]
            np.dot(blk, v32, out=a)
            np.maximum(a, tiny, out=a)
            ws = w[sl]
            if omega == 1.0:
                np.divide(inv_n32, a, out=ws)
            else:  # ws <- ws^(1 - omega) (1/N / a)^omega = ws ((1/N / a) / ws)^omega
                step_ = inv_n32 / a / ws
                ws *= step_ ** omega32
            np.dot(ws, blk, out=parts[b])
        u_plain = inv_n / dots.astype(np.float64)
        err = float(np.abs(u / u_plain - 1.0).sum())
        errors.append(err)
        it += 1
        if (it % check_every == 1 % check_every and err <= tol) or it >= max_iter:
            u = u_plain
            break
        u = u_plain if omega == 1.0 else u * (u_plain / u) ** omega
        v_plain = marginals / np.maximum(parts.sum(axis=0, dtype=np.float64), np.finfo(np.float64).tiny)
        v = v_plain if omega == 1.0 else v * (v_plain / v) ** omega
        omega, changed_at = _next_omega(omega, relax, errors, changed_at)
        omega32 = np.float32(omega)
    # the final Q: the rows' plain update u, with the v it was computed from (rows sum to 1)
    v32 = v.astype(np.float32)
    scale = (u * n).astype(np.float32)
    for blk, sl in views:
        blk *= scale[sl, None]
        blk *= v32
    return it
