"""Losses, heads, EMA and Sinkhorn-Knopp: values computed by hand, and descent on separable data."""
import math

import pytest
import torch

from nolabel.nn import (
    EMA,
    MultiHead,
    adjacency_cosine,
    adjacency_knn,
    adjacency_l2,
    adjacency_sne,
    balanced_cross_entropy,
    class_balance_weights,
    consistency_mse,
    cosine_momentum,
    entropy,
    lsdc_pairwise_bce,
    rampup,
    scan_loss,
    sinkhorn_knopp,
    temi_loss,
    temi_prior_update,
)


def test_entropy_of_uniform_and_one_hot():
    assert float(entropy(torch.full((4,), 0.25))) == pytest.approx(math.log(4))
    assert float(entropy(torch.tensor([1.0, 0.0]))) == pytest.approx(0.0, abs=1e-6)


def test_scan_loss_by_hand():
    anchor = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    neighbor = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    total, consistency, ent = scan_loss(anchor, neighbor, entropy_weight=5.0)
    # <p, p'> = 0.5 for both rows; mean anchor = (0.75, 0.25)
    assert float(consistency) == pytest.approx(math.log(2), rel=1e-5)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert float(ent) == pytest.approx(h, rel=1e-5)
    assert float(total) == pytest.approx(math.log(2) - 5 * h, rel=1e-5)


def test_scan_loss_one_value_per_head():
    p = torch.softmax(torch.randn(3, 8, 4), -1)
    total, _, _ = scan_loss(p, p.flip(1))
    assert total.shape == (3,)
    assert float(total[1]) == pytest.approx(float(scan_loss(p[1], p[1].flip(0))[0]), rel=1e-6)


def test_temi_loss_uniform_by_hand():
    # q = 1/K everywhere, prior 1/K: pmi = log(K * K^(-2 beta) * K) = (2 - 2 beta) log K,
    # weight = sum_c 1/K^2 = 1/K, loss = -weight * pmi.
    k, beta = 2, 0.6
    z = torch.zeros(1, 3, k)
    prior = torch.full((1, k), 1.0 / k)
    loss = temi_loss(z, z, z, z, prior, beta=beta, tau=0.1)
    assert float(loss[0]) == pytest.approx(-(1 / k) * (2 - 2 * beta) * math.log(k), rel=1e-5)


def test_temi_loss_matches_the_formula_sample_by_sample():
    torch.manual_seed(0)
    h, b, k, beta, tau = 3, 5, 4, 0.6, 0.1
    sa, sb, ta, tb = (torch.randn(h, b, k) for _ in range(4))
    prior = torch.softmax(torch.randn(h, k), -1)
    got = temi_loss(sa, sb, ta, tb, prior, beta, tau)
    qs_a, qs_b = torch.softmax(sa / tau, -1), torch.softmax(sb / tau, -1)
    qt_a, qt_b = torch.softmax(ta / tau, -1), torch.softmax(tb / tau, -1)
    for i in range(h):
        total = 0.0
        for n in range(b):
            w = sum(float((qt_a[j, n] * qt_b[j, n]).sum()) for j in range(h)) / h
            pmi_ab = math.log(sum(float((qs_a[i, n, c] * qt_b[i, n, c]) ** beta / prior[i, c]) for c in range(k)))
            pmi_ba = math.log(sum(float((qs_b[i, n, c] * qt_a[i, n, c]) ** beta / prior[i, c]) for c in range(k)))
            total += w * -(pmi_ab + pmi_ba) / 2
        assert float(got[i]) == pytest.approx(total / b, rel=1e-4)


def test_temi_prior_update():
    prior = torch.tensor([[0.5, 0.5]])
    probs = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    assert temi_prior_update(prior, probs, 0.9)[0].tolist() == pytest.approx([0.55, 0.45])


