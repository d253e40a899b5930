"""Ceilings of labelled features, for benchmark tables only (labels used: never a method).

``linear_probe``: held-out accuracy per fold of a multinomial logistic regression on the
L2-normalised rows (stratified folds, shuffle seed 0), i.e. how far the frozen features
separate the classes at all. A clustering target above it asks the heads to beat a
supervised classifier on the same features.
"""
from __future__ import annotations

import numpy as np

#: the setting every table states next to its probe numbers
PROBE = "LogisticRegression(C=10, max_iter=300), L2-normalised rows, StratifiedKFold(3, shuffle, seed 0)"


def linear_probe(x: np.ndarray, y: np.ndarray, c: float = 10.0, max_iter: int = 300, folds: int = 3) -> list[float]:
    """Held-out accuracy of each of ``folds`` stratified folds (defaults: the setting of :data:`PROBE`)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    z = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    split = StratifiedKFold(folds, shuffle=True, random_state=0)
    return cross_val_score(LogisticRegression(C=c, max_iter=max_iter), z, y, cv=split).tolist()
