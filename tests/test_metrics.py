import numpy as np
import pytest
from sklearn import metrics as skm

from nolabel.errors import NolabelError
from nolabel.metrics import (
    ami,
    ari,
    cluster_sizes,
    confusion_matrix,
    count_matrix,
    evaluate,
    hungarian_acc,
    hungarian_map,
    many_to_one_acc,
    nmi,
    top_k_acc,
)


def from_counts(counts):
    """Label vectors realising a (clusters x classes) count matrix."""
    pred, true = [], []
    for i, row in enumerate(counts):
        for j, c in enumerate(row):
            pred += [i] * c
            true += [j] * c
    return np.array(true), np.array(pred)


def test_permuted_perfect_clustering():
    y_true, y_pred = [0, 0, 1, 1, 2, 2], [1, 1, 0, 0, 2, 2]
    assert hungarian_acc(y_true, y_pred) == 1.0
    assert nmi(y_true, y_pred) == pytest.approx(1.0) and ari(y_true, y_pred) == pytest.approx(1.0)
    assert hungarian_map(y_true, y_pred) == {0: 1, 1: 0, 2: 2}


def test_count_matrix_rows_are_clusters_columns_classes():
    counts = [[3, 2], [2, 0]]
    y_true, y_pred = from_counts(counts)
    np.testing.assert_array_equal(count_matrix(y_true, y_pred), counts)


def test_hungarian_beats_greedy_argmax():
    # greedy takes the largest cell (3) and is left with 0: 3/7; the optimum crosses over: 2 + 2 = 4/7
    y_true, y_pred = from_counts([[3, 2], [2, 0]])
    assert hungarian_acc(y_true, y_pred) == pytest.approx(4 / 7)
    assert hungarian_map(y_true, y_pred) == {0: 1, 1: 0}
    assert many_to_one_acc(y_true, y_pred) == pytest.approx(5 / 7)


def test_more_clusters_than_classes():
    y_true, y_pred = from_counts([[4, 1], [0, 3], [2, 0]])
    assert hungarian_acc(y_true, y_pred) == pytest.approx(7 / 10)  # cluster 2 is left unmatched
    assert many_to_one_acc(y_true, y_pred) == pytest.approx(9 / 10)
    assert hungarian_map(y_true, y_pred) == {0: 0, 1: 1}
    np.testing.assert_array_equal(confusion_matrix(y_true, y_pred), [[4, 0], [1, 3]])
    np.testing.assert_array_equal(confusion_matrix(y_true, y_pred, mapping="many_to_one"), [[6, 0], [1, 3]])


def test_fewer_clusters_than_classes():
    y_true, y_pred = from_counts([[3, 2, 0], [0, 1, 4]])
    assert hungarian_acc(y_true, y_pred) == pytest.approx(7 / 10)
    assert hungarian_map(y_true, y_pred) == {0: 0, 1: 2}
    np.testing.assert_array_equal(confusion_matrix(y_true, y_pred), [[3, 0, 0], [2, 0, 1], [0, 0, 4]])


def test_arbitrary_label_values_are_remapped():
    y_true = np.array(["cat", "cat", "dog", "dog", "dog"])
    y_pred = np.array([40, 40, 7, 7, 40])
    assert hungarian_acc(y_true, y_pred) == pytest.approx(4 / 5)
    assert hungarian_map(y_true, y_pred) == {40: "cat", 7: "dog"}
    np.testing.assert_array_equal(count_matrix(y_true, y_pred), [[0, 2], [2, 1]])  # rows 7, 40


def test_sparse_negative_and_string_ids_give_the_same_counts():
    rng = np.random.default_rng(4)
    y_true, y_pred = rng.integers(0, 5, 200), rng.integers(0, 8, 200)
    ref = count_matrix(y_true, y_pred)
    for transform in (lambda v: v * 10**9, lambda v: v - 4, lambda v: v.astype(str)):
        np.testing.assert_array_equal(count_matrix(transform(y_true), transform(y_pred)), ref)


def test_invariant_to_permuting_cluster_ids_and_many_to_one_dominates():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n, c, k = rng.integers(20, 300), rng.integers(2, 8), rng.integers(2, 12)
        y_true = rng.integers(0, c, n)
        y_pred = np.where(rng.random(n) < 0.6, y_true % k, rng.integers(0, k, n))
        perm = rng.permutation(k)
        before = [f(y_true, y_pred) for f in (hungarian_acc, many_to_one_acc, nmi, ami, ari)]
        after = [f(y_true, perm[y_pred]) for f in (hungarian_acc, many_to_one_acc, nmi, ami, ari)]
        np.testing.assert_allclose(after, before, rtol=1e-12, atol=1e-12)
        assert many_to_one_acc(y_true, y_pred) >= hungarian_acc(y_true, y_pred)


