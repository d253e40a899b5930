"""The label-free health check: hand-computed values, a collapsed SCAN (entropy weight 0)
that must warn, a healthy one that must not, and the check stored in metrics.json."""
import json

import numpy as np
import pytest

from nolabel import methods
from nolabel.health import health_check, kmeans_reference
from nolabel.neighbors import knn

KEYS = {"n_clusters", "n_nonempty", "largest_share", "smallest_share", "mean_confidence", "agreement_kmeans",
        "warnings"}


def test_hand_computed_values():
    labels = np.array([0, 0, 0, 1, 1, 3])  # K = 4: cluster 2 empty
    conf = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    h = health_check(labels, conf, 4, kmeans_labels=labels)
    assert set(h) == KEYS
    assert h["n_nonempty"] == 3
    assert h["largest_share"] == pytest.approx(0.5)
    assert h["smallest_share"] == 0.0
    assert h["mean_confidence"] == pytest.approx(0.65)
    assert h["agreement_kmeans"] == pytest.approx(1.0)
    assert h["warnings"] == ["1 of 4 clusters are empty"]  # 0.5 < 3 * 0.25; 0.65 > 0.25 + 0.075
    json.dumps(h)


def test_each_rule_fires_alone():
    lopsided = np.array([0] * 80 + list(range(1, 10)) * 2 + [9, 9])  # K=10: 80 % in cluster 0
    h = health_check(lopsided, np.ones(100), 10)
    assert len(h["warnings"]) == 1 and "largest cluster holds 80.0%" in h["warnings"][0]
    assert h["agreement_kmeans"] is None
    flat = health_check(np.arange(100) % 4, np.full(100, 0.3), 4)  # 0.3 < 0.25 + 0.075
    assert len(flat["warnings"]) == 1 and "near uniform" in flat["warnings"][0]
    tiny = health_check(np.array([0] * 8 + list(range(1, 10)) * 1110 + [1] * 2), np.ones(10000), 10)
    assert tiny["warnings"] == ["a cluster holds only 8 items (0.08%), under 1/100 of the uniform share 10.0%"]
    ok = health_check(np.array([0] * 12 + list(range(1, 10)) * 1110), np.ones(10002), 10)  # 0.12 % > 0.1 %
    assert ok["warnings"] == []


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(5, 16)) * 3
    y = np.repeat(np.arange(5), 100)
    x = (centers[y] + rng.normal(size=(len(y), 16))).astype(np.float32)
    return x, knn(x, 10).indices


@pytest.mark.parametrize("entropy_weight, collapsed", [(0.0, True), (5.0, False)])
def test_scan_without_entropy_term_is_flagged(blobs, entropy_weight, collapsed):
    x, nb = blobs
    # a random start: from the k-means start the consistency term alone keeps the k-means partition
    est = methods.get("scan")(n_clusters=5, entropy_weight=entropy_weight, n_heads=1, epochs=40, batch_size=100,
                              seed=0, init="random").fit(x, nb)
    p = est.predict_proba(x)
    h = health_check(p.argmax(1), p.max(1), 5, kmeans_reference(x, 5))
    assert bool(h["warnings"]) is collapsed
    if not collapsed:
        assert h["n_nonempty"] == 5 and h["agreement_kmeans"] > 0.9


def test_fit_seeds_stores_health_and_warns(blobs, tmp_path):
    from nolabel.clustering import fit_seeds
    from nolabel.data.arrays import array_dataset
    from nolabel.items import save_items

    x, _ = blobs
    path = tmp_path / "x.npy"
    np.save(path, x)
    save_items(path, array_dataset(x))
    with pytest.warns(UserWarning, match="clusters are empty|largest cluster"):
        summary = fit_seeds(path, "scan", 5, {"entropy_weight": 0.0, "n_heads": 1, "epochs": 40, "batch_size": 100,
                                                  "init": "random"},
                            [0], out_dir=tmp_path / "out", x=x)
    stored = json.loads((tmp_path / "out" / "seed0" / "metrics.json").read_text())
    assert set(stored["health"]) == KEYS and stored["health"]["warnings"]
    assert summary["per_seed"][0]["health"] == stored["health"]
