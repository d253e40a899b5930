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
    single = [KMeans(n_clusters=6, n_init=1, seed=s).fit(x).inertia_ for s in range(3)]
    best = KMeans(n_clusters=6, n_init=3, seed=0).fit(x).inertia_
    assert best == pytest.approx(min(single), rel=1e-6)


def test_overclustering_makes_more_clusters():
    x, _ = blobs(k=4)
    km = KMeans(n_clusters=4, overcluster=1.5, seed=0).fit(x)
    assert km.cluster_centers_.shape[0] == 6
    assert km.predict_proba(x).shape[1] == 6


def test_pca_and_incremental_pca_agree(tmp_path):
    x, y = blobs(d=64)
    path = tmp_path / "x.npy"
    np.save(path, x)
    mm = np.load(path, mmap_mode="r")
    exact = KMeans(n_clusters=4, pca_dim=8, seed=0).fit(x)
    incremental = KMeans(n_clusters=4, pca_dim=8, seed=0).fit(mm)
    assert exact.pca_components_.shape == (8, 64)
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
