"""Heads started from the k-means partition (nolabel.methods.kmeans_start)."""
import numpy as np
import pytest
import torch

from nolabel import methods
from nolabel.methods.kmeans_start import distill_start_, kmeans_heads, kmeans_start, split_alphas
from nolabel.methods.size_prior import profile_alphas
from nolabel.neighbors import knn
from nolabel.nn.heads import MultiHead

K = 4


@pytest.fixture(scope="module")
def uneven():
    """4 blobs of 320, 160, 80 and 40 points in 16-d, with their 10-NN."""
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(K, 16)) * 3
    sizes = np.array([320, 160, 80, 40])
    y = np.repeat(np.arange(K), sizes)
    x = (centers[y] + rng.normal(size=(len(y), 16))).astype(np.float32)
    return x, y, knn(x, 10).indices, sizes


def test_distilled_start_is_the_kmeans_partition_and_leaves_random_heads(uneven):
    """The k-means-started heads reproduce nolabel's k-means labels; the others are untouched;
    the profile is that run's sorted, add-one smoothed sizes."""
    x, _, _, _ = uneven
    X = torch.nn.functional.normalize(torch.as_tensor(x), dim=1)
    start = kmeans_start(x, K, seed=0)
    labels = methods.get("kmeans")(K, seed=0).fit(x).labels_
    assert np.array_equal(start.labels.numpy(), labels)
    sizes = np.sort(np.bincount(labels, minlength=K))[::-1]
    np.testing.assert_allclose(start.profile.numpy(), (sizes + 1) / (len(x) + K), rtol=1e-6)
    head = MultiHead(16, K, n_heads=2, generator=torch.Generator().manual_seed(0))
    before = [p.detach().clone() for p in head.parameters()]
    history = distill_start_(head, head.parameters(), X, start.labels, kmeans_heads(2, "both"), 128,
                             torch.Generator().manual_seed(0))
    assert len(history) == 10 and history[-1] < history[0]
    assert torch.equal(head.weights[0][0], before[0][0]) and torch.equal(head.biases[0][0], before[1][0])
    with torch.no_grad():
        agree = (head(X)[1].argmax(-1) == start.labels).float().mean()
    assert agree > 0.9  # 40 Adam steps, a head on the L2-normalised rows, k-means on the raw ones


def test_which_heads_start_from_kmeans_and_their_alphas():
    assert kmeans_heads(4, "both").tolist() == [False, False, True, True]
    assert kmeans_heads(3, "kmeans").all() and not kmeans_heads(3, "random").any()
    np.testing.assert_allclose(split_alphas(profile_alphas, 10, "both").numpy(), [0, .25, .5, .75, 1] * 2)
    np.testing.assert_allclose(split_alphas(profile_alphas, 5, "random").numpy(), [0, .25, .5, .75, 1])


@pytest.mark.parametrize("name", ["scan", "sela", "temi"])
def test_kmeans_started_heads_recover_uneven_sizes(name, uneven):
    """``init="kmeans"`` (every head from k-means): the kept head finds 320/160/80/40 within 20 %."""
    x, _, nb, sizes = uneven
    extra = {"epochs": 30, "batch_size": 128, "n_heads": 3, "init": "kmeans"}
    if name == "sela":
        extra.update(n_relabel=10, lr=1e-2)
    if name == "temi":
        extra.update(n_neighbors=10, warmup_epochs=3)
    est = methods.get(name)(n_clusters=K, seed=0, **extra).fit(x, nb)
    found = np.sort(np.bincount(est.labels_, minlength=K))[::-1]
    assert np.all(np.abs(found - sizes) <= 0.2 * sizes), found


@pytest.mark.parametrize("name", ["scan", "sela", "temi"])
def test_unknown_init_is_an_error(name):
    from nolabel.errors import NolabelError

    with pytest.raises(NolabelError):
        methods.get(name)(n_clusters=K, init="pretrained")


def test_lsdc_tempered_heads_recover_uneven_sizes(uneven):
    """LSD-C's opt-in size term (tempered k-means profiles, kappa-chosen head, k-means start)
    keeps the true sizes 320/160/80/40 within 20 %; every head has its own profile."""
    x, _, nb, sizes = uneven
    est = methods.get("lsdc")(n_clusters=K, seed=0, epochs=30, batch_size=128, n_heads=3, size_prior="tempered",
                              init="kmeans").fit(x, nb)
    found = np.sort(np.bincount(est.labels_, minlength=K))[::-1]
    assert np.all(np.abs(found - sizes) <= 0.2 * sizes), found
    assert len(est.head_losses_) == 3 and len(est.prior_) == K
    assert est.prior_[0] > est.prior_[-1] or np.allclose(est.prior_, 1 / K)


def test_per_row_k_follows_the_rows_kmeans_cluster():
    from nolabel.methods.lsdc import adjacency_knn_rows, start_k

    lab = torch.tensor([0] * 6 + [1] * 2)
    k = start_k(lab)
    assert k.tolist() == [5] * 6 + [2] * 2  # round(0.78 * 6) = 5, round(0.78 * 2) = 2
    f = torch.cat([torch.randn(1, 4).repeat(6, 1) + 0.01 * torch.randn(6, 4), torch.randn(1, 4).repeat(2, 1)])
    a = adjacency_knn_rows(f, torch.tensor([1] * 8))
    assert torch.equal(a.diagonal(), torch.ones(8)) and torch.equal(a, a.T)
    assert a.sum(1).min() >= 2  # every row holds itself and its nearest neighbour
