"""Spectral clustering of the mined k-NN graph."""
from __future__ import annotations

import numpy as np
import pytest

from nolabel import methods
from nolabel.errors import NolabelError
from nolabel.metrics import hungarian_acc
from nolabel.methods.spectral import knn_graph_embedding
from nolabel.neighbors import knn


@pytest.fixture(scope="module")
def moons():
    """Two interleaved half-moons (600 points, noise 0.05) on the plane z = 3, so that
    cosine neighbours follow the moons; with their 10-NN."""
    from sklearn.datasets import make_moons

    xy, y = make_moons(600, noise=0.05, random_state=0)
    x = np.c_[xy, np.full(len(xy), 3.0)].astype(np.float32)
    return x, y, knn(x, 10).indices


def test_two_components_give_indicator_eigenvectors():
    # two disjoint triangles: the top-2 eigenvectors, rows normalised, are constant per component
    nb = np.array([[1, 2], [0, 2], [0, 1], [4, 5], [3, 5], [3, 4]])
    emb = knn_graph_embedding(nb, 2)
    assert np.allclose(emb[:3], emb[0], atol=1e-6) and np.allclose(emb[3:], emb[3], atol=1e-6)
    assert abs(float(emb[0] @ emb[3])) < 1e-6


def test_spectral_follows_the_moons_where_kmeans_cuts_them(moons, tmp_path):
    x, y, nb = moons
    km = hungarian_acc(y, methods.get("kmeans")(n_clusters=2, seed=0).fit(x).labels_)
    est = methods.get("spectral")(n_clusters=2, seed=0).fit(x, nb)
    acc = hungarian_acc(y, est.labels_)
    assert km < 0.9 and acc >= 0.98 and acc >= km + 0.1
    p = est.predict_proba(x)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-6)
    loaded = methods.ClusterMethod.load(est.save(tmp_path / "sp"))
    np.testing.assert_array_equal(loaded.predict(x), est.labels_)


def test_spectral_needs_neighbours_and_checks_width(moons):
    x, _, nb = moons
    with pytest.raises(NolabelError, match="neighbours"):
        methods.get("spectral")(n_clusters=2).fit(x)
    est = methods.get("spectral")(n_clusters=2).fit(x, nb)
    with pytest.raises(NolabelError, match="dimensions"):
        est.predict(x[:, :2])


def test_graph_scales_follow_n_and_k():
    from nolabel.methods.spectral import graph_scales

    assert graph_scales(16407, 20) == [10, 20, 40, 80, 160]  # N / 2K = 410
    assert graph_scales(600, 2) == [10, 20, 40, 80]  # 150
    assert graph_scales(1000, 10) == [10, 20, 40]  # 50
    assert graph_scales(100, 10) == [10]  # 5: the smallest scale stays
    assert graph_scales(6, 2) == [5]  # never more neighbours than other items


def test_default_joins_the_scales_and_mines_what_it_lacks(moons, tmp_path):
    x, y, nb = moons  # 10 neighbours given, 80 needed at N=600, K=2
    est = methods.get("spectral")(n_clusters=2, seed=0)
    assert type(est).neighbors_needed(est.get_params()) == 10
    est.fit(x, nb)
    assert est.scales_ == [10, 20, 40, 80] and est.n_votes_ == 40
    assert hungarian_acc(y, est.labels_) >= 0.98
    loaded = methods.ClusterMethod.load(est.save(tmp_path / "sp"))
    assert loaded.scales_ == est.scales_ and loaded.n_votes_ == 40
    np.testing.assert_array_equal(loaded.predict(x), est.labels_)
    one = methods.get("spectral")(n_clusters=2, n_neighbors=10, seed=0).fit(x, nb)  # one graph, as given
    assert one.scales_ == [10] and type(one).neighbors_needed(one.get_params()) == 10
    assert hungarian_acc(y, one.labels_) >= 0.98
