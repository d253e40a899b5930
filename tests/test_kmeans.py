"""k-means (Zheltonozhskii et al.): known answers on separable data, the estimator contract."""
import numpy as np
import pytest

from nolabel import methods
from nolabel.errors import NolabelError
from nolabel.methods.base import ClusterMethod

KMeans = methods.get("kmeans")


def blobs(n_per=60, k=4, d=16, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * 3
    x = np.concatenate([c + spread * rng.normal(size=(n_per, d)) for c in centers]).astype(np.float32)
    y = np.repeat(np.arange(k), n_per)
    return x, y


def same_partition(a, b):
    """True when two labelings are equal up to a renaming of the clusters."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.mark.parametrize("backend", ["lloyd", "minibatch", "faiss"])
def test_recovers_separated_blobs(backend):
    x, y = blobs()
    km = KMeans(n_clusters=4, backend=backend, epochs=5, seed=1).fit(x)
    assert same_partition(km.labels_, y)


def test_proba_is_a_distribution_whose_argmax_is_the_assignment():
    x, _ = blobs(spread=1.0)
    km = KMeans(n_clusters=4, seed=0).fit(x)
    p = km.predict_proba(x)
    assert p.shape == (len(x), 4)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    d2 = ((x[:, None, :] - km.cluster_centers_[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(p.argmax(axis=1), d2.argmin(axis=1))


def test_restarts_keep_the_lowest_inertia():
    x, _ = blobs(spread=2.0, k=6)
    km = KMeans(n_clusters=6, n_init=3, seed=0)
    single = [km._run_sklearn(x, "lloyd", s)[1] for s in km.restart_seeds(3)]
    assert km.fit(x).inertia_ == pytest.approx(min(single), rel=1e-6)


def test_restart_seeds_are_independent_across_seeds():
    a, b = KMeans(seed=0).restart_seeds(10), KMeans(seed=1).restart_seeds(10)
    assert len(set(a)) == 10 and not set(a) & set(b)
    assert KMeans(seed=0).restart_seeds(3) == a[:3]  # a restart does not depend on n_init


def test_seeds_0_and_1_give_different_single_restarts():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8)).astype(np.float32)  # no structure: the start decides the partition
    a = KMeans(n_clusters=8, n_init=1, seed=0).fit(x)
    b = KMeans(n_clusters=8, n_init=1, seed=1).fit(x)
    assert not np.allclose(np.sort(a.cluster_centers_, axis=0), np.sort(b.cluster_centers_, axis=0))


@pytest.mark.parametrize("backend", ["faiss", "minibatch"])
def test_fast_backends_agree_with_lloyd_at_small_n(backend):
    x, y = blobs(n_per=80, k=5, d=12, spread=0.3, seed=2)
    exact = KMeans(n_clusters=5, backend="lloyd", seed=0).fit(x)
    fast = KMeans(n_clusters=5, backend=backend, epochs=5, seed=0).fit(x)
    assert same_partition(exact.labels_, fast.labels_) and same_partition(exact.labels_, y)
    assert fast.inertia_ == pytest.approx(exact.inertia_, rel=1e-3)


def test_confidences_are_soft_with_a_data_temperature():
    x, _ = blobs(spread=1.5, k=4, d=4)
    km = KMeans(n_clusters=4, seed=0).fit(x)
    p = km.predict_proba(x)
    d2_all = np.sort(((x[:, None, :] - km.cluster_centers_[None]) ** 2).sum(-1), axis=1)
    assert km.temperature_ == pytest.approx((d2_all[:, 1] - d2_all[:, 0]).mean(), rel=1e-4)
    assert 0.3 < p.max(axis=1).mean() < 0.999 and (p.max(axis=1) < 0.9).any()
    z = x[:5]
    d2 = ((z[:, None, :] - km.cluster_centers_[None]) ** 2).sum(-1)
    expected = np.exp(-d2 / km.temperature_)
    np.testing.assert_allclose(p[:5], expected / expected.sum(1, keepdims=True), rtol=1e-4, atol=1e-6)


def test_default_pca_bounds_the_dimension_and_matches_sklearn_pca():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    x = (rng.normal(size=(400, 300)) * np.linspace(3, 0.1, 300)).astype(np.float32)
    km = KMeans(n_clusters=3, n_init=1, seed=0).fit(x)
    assert km.pca_components_.shape == (256, 300)
    ref = PCA(n_components=256).fit(x).components_
    cos = np.abs((km.pca_components_[:20] * ref[:20]).sum(axis=1))
    np.testing.assert_allclose(cos, 1.0, atol=1e-3)
    assert KMeans(n_clusters=3, n_init=1).fit(x[:, :64]).pca_components_ is None


def test_overclustering_makes_more_clusters():
    x, _ = blobs(k=4)
    km = KMeans(n_clusters=4, overcluster=1.5, seed=0).fit(x)
    assert km.cluster_centers_.shape[0] == 6
    assert km.predict_proba(x).shape[1] == 6


def test_pca_on_a_memory_map_equals_pca_in_memory(tmp_path):
    x, y = blobs(d=64)
    path = tmp_path / "x.npy"
    np.save(path, x)
    mm = np.load(path, mmap_mode="r")
    exact = KMeans(n_clusters=4, pca_dim=8, seed=0).fit(x)
    incremental = KMeans(n_clusters=4, pca_dim=8, seed=0).fit(mm)
    assert exact.pca_components_.shape == (8, 64)
    np.testing.assert_allclose(exact.pca_components_, incremental.pca_components_, atol=1e-5)
    assert same_partition(exact.labels_, y) and same_partition(incremental.labels_, y)


def test_save_load_round_trip(tmp_path):
    x, _ = blobs(spread=1.0)
    km = KMeans(n_clusters=4, pca_dim=5, whiten=True, seed=3).fit(x)
    km.save(tmp_path / "m")
    loaded = ClusterMethod.load(tmp_path / "m")
    assert isinstance(loaded, KMeans) and loaded.get_params() == km.get_params()
    np.testing.assert_allclose(loaded.predict_proba(x), km.predict_proba(x), rtol=1e-6)


@pytest.mark.parametrize(
    "x, k, message",
    [
        (np.zeros((5, 3), np.float32), 6, "cannot make 6 clusters from 5 samples"),
        (np.zeros((5, 3), np.float32), 1, "integer >= 2"),
        (np.array([[0.0, np.nan], [1.0, 1.0], [2.0, 2.0]], np.float32), 2, "NaN"),
        (np.zeros(5, np.float32), 2, "2-D"),
    ],
)
def test_bad_input_is_a_clear_error(x, k, message):
    with pytest.raises(NolabelError, match=message):
        KMeans(n_clusters=k).fit(x)


def test_unfitted_predict_and_unknown_backend():
    with pytest.raises(NolabelError, match="not fitted"):
        KMeans().predict(np.zeros((3, 2)))
    with pytest.raises(NolabelError, match="unknown k-means backend"):
        KMeans(n_clusters=2, backend="nope").fit(np.random.default_rng(0).normal(size=(10, 2)))


def test_wide_rows_use_randomized_pca_close_to_exact(monkeypatch):
    from nolabel.methods import kmeans as km_module

    rng = np.random.default_rng(1)
    x = (rng.normal(size=(500, 40)) * np.linspace(4, 0.1, 40)).astype(np.float32)
    exact = KMeans(n_clusters=3, pca_dim=5, n_init=1).fit(x)
    monkeypatch.setattr(km_module, "EXACT_PCA_UP_TO", 30)
    randomized = KMeans(n_clusters=3, pca_dim=5, n_init=1).fit(x)
    cos = np.abs((exact.pca_components_ * randomized.pca_components_).sum(axis=1))
    np.testing.assert_allclose(cos, 1.0, atol=1e-3)
