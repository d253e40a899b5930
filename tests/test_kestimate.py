"""Estimating the number of clusters without labels: known answers and bad input."""
from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
import scipy.sparse as sp

from nolabel import kestimate
from nolabel.errors import NolabelError
from nolabel.kestimate import KEstimate, estimate_k


def blobs(sizes: list[int], dim: int = 16, spread: float = 0.15, seed: int = 0) -> np.ndarray:
    """Gaussian blobs around random unit directions (well separated in cosine)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(len(sizes), dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    x = np.concatenate([c + spread * rng.normal(size=(m, dim)) / np.sqrt(dim) for c, m in zip(centers, sizes)])
    return x[rng.permutation(len(x))].astype(np.float32)


def arcs(n_arcs: int = 3, per_arc: int = 150, span: float = 2.2, dim: int = 16, seed: int = 0) -> np.ndarray:
    """Long arcs of great circles in mutually orthogonal planes: inside an arc the ends are
    further apart (cosine ``cos(span)`` < 0) than two different arcs (cosine 0)."""
    rng = np.random.default_rng(seed)
    parts = []
    for a in range(n_arcs):
        t = rng.uniform(0.0, span, per_arc)
        p = np.zeros((per_arc, dim))
        p[:, 2 * a], p[:, 2 * a + 1] = np.cos(t), np.sin(t)
        parts.append(p + 0.005 * rng.normal(size=p.shape))
    return np.concatenate(parts).astype(np.float32)


@pytest.mark.parametrize("sizes", [[80] * 4, [60] * 7, [40] * 12, [240, 120, 60, 30, 20]])
@pytest.mark.parametrize("method", ["eigengap", "silhouette", "auto"])
def test_blobs_give_the_true_number(sizes, method):
    est = estimate_k(blobs(sizes), k_max=16, method=method)
    assert est.k == len(sizes)
    assert est.method == method
    assert est.candidates == list(range(2, 17))
    assert len(est.scores) == len(est.candidates)


def test_stability_on_blobs():
    est = estimate_k(blobs([60] * 5, seed=1), k_max=10, method="stability")
    assert est.k == 5
    assert max(est.scores) == pytest.approx(1.0)


def test_eigengap_follows_manifolds_that_kmeans_splits():
    x = arcs()
    assert estimate_k(x, k_max=10, method="eigengap").k == 3
    # the compactness criterion cuts the long arcs into pieces
    assert estimate_k(x, k_max=10, method="silhouette").k > 3


def test_exact_duplicates_of_three_points():
    rng = np.random.default_rng(0)
    x = np.repeat(rng.normal(size=(3, 8)), 40, axis=0).astype(np.float32)
    for method in ("eigengap", "silhouette", "auto"):
        assert estimate_k(x, k_max=8, method=method).k == 3


def test_auto_keeps_both_curves_and_agreement():
    est = estimate_k(blobs([60] * 6), k_max=12, method="auto")
    assert est.k == 6
    assert est.details["picks"] == {"eigengap": 6, "silhouette": 6}
    assert est.details["rule"] == "agreement"
    for name in ("eigengap", "silhouette"):
        curve = est.details["criteria"][name]["scores"]
        assert len(curve) == len(est.candidates)
    assert min(est.scores) >= 0.0 and max(est.scores) <= 1.0


def test_default_range_and_json():
    x = blobs([50] * 4)
    est = estimate_k(x)  # auto, with both criteria's curves in details
    assert est.candidates == list(range(2, min(50, len(x) // 10) + 1))
    assert isinstance(est, KEstimate)
    back = json.loads(json.dumps(asdict(est)))
    assert back["k"] == 4 and back["candidates"] == est.candidates


def test_deterministic_given_seed():
    x = blobs([70, 50, 40], seed=3)
    for method in ("auto", "stability"):
        a = asdict(estimate_k(x, k_max=8, method=method, seed=5))
        b = asdict(estimate_k(x, k_max=8, method=method, seed=5))
        a["details"].pop("seconds")
        b["details"].pop("seconds")
        assert a == b


def test_precomputed_neighbors_match_mined_ones():
    x = blobs([50] * 5, seed=2)
    z = x / np.linalg.norm(x, axis=1, keepdims=True)
    nb = np.argsort(-(z @ z.T), axis=1)[:, :11]  # column 0 is the sample itself
    own = estimate_k(x, k_max=10, method="eigengap")
    given = estimate_k(x, k_max=10, method="eigengap", neighbors=nb)
    assert given.k == own.k == 5
    np.testing.assert_allclose(given.scores, own.scores, atol=1e-4)


def test_laplacian_spectrum_of_two_complete_graphs():
    # two disjoint K_4: normalised Laplacian eigenvalues 0 (twice) then 4/3 (six times)
    block = np.ones((4, 4)) - np.eye(4)
    w = sp.csr_matrix(np.kron(np.eye(2), block))
    lam, n_components = kestimate._laplacian_spectrum(w, 4, seed=0)
    np.testing.assert_allclose(lam, [0, 0, 4 / 3, 4 / 3], atol=1e-9)
    assert n_components == 2


def test_sparse_solver_and_subsampling(monkeypatch):
    monkeypatch.setattr(kestimate, "_DENSE_EIGH_UP_TO", 30)
    monkeypatch.setattr(kestimate, "SUBSAMPLE", {"eigengap": 300, "silhouette": 200, "stability": 200})
    x = blobs([120] * 4, seed=4)
    est = estimate_k(x, k_max=10, method="auto")
    assert est.k == 4
    assert est.details["criteria"]["eigengap"]["n_samples"] == 300
    assert est.details["criteria"]["silhouette"]["n_samples"] == 200
    # ARPACK and the dense solver agree, the zero of multiplicity 4 (one per blob) included
    nn, sims = kestimate._cosine_knn(kestimate._normalize(x[:300]), 10)
    w = kestimate._self_tuning_affinity(nn, sims)
    sparse, n_components = kestimate._laplacian_spectrum(w, 8, seed=0)
    monkeypatch.setattr(kestimate, "_DENSE_EIGH_UP_TO", 1000)
    dense, _ = kestimate._laplacian_spectrum(w, 8, seed=0)
    assert n_components == 4
    np.testing.assert_allclose(sparse[:4], 0.0, atol=1e-9)
    np.testing.assert_allclose(sparse, dense, atol=1e-6)


@pytest.mark.parametrize(
    ("x", "kwargs", "message"),
    [
        (np.full((100, 4), np.nan, dtype=np.float32), {}, "NaN"),
        (np.ones((10, 4), dtype=np.float32), {}, "at least 20"),
        (np.ones(100, dtype=np.float32), {}, "2-D"),
        (np.ones((100, 4), dtype=np.float32), {"k_min": 8, "k_max": 5}, "empty K range"),
        (np.ones((25, 4), dtype=np.float32), {"k_min": 3}, "empty K range"),
        (np.ones((100, 4), dtype=np.float32), {"k_max": 60}, "too large"),
        (np.ones((100, 4), dtype=np.float32), {"k_min": 1}, "k_min"),
        (np.ones((100, 4), dtype=np.float32), {"method": "elbow"}, "unknown K estimation method"),
        (np.ones((100, 4), dtype=np.float32), {"n_neighbors": 1}, "n_neighbors"),
        (np.ones((100, 4), dtype=np.float32), {"neighbors": np.zeros((50, 3), dtype=np.int64)}, "neighbours"),
    ],
)
def test_bad_input_is_a_one_line_user_error(x, kwargs, message):
    with pytest.raises(NolabelError, match=message) as info:
        estimate_k(x, **kwargs)
    assert "\n" not in str(info.value)


def test_default_k_max_grows_with_n():
    assert kestimate.default_k_max(200) == 20
    assert kestimate.default_k_max(10_000) == 200
    assert kestimate.default_k_max(100_000) == 632
    assert kestimate.default_k_max(10_000_000) == 1000


def test_coarse_to_fine_finds_many_clusters():
    x = blobs([20] * 90, dim=32, spread=0.2, seed=5)
    est = estimate_k(x, k_max=250, method="eigengap")
    assert est.k == 90
    search = est.details["search"]
    assert search["coarse"][0] == 2 and search["coarse"][-1] == 250 and len(search["coarse"]) <= 21
    assert est.candidates == sorted(set(search["coarse"]) | set(search["fine"]))
    assert len(est.candidates) < 100 and {89, 90, 91} <= set(est.candidates)
    assert len(est.scores) == len(est.candidates)


def test_a_pick_on_the_edge_of_the_range_warns():
    x = blobs([40] * 12, seed=6)
    with pytest.warns(UserWarning, match="largest candidate"):
        est = estimate_k(x, k_max=8, method="silhouette")
    assert est.k == 8 and "k_max" in est.details["edge"]


def test_run_passes_k_max_to_the_estimate(tmp_path):
    from nolabel.pipeline import Pipeline, RunConfig

    run = Pipeline(RunConfig(data="digits", backbone="pixels", methods=["kmeans"], k="auto", k_max=5, seeds=[0], params={"kmeans": {"n_init": 1}}),
                   out=tmp_path / "run").fit(progress=False, log=lambda msg: None)
    estimate = run.manifest["k_estimate"]
    assert estimate["candidates"][-1] == 5 and 2 <= estimate["k"] <= 5
    assert list((tmp_path / "run").rglob("k_estimate.kmax5.json"))
