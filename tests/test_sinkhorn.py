"""In-place float32 Sinkhorn-Knopp equals a plain float64 SeLa iteration (and its over-relaxed form);
marginals; stopping rule."""
import numpy as np
import pytest
import torch

from nolabel.nn.sinkhorn import _marginals, _next_omega, sinkhorn_knopp, solve_inplace


def reference(log_p, lam, tol, max_iter=1000, marginals=None, check_every=10, omega=1.0):
    """SeLa's optimize_L_sk written plainly in float64 (P^lam, r = m / P'c, c = 1/N / P r, ...),
    started from c_i = 1 / (N max_j P_ij^lam) as nolabel does; with ``omega`` > 1 every step
    after the first r is over-relaxed: r <- r^(1-omega) r_new^omega, c likewise."""
    p = np.exp(lam * np.asarray(log_p, dtype=np.float64))
    n, k = p.shape
    m = np.full(k, 1.0 / k) if marginals is None else np.asarray(marginals, np.float64) / np.sum(marginals)
    c = 1.0 / (n * p.max(axis=1))
    r = m / (p.T @ c)
    it = 0
    while True:
        c_new = (1.0 / n) / (p @ r)
        err = np.abs(c / c_new - 1).sum() if it % check_every == 0 else np.inf
        it += 1
        if err <= tol or it >= max_iter:
            c = c_new
            break
        c = c ** (1 - omega) * c_new ** omega
        r_new = m / (p.T @ c)
        r = r ** (1 - omega) * r_new ** omega
    return n * c[:, None] * p * r[None, :], it


def problem(n=400, k=7, seed=0, skew=3.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g) * 2
    logits[:, 0] += skew
    return torch.log_softmax(logits, -1)


@pytest.mark.parametrize("omega", [1.0, 1.5])
@pytest.mark.parametrize("iters", [1, 3, 17])
def test_equals_reference_iterates(iters, omega):
    lp = problem()
    q, labels = sinkhorn_knopp(lp, lam=5.0, tol=0.0, max_iter=iters, relax=omega)
    ref, it = reference(lp.numpy(), 5.0, 0.0, max_iter=iters, omega=omega)
    assert it == iters
    np.testing.assert_allclose(q.numpy(), ref, rtol=2e-4, atol=1e-6)
    np.testing.assert_array_equal(labels.numpy(), ref.argmax(1))


def test_stopping_rule_is_selas_tolerance():
    """Default: the first iterate within SeLa's tolerance; check_every=10: SeLa's own stopping point."""
    lp = problem(n=2000, k=20, seed=1)
    ref, it = reference(lp.numpy(), 10.0, 0.1, check_every=1)
    selas, selas_it = reference(lp.numpy(), 10.0, 0.1, check_every=10)
    assert selas_it % 10 == 1 and it <= selas_it  # SeLa stops right after a check (iterations 1, 11, 21, ...)
    for check_every, expected in ((None, ref), (10, selas)):
        q, _ = sinkhorn_knopp(lp, lam=10.0, relax=1.0, **({} if check_every is None else {"check_every": check_every}))
        np.testing.assert_allclose(q.numpy(), expected, rtol=1e-3, atol=1e-5)
        np.testing.assert_allclose(q.sum(1).numpy(), 1.0, rtol=1e-5)
        np.testing.assert_allclose(q.sum(0).numpy(), 100.0, rtol=1e-3)


def test_stops_at_first_iterate_within_tolerance():
    lp = problem(n=3000, k=30, seed=4)
    _, it = reference(lp.numpy(), 10.0, 0.1, check_every=1)
    _, selas_it = reference(lp.numpy(), 10.0, 0.1, check_every=10)
    assert it < selas_it  # the problem is one where checking every iteration stops sooner
    out = np.empty((3000, 30), dtype=np.float32)
    assert solve_inplace(lp.numpy(), out, 10.0, 0.1, 1000, 1, _marginals(None, 30), 1.0) == it
    assert solve_inplace(lp.numpy(), out, 10.0, 0.1, 1000, 10, _marginals(None, 30), 1.0) == selas_it