def test_lsdc_pairwise_bce_by_hand():
    p = torch.tensor([[0.8, 0.2], [0.2, 0.8]])
    a = torch.eye(2)
    # p p^T = [[.68, .32], [.32, .68]]: every pair costs -log 0.68
    assert float(lsdc_pairwise_bce(p, p, a)) == pytest.approx(-math.log(0.68), rel=1e-5)
    # all pairs declared similar: diagonal -log .68, off-diagonal -log .32
    full = torch.ones(2, 2)
    want = (-2 * math.log(0.68) - 2 * math.log(0.32)) / 4
    assert float(lsdc_pairwise_bce(p, p, full)) == pytest.approx(want, rel=1e-5)


def test_consistency_and_rampup_by_hand():
    p = torch.eye(2)
    q = torch.full((2, 2), 0.5)
    assert float(consistency_mse(p, q)) == pytest.approx(1.0 / 4)
    assert rampup(0, 10, 5.0) == pytest.approx(5 * math.exp(-5))
    assert rampup(5, 10, 5.0) == pytest.approx(5 * math.exp(-1.25))
    assert rampup(10, 10, 5.0) == 5.0 and rampup(3, 0, 2.0) == 2.0


def test_balanced_cross_entropy_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    y = torch.tensor([0, 1])
    ce0, ce1 = math.log(1 + math.exp(-2)), math.log(2)
    assert float(balanced_cross_entropy(logits, y)) == pytest.approx((ce0 + ce1) / 2, rel=1e-5)
    w = torch.tensor([1.0, 3.0])
    assert float(balanced_cross_entropy(logits, y, w)) == pytest.approx((ce0 + 3 * ce1) / 4, rel=1e-5)
    assert class_balance_weights(torch.tensor([0, 0, 1]), 3).tolist() == pytest.approx([1.5, 3.0, 1.0])


def test_adjacencies_on_known_points():
    f = torch.tensor([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 0.99]])
    pairs = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]], dtype=torch.float32)
    assert torch.equal(adjacency_cosine(f, 0.9), pairs)
    assert torch.equal(adjacency_l2(f, 0.2), pairs)
    assert torch.equal(adjacency_knn(f, 1), pairs)
    assert torch.equal(adjacency_sne(f, 0.1, temperature=0.1), pairs)


def test_multihead_equals_heads_one_by_one():
    gen = torch.Generator().manual_seed(0)
    heads = MultiHead(6, 3, n_heads=4, hidden=8, n_layers=3, generator=gen)
    x = torch.randn(5, 6)
    out = heads(x)
    assert out.shape == (4, 5, 3)
    for h in range(4):
        z = x
        for layer, (w, b) in enumerate(zip(heads.weights, heads.biases)):
            z = z @ w[h] + b[h, 0]
            if layer < 2:
                z = torch.nn.functional.gelu(z)
        torch.testing.assert_close(out[h], z)
    one = heads.select([2])
    torch.testing.assert_close(one(x)[0], out[2])


def test_ema_and_cosine_momentum():
    net = torch.nn.Linear(2, 1)
    ema = EMA(net)
    with torch.no_grad():
        net.weight.fill_(1.0)
        ema.module.weight.fill_(0.0)
    ema.update(net, 0.9)
    assert torch.allclose(ema.module.weight, torch.full_like(net.weight, 0.1))
    assert cosine_momentum(0, 100, 0.996, 1.0) == pytest.approx(0.996)
    assert cosine_momentum(100, 100, 0.996, 1.0) == pytest.approx(1.0)
    assert cosine_momentum(50, 100, 0.996, 1.0) == pytest.approx(0.998)