def test_scores_equal_scikit_learn():
    rng = np.random.default_rng(1)
    y_true, y_pred = rng.integers(0, 5, 500), rng.integers(0, 7, 500)
    assert nmi(y_true, y_pred) == pytest.approx(skm.normalized_mutual_info_score(y_true, y_pred))
    assert ami(y_true, y_pred) == pytest.approx(skm.adjusted_mutual_info_score(y_true, y_pred))
    assert ari(y_true, y_pred) == pytest.approx(skm.adjusted_rand_score(y_true, y_pred))


def test_top_k_uses_the_hungarian_map():
    # argmax clusters [1, 1, 0, 0, 2] vs classes [0, 0, 1, 1, 2]: map 1->0, 0->1, 2->2 (ACC 1)
    probs = np.array([
        [0.2, 0.7, 0.1],
        [0.3, 0.6, 0.1],
        [0.5, 0.1, 0.4],
        [0.6, 0.3, 0.1],
        [0.0, 0.1, 0.9],
    ])
    y_true = np.array([0, 0, 1, 1, 2])
    assert top_k_acc(y_true, probs, k=1) == pytest.approx(1.0)
    y_wrong = np.array([0, 0, 1, 2, 2])  # item 3 (class 2) has cluster 2 only third
    assert top_k_acc(y_wrong, probs, k=1) == pytest.approx(hungarian_acc(y_wrong, probs.argmax(1)))
    assert top_k_acc(y_wrong, probs, k=2) == pytest.approx(4 / 5)
    assert top_k_acc(y_wrong, probs, k=3) == pytest.approx(1.0)
    with pytest.raises(NolabelError):
        top_k_acc(y_true, probs, k=4)


def test_top_k_unmatched_cluster_never_hits():
    # argmax clusters 0, 0, 1, 1, 2: the one-to-one map is 0->0, 1->1 and leaves cluster 2 without a class
    probs = np.array([[0.8, 0.1, 0.1], [0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.8, 0.1], [0.1, 0.3, 0.6]])
    y_true = np.array([0, 0, 1, 1, 0])
    assert top_k_acc(y_true, probs, k=1) == pytest.approx(4 / 5)
    assert top_k_acc(y_true, probs, k=2) == pytest.approx(4 / 5)  # item 4: clusters 2 (no class), 1 (class 1)
    assert top_k_acc(y_true, probs, k=3) == pytest.approx(1.0)


def test_cluster_sizes_and_evaluate():
    assert cluster_sizes([3, 3, 1]).tolist() == [1, 2]
    assert cluster_sizes([3, 3, 1], n_clusters=5).tolist() == [0, 1, 0, 2, 0]
    rng = np.random.default_rng(2)
    y_true = rng.integers(0, 3, 60)
    probs = rng.dirichlet(np.ones(6), size=60)
    y_pred = probs.argmax(1)
    m = evaluate(y_true, y_pred, probs)
    assert m["acc"] == pytest.approx(hungarian_acc(y_true, y_pred))
    assert m["many_to_one_acc"] == pytest.approx(many_to_one_acc(y_true, y_pred))
    assert m["nmi"] == pytest.approx(nmi(y_true, y_pred)) and m["ari"] == pytest.approx(ari(y_true, y_pred))
    assert m["top5"] == pytest.approx(top_k_acc(y_true, probs, 5))
    assert m["n_clusters"] == 6 and m["n_classes"] == 3 and m["n_samples"] == 60
    assert m["cluster_sizes"] == np.bincount(y_pred, minlength=6).tolist()
    assert all(isinstance(m[key], float) for key in ("acc", "many_to_one_acc", "nmi", "ami", "ari", "top5"))
    assert "top5" not in evaluate(y_true, probs[:, :4].argmax(1), probs[:, :4])
    assert "top5" not in evaluate(y_true, y_pred)


def test_inputs_are_validated():
    with pytest.raises(NolabelError, match="labels"):
        hungarian_acc([0, 1, 1], [0, 1])
    with pytest.raises(NolabelError):
        evaluate([], [])
    with pytest.raises(NolabelError):
        evaluate([0, 1], [0, 1], probs=np.ones((3, 2)))
    with pytest.raises(NolabelError):
        confusion_matrix([0, 1], [0, 1], mapping="greedy")