@pytest.mark.parametrize("relax", ["auto", 1.5])
def test_over_relaxation_reaches_selas_fixed_point_sooner(relax):
    lp = problem(n=3000, k=30, seed=4)
    exact, _ = reference(lp.numpy(), 10.0, 1e-12)  # SeLa's iteration run to its fixed point
    _, plain_it = reference(lp.numpy(), 10.0, 0.1, check_every=1)
    out = np.empty((3000, 30), dtype=np.float32)
    it = solve_inplace(lp.numpy(), out, 10.0, 0.1, 1000, 1, _marginals(None, 30), relax)
    assert it * 2 < plain_it  # at least twice fewer iterations to SeLa's tolerance
    np.testing.assert_array_equal(out.argmax(1), exact.argmax(1))
    np.testing.assert_allclose(out.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(out.sum(0), 100.0, rtol=2e-3)
    q, _ = sinkhorn_knopp(lp, lam=10.0, tol=1e-8, relax=relax)
    np.testing.assert_allclose(q.numpy(), exact, rtol=1e-3, atol=1e-5)


def test_relaxation_rule_and_guard():
    # "auto": plain until iteration 10, then Young's rule for the rate of the last five errors
    errors = [2.0 ** -i for i in range(10)]  # halves each step: rho = 0.5
    omega, at = _next_omega(1.0, "auto", errors, 0)
    assert at == 10 and omega == pytest.approx(2 / (1 + np.sqrt(0.5)))
    assert _next_omega(1.0, "auto", errors[:9], 0) == (1.0, 0)
    # an error that rose at three iterations in a row halves omega - 1, once per four iterations
    rising = [1.0, 0.5, 0.6, 0.7, 0.8]
    assert _next_omega(1.8, 1.8, rising, 0) == (pytest.approx(1.4), 5)
    assert _next_omega(1.8, 1.8, rising, 2) == (1.8, 2)
    with pytest.raises(ValueError, match="relax"):
        sinkhorn_knopp(problem(), relax=2.0)


def test_non_uniform_marginals():
    lp = problem(n=1000, k=4, seed=2)
    m = np.array([0.4, 0.3, 0.2, 0.1])
    q, labels = sinkhorn_knopp(lp, lam=10.0, tol=1e-6, marginals=torch.tensor(m))
    np.testing.assert_allclose(q.sum(0).numpy(), 1000 * m, rtol=1e-4)
    ref, _ = reference(lp.numpy(), 10.0, 1e-6, marginals=m)
    np.testing.assert_allclose(q.numpy(), ref, rtol=1e-3, atol=1e-5)
    with pytest.raises(ValueError, match="marginals"):
        sinkhorn_knopp(lp, marginals=np.array([1.0, 0.0, 1.0, 1.0]))


def test_a_cluster_nobody_likes_still_gets_its_share():
    # cluster 2 has log-probability -40 everywhere: with lam 10 its float32 kernel (e^-400) would
    # underflow to zero without the column shift, and the column sum could not be met
    lp = problem(n=300, k=3, seed=3, skew=0.0)
    lp[:, 2] = -40.0
    q, labels = sinkhorn_knopp(lp, lam=10.0, tol=1e-6)
    assert torch.isfinite(q).all()
    np.testing.assert_allclose(q.sum(0).numpy(), 100.0, rtol=1e-3)
    assert int((labels == 2).sum()) > 50


def test_batched_heads_and_float64_input():
    lp = torch.stack([problem(seed=4), problem(seed=5)])
    q, labels = sinkhorn_knopp(lp.double(), lam=10.0, tol=1e-3)
    assert q.dtype == torch.float32 and q.shape == lp.shape and labels.shape == lp.shape[:2]
    q1, _ = sinkhorn_knopp(lp[1], lam=10.0, tol=1e-3)
    torch.testing.assert_close(q[1], q1)