def test_sinkhorn_equipartition_on_skewed_predictions():
    torch.manual_seed(0)
    logits = torch.randn(300, 3)
    logits[:, 0] += 4.0  # almost every sample prefers cluster 0
    q, labels = sinkhorn_knopp(torch.log_softmax(logits, -1), lam=10.0, tol=1e-3)
    assert torch.allclose(q.sum(1), torch.ones(300), atol=1e-5)
    assert torch.allclose(q.sum(0), torch.full((3,), 100.0), rtol=2e-3)
    counts = torch.bincount(labels, minlength=3)
    assert int(counts.min()) >= 80, counts
    # batched problems (one per head) give the same answer as one at a time
    both = torch.stack([torch.log_softmax(logits, -1), torch.log_softmax(logits.flip(1), -1)])
    qb, _ = sinkhorn_knopp(both, lam=10.0, tol=1e-3)
    torch.testing.assert_close(qb[0], q, atol=1e-4, rtol=1e-3)


def test_sinkhorn_two_by_two_by_hand():
    # P = [[0.8, 0.2], [0.6, 0.4]], lambda 1. Q = diag(u) P diag(v) with rows summing to 1 and
    # both columns summing to 1 has Q = [[q, 1-q], [1-q, q]]; q / (1-q) = (0.8 / 0.2) * s and
    # (1-q) / q = (0.6 / 0.4) * s for the column ratio s = v1 / v2; dividing, (q / (1-q))^2 = 4 / 1.5
    # and q = r / (1 + r) with r = sqrt(8 / 3).
    log_p = torch.tensor([[0.8, 0.2], [0.6, 0.4]]).log()
    q, labels = sinkhorn_knopp(log_p, lam=1.0, tol=1e-7)
    r = (8 / 3) ** 0.5
    expected = torch.tensor([[r / (1 + r), 1 / (1 + r)], [1 / (1 + r), r / (1 + r)]])
    torch.testing.assert_close(q, expected, atol=1e-5, rtol=0)
    assert labels.tolist() == [0, 1]


# ---- a few optimisation steps lower each loss on separable synthetic data ----------------


def _separable(n=64, k=4, d=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(k, d, generator=gen) * 4
    y = torch.arange(n) % k
    x = centers[y] + torch.randn(n, d, generator=gen) * 0.3
    partner = torch.stack([torch.nonzero(y == y[i]).flatten()[(i // k + 1) % (n // k)] for i in range(n)])
    return x, y, partner


def _descends(loss_fn, steps=30, n_heads=2):
    x, y, partner = _separable()
    head = MultiHead(x.shape[1], 4, n_heads=n_heads, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    first = None
    for _ in range(steps):
        loss = loss_fn(head, x, y, partner).sum()
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    return first, float(loss_fn(head, x, y, partner).sum().detach())


def test_scan_loss_descends():
    first, last = _descends(lambda h, x, y, nb: scan_loss(torch.softmax(h(x), -1), torch.softmax(h(x[nb]), -1))[0])
    assert last < first - 0.5


def test_temi_loss_descends():
    prior = torch.full((2, 4), 0.25)

    def fn(h, x, y, nb):
        a, b = h(x), h(x[nb])
        return temi_loss(a, b, a.detach(), b.detach(), prior, 0.6, 0.1)

    first, last = _descends(fn)
    assert last < first - 0.1


def test_lsdc_loss_descends():
    def fn(h, x, y, nb):
        p = torch.softmax(h(x), -1)
        return lsdc_pairwise_bce(p, torch.softmax(h(x[nb]), -1), adjacency_knn(x, 8)) + consistency_mse(p, p)

    first, last = _descends(fn)
    assert last < first * 0.7


def test_balanced_cross_entropy_descends():
    first, last = _descends(lambda h, x, y, nb: balanced_cross_entropy(h(x), y, class_balance_weights(y, 4)))
    assert last < first * 0.5


def test_lsdc_pairwise_bce_is_finite_on_one_hot_predictions():
    """Two one-hot predictions of one cluster (a pair probability of exactly 1) declared
    dissimilar: a finite loss (-log PAIR_EPS), not 0 * log 0."""
    from nolabel.nn.losses import PAIR_EPS

    p = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    loss = lsdc_pairwise_bce(p, p, torch.eye(2))
    assert torch.isfinite(loss)
    assert float(loss) == pytest.approx(-math.log(PAIR_EPS) / 2, rel=1e-3)
