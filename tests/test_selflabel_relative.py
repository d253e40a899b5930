"""Self-labelling with a confidence threshold relative to each cluster (``top_fraction``)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nolabel import methods
from nolabel.errors import NolabelError
from nolabel.metrics import hungarian_acc
from nolabel.methods.selflabel import relative_cutoffs
from nolabel.neighbors import knn


def test_relative_cutoffs_by_hand():
    conf = torch.tensor([0.9, 0.5, 0.7, 0.3, 0.8, 0.6, 0.4])
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    # cluster 0: [0.9, 0.7, 0.5], ceil(0.5 * 3) = 2nd -> 0.7; cluster 1: [0.8, 0.6, 0.4, 0.3], 2nd -> 0.6; 2: empty
    cut = relative_cutoffs(conf, labels, 3, 0.5)
    assert cut[:2].tolist() == pytest.approx([0.7, 0.6])
    assert torch.isinf(cut[2])
    assert (conf >= cut[labels]).tolist() == [True, False, True, False, True, True, False]
    assert relative_cutoffs(conf, labels, 3, 1.0)[:2].tolist() == pytest.approx([0.5, 0.3])  # everyone


def test_top_fraction_is_checked():
    with pytest.raises(NolabelError, match="top_fraction"):
        methods.get("selflabel")(n_clusters=3, top_fraction=1.5)


@pytest.fixture(scope="module")
def overlapping():
    """1,200 points in 4 overlapping Gaussian blobs in 32-d, with their 10-NN."""
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(4, 32)) * 0.8
    y = np.repeat(np.arange(4), 300)
    x = (centers[y] + rng.normal(size=(len(y), 32))).astype(np.float32)
    return x, y, knn(x, 10).indices


def test_relative_threshold_self_labels_where_the_absolute_one_cannot(overlapping):
    """A briefly trained SCAN head is never 0.99-confident: the absolute threshold changes
    nothing (and warns), the per-cluster top half trains and moves the clustering up."""
    x, y, nb = overlapping
    base = methods.get("scan")(n_clusters=4, seed=0, epochs=2, batch_size=128, n_heads=1, init="random").fit(x, nb)
    before = hungarian_acc(y, base.predict(x))
    with pytest.warns(UserWarning, match="no item passes"):
        old = methods.get("selflabel")(n_clusters=4, seed=0, base=base, epochs=5, batch_size=200).fit(x, nb)
    assert old.changed_ == 0.0 and hungarian_acc(y, old.labels_) == before
    new = methods.get("selflabel")(n_clusters=4, seed=0, base=base, top_fraction=0.5, lr=1e-3, epochs=30,
                                   batch_size=200).fit(x, nb)
    assert new.confident_start_ >= 0.5 and new.changed_ > 0.0
    print(before, hungarian_acc(y, new.labels_))
    assert hungarian_acc(y, new.labels_) >= before + 0.02
