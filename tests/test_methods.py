"""The learned frozen-feature methods (SCAN, TEMI, SeLa, LSD-C, self-labelling) behind the
estimator interface: accuracy on separable blobs, overclustering, save/load, seeds, bad input."""
import numpy as np
import pytest

from nolabel import methods
from nolabel.errors import NolabelError
from nolabel.metrics import hungarian_acc, many_to_one_acc
from nolabel.neighbors import knn

K = 4
#: small but real settings: every fit below takes a second or two on 2 cores
FAST = {
    "scan": {"epochs": 30, "batch_size": 128, "n_heads": 3},
    "temi": {"epochs": 100, "batch_size": 128, "n_heads": 3, "hidden": 64, "warmup_epochs": 3},
    "sela": {"epochs": 30, "batch_size": 128, "n_heads": 3, "n_relabel": 10, "lr": 1e-2},  # a short run needs the larger step
    "lsdc": {"epochs": 30, "batch_size": 128},
}


@pytest.fixture(scope="module")
def blobs():
    """600 points in 4 Gaussian blobs in 16-d (not axis-aligned), with their 10-NN."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(K, 16)) * 3
    y = np.repeat(np.arange(K), 150)
    x = (centers[y] + rng.normal(size=(len(y), 16))).astype(np.float32)
    return x, y, knn(x, 10).indices


def make(name, k=K, seed=0, **extra):
    return methods.get(name)(n_clusters=k, seed=seed, **{**FAST[name], **extra})


@pytest.mark.parametrize("name", sorted(FAST))
def test_method_separates_blobs(name, blobs):
    x, y, nb = blobs
    est = make(name).fit(x, nb)
    assert est.labels_.shape == (len(x),)
    assert hungarian_acc(y, est.labels_) >= 0.95
    proba = est.predict_proba(x)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
    assert len(est.history_) == FAST[name]["epochs"]
    assert len(est.head_losses_) == est.n_heads == FAST[name].get("n_heads", est.n_heads)


@pytest.mark.parametrize("name", sorted(FAST))
def test_save_load_round_trip_and_seed_determinism(name, blobs, tmp_path):
    x, _, nb = blobs
    est = make(name, seed=3).fit(x, nb)
    loaded = methods.ClusterMethod.load(est.save(tmp_path / name))
    assert type(loaded) is type(est)
    np.testing.assert_allclose(loaded.predict_proba(x), est.predict_proba(x), atol=1e-6)
    assert loaded.history_ == pytest.approx(est.history_)
    again = make(name, seed=3).fit(x, nb)
    np.testing.assert_array_equal(again.labels_, est.labels_)


@pytest.mark.parametrize("name", sorted(FAST))
def test_overclustering(name, blobs):
    """K = 2x classes: each cluster stays inside one blob (many-to-one ACC)."""
    x, y, nb = blobs
    est = make(name, k=2 * K, **({"epochs": 100} if name == "lsdc" else {})).fit(x, nb)
    # LSD-C's pairwise targets tie each blob together, so it may use only K clusters
    assert len(np.unique(est.labels_)) >= K
    assert many_to_one_acc(y, est.labels_) >= 0.95


def test_head_is_chosen_by_lowest_loss(blobs):
    """With one size profile for every head (here the k-means one) the lowest objective wins."""
    x, _, nb = blobs
    est = make("scan", n_heads=4, size_prior="kmeans").fit(x, nb)
    from nolabel.methods.scan import whole_data_scan_loss

    kept = np.argmin(est.head_losses_)
    assert est.head_losses_[kept] == min(est.head_losses_)
    # the kept head's loss, recomputed on the fitted estimator, equals the recorded one
    import torch

    p = torch.as_tensor(est.predict_proba(x))[None]
    nbt = torch.as_tensor(nb[:, : est.n_neighbors])
    prior = torch.as_tensor(est.prior_)
    assert float(whole_data_scan_loss(p, nbt, est.entropy_weight, prior)[0]) == pytest.approx(est.head_losses_[kept],
                                                                                              rel=1e-3)


def test_tempered_head_is_chosen_by_neighbor_kappa(blobs):
    """Default: head_losses_ holds minus each head's neighbour kappa; on 4 separated blobs
    every head uses the 4 clusters, so the kept head is the one of highest kappa."""
    import torch

    from nolabel.methods.size_prior import neighbor_kappa

    x, _, nb = blobs
    est = make("scan", n_heads=4).fit(x, nb)
    kappa = float(neighbor_kappa(torch.as_tensor(nb), torch.as_tensor(est.labels_), K))
    assert -kappa == pytest.approx(min(est.head_losses_), abs=1e-9)


@pytest.mark.parametrize("base", ["scan", "kmeans"])
def test_selflabel_on_top_of_a_method(base, blobs, tmp_path):
    x, y, nb = blobs
    # SCAN needs ~100 epochs here before predictions pass the 0.99 threshold
    first = make(base, epochs=100) if base in FAST else methods.get(base)(n_clusters=K, seed=0)
    est = methods.get("selflabel")(n_clusters=K, seed=0, base=first, epochs=10, batch_size=200,
                                   warmup_epochs=200).fit(x, nb)
    assert hungarian_acc(y, est.labels_) >= 0.95
    assert est.confident_ > 0.1
    assert not np.isnan(est.history_).all()  # some batches passed the threshold and trained
    loaded = methods.ClusterMethod.load(est.save(tmp_path / "sl"))
    np.testing.assert_allclose(loaded.predict_proba(x), est.predict_proba(x), atol=1e-6)
    assert loaded.get_params()["base"]["method"] == base


def test_selflabel_without_confident_samples_does_not_crash(blobs):
    x, y, nb = blobs
    base = make("scan", epochs=1)
    est = methods.get("selflabel")(n_clusters=K, base=base, threshold=0.999999, epochs=3).fit(x, nb)
    assert est.labels_.shape == (len(x),)
    assert all(np.isnan(est.history_))  # no batch passed the threshold: no update
    np.testing.assert_allclose(est.predict_proba(x), base.predict_proba(x), atol=1e-6)


def test_selflabel_by_name_and_mismatched_k():
    est = methods.get("selflabel")(n_clusters=3, base="sela")
    assert est.base.name == "sela" and est.base.n_clusters == 3
    with pytest.raises(NolabelError, match="clusters"):
        methods.get("selflabel")(n_clusters=3, base=methods.get("scan")(n_clusters=5))


@pytest.mark.parametrize("name", ["scan", "temi", "lsdc"])
def test_methods_that_need_neighbours_say_so(name, blobs):
    x, _, _ = blobs
    with pytest.raises(NolabelError, match="neighbours"):
        make(name).fit(x)


def test_lsdc_other_adjacencies_and_views(blobs):
    x, y, _ = blobs
    for adjacency in ("cosine", "l2", "sne"):
        est = make("lsdc", adjacency=adjacency, view="perturb", batches="random", mixup=0.3, knn_smoothing=0).fit(x)
        assert hungarian_acc(y, est.labels_) >= 0.85, adjacency
    with pytest.raises(NolabelError, match="adjacency"):
        make("lsdc", adjacency="nope")


@pytest.mark.parametrize("name", sorted(FAST))
def test_bad_input_is_a_clear_error(name, blobs):
    x, _, nb = blobs
    with pytest.raises(NolabelError, match="cannot make"):
        make(name, k=len(x) + 1).fit(x, nb)
    bad = x.copy()
    bad[5, 2] = np.nan
    with pytest.raises(NolabelError, match="NaN"):
        make(name).fit(bad, nb)
    with pytest.raises(NolabelError, match="not fitted"):
        make(name).predict(x)


@pytest.mark.parametrize("name", ["sela", "lsdc"])
def test_head_choice_on_fewer_items_than_its_neighbour_graph(name, blobs):
    """The tempered heads are chosen on a 20-NN graph mined inside ``fit`` when none is
    given; a 12-item set gets the 11-NN instead of an error about a k the user never set."""
    x, y, _ = blobs
    rows = np.concatenate([np.flatnonzero(y == c)[:4] for c in range(3)])
    est = make(name, k=3, **({"view": "perturb"} if name == "lsdc" else {})).fit(x[rows], None)
    assert len(est.head_losses_) == FAST[name].get("n_heads", 3)
    assert hungarian_acc(y[rows], est.predict(x[rows])) == 1.0


def test_registry_lists_every_method():
    assert {"kmeans", "scan", "selflabel", "temi", "sela", "lsdc"} <= set(methods.names())


def test_size_prior_kl_hand_computed():
    import torch

    from nolabel.nn.losses import entropy, size_prior_kl

    pbar, prior = torch.tensor([0.2, 0.5, 0.3]), torch.tensor([0.6, 0.3, 0.1])
    # sorted: s = (0.5, 0.3, 0.2), r = (0.6, 0.3, 0.1): 0.5 ln(5/6) + 0.3 ln 1 + 0.2 ln 2
    assert float(size_prior_kl(pbar, prior)) == pytest.approx(0.5 * np.log(5 / 6) + 0.2 * np.log(2), abs=1e-6)
    uniform = torch.full((3,), 1 / 3)
    assert float(size_prior_kl(pbar, uniform)) == pytest.approx(np.log(3) - float(entropy(pbar)), abs=1e-6)
    assert float(size_prior_kl(prior[[2, 0, 1]], prior)) == pytest.approx(0.0, abs=1e-7)  # blind to order


def test_sinkhorn_with_marginals_hits_them():
    import torch

    from nolabel.nn.sinkhorn import sinkhorn_knopp

    logp = torch.log_softmax(torch.randn(400, 4, generator=torch.Generator().manual_seed(0)), -1)
    m = torch.tensor([0.4, 0.3, 0.2, 0.1])
    q, labels = sinkhorn_knopp(logp, lam=10.0, tol=1e-3, marginals=m)
    np.testing.assert_allclose(q.sum(0).numpy(), 400 * m.numpy(), rtol=2e-3)
    np.testing.assert_allclose(q.sum(1).numpy(), 1.0, atol=1e-5)


@pytest.fixture(scope="module")
def uneven_blobs():
    """4 separated blobs of 320, 160, 80 and 40 points in 16-d, with their 10-NN."""
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(K, 16)) * 3
    sizes = [320, 160, 80, 40]
    y = np.repeat(np.arange(K), sizes)
    x = (centers[y] + rng.normal(size=(len(y), 16))).astype(np.float32)
    return x, y, knn(x, 10).indices, np.array(sizes)


@pytest.mark.parametrize("name", ["scan", "sela"])
def test_imbalance_aware_default_recovers_uneven_sizes(name, uneven_blobs):
    """The default (heads towards tempered k-means profiles, the most modular head kept)
    finds the true sizes within 20 %; SCAN's / SeLa's equal-size term splits the big blob."""
    x, y, nb, sizes = uneven_blobs
    # 4 steps an epoch on 600 points: SCAN needs a few hundred steps to settle
    longer = {"epochs": 100, "lr": 3e-2} if name == "scan" else {"epochs": 150}
    est = make(name, **longer).fit(x, nb)
    found = np.sort(np.bincount(est.labels_, minlength=K))[::-1]
    assert np.all(np.abs(found - sizes) <= 0.2 * sizes), found
    uniform = make(name, **longer, **({"size_prior": "uniform"} if name == "scan" else {"marginals": "uniform"}))
    uniform.fit(x, nb)
    assert np.bincount(uniform.labels_, minlength=K).max() < 0.8 * sizes[0]  # equal sizes forced: the big blob splits


@pytest.mark.parametrize("name", ["scan", "sela"])
def test_default_keeps_balanced_blobs_balanced(name, blobs):
    """On equal blobs the most modular head is a balanced one (within 20 % of 150 each)."""
    x, y, nb = blobs
    est = make(name).fit(x, nb)
    assert np.all(np.abs(np.bincount(est.labels_, minlength=K) - 150) <= 30)


def test_tempered_profiles_hand_computed():
    import torch

    from nolabel.methods.size_prior import profile_alphas, tempered_profiles

    base = torch.tensor([0.6, 0.3, 0.1])
    r = tempered_profiles(base, torch.tensor([0.0, 1.0, 2.0]))
    np.testing.assert_allclose(r[0].numpy(), [1 / 3] * 3, atol=1e-6)  # alpha 0: uniform
    np.testing.assert_allclose(r[1].numpy(), [0.6, 0.3, 0.1], atol=1e-6)  # alpha 1: the profile itself
    np.testing.assert_allclose(r[2].numpy(), np.array([0.36, 0.09, 0.01]) / 0.46, atol=1e-6)  # squared, renormalised
    np.testing.assert_allclose(profile_alphas(5).numpy(), [0.0, 0.25, 0.5, 0.75, 1.0])
    assert profile_alphas(1).tolist() == [1.0]


def test_neighbor_kappa_hand_computed():
    import torch

    from nolabel.methods.size_prior import neighbor_kappa, select_head

    nb = torch.tensor([[1], [0], [3], [2]])  # two disjoint edges 0-1 and 2-3, every degree 2, 2m = 8
    labels = torch.tensor([[0, 0, 1, 1], [0, 1, 0, 1], [0, 0, 0, 0]])
    # p_e = 2 (4/8)^2 = 0.5; right cut p_o = 1: (1 - .5) / .5 = 1; wrong cut p_o = 0: -1; one cluster: 0
    np.testing.assert_allclose(neighbor_kappa(nb, labels, 2).numpy(), [1.0, -1.0, 0.0], atol=1e-12)
    # two triangles, every degree 4, 2m = 24; cutting item 2 off its triangle keeps 8 of the
    # 12 directed edges inside (0-1 both ways, the other triangle's 6), volumes 8 and 16
    nb2 = torch.tensor([[1, 2], [0, 2], [0, 1], [4, 5], [3, 5], [3, 4]])
    q = neighbor_kappa(nb2, torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 1]]), 2).numpy()
    p_e = (8 / 24) ** 2 + (16 / 24) ** 2
    np.testing.assert_allclose(q, [1.0, (8 / 12 - p_e) / (1 - p_e)], atol=1e-12)
    logits = torch.nn.functional.one_hot(labels[[1, 0, 2]], 2).float()
    best, kappas = select_head(logits, nb)
    assert best == 1 and kappas == pytest.approx([-1.0, 1.0, 0.0])
