"""Fit a clustering method on saved embeddings over several seeds and score it.

Labels (when the data has them) are read only after fitting, to score: they never
choose a seed, a head or a hyper-parameter.
"""
from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from . import methods
from .assignments import Assignment
from .errors import NolabelError
from .io import read_json, write_json
from .memory import as_float32

SCORED = ("acc", "many_to_one_acc", "nmi", "ami", "ari", "top5")


def make_method(name: str, n_clusters: int, params: dict[str, Any], seed: int, then: str | None = None,
                then_params: dict[str, Any] | None = None):
    """Build the estimator ``name`` (wrapped by the second stage ``then``, built with
    ``then_params``, if given)."""
    klass = methods.get(name)
    check_params(klass, params)
    base = klass(n_clusters=n_clusters, seed=seed, **params)
    if then is None:
        return base
    stage = methods.get(then)
    if "base" not in inspect.signature(stage.__init__).parameters:
        raise NolabelError(f"method {then!r} cannot run on top of another method")
    return stage(n_clusters=n_clusters, seed=seed, base=base, **(then_params or {}))


def resolved_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Every parameter the estimator ``name`` runs with: its signature's defaults updated by
    ``params`` (less ``n_clusters``, ``seed``, ``base`` and the display-only ``progress``), so that a
    cached result is not reused after a default changed."""
    skip = {"self", "n_clusters", "seed", "base", "progress"}
    signature = inspect.signature(methods.get(name).__init__).parameters.items()
    defaults = {key: p.default for key, p in signature if key not in skip and p.default is not inspect.Parameter.empty}
    return defaults | {key: value for key, value in params.items() if key not in skip}


def check_params(klass: type, params: dict[str, Any]) -> None:
    accepted = set(inspect.signature(klass.__init__).parameters) - {"self", "n_clusters", "seed"}
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise NolabelError(f"{klass.name} has no parameter {', '.join(unknown)}; it takes: {', '.join(sorted(accepted))}")


def neighbors_needed(estimator) -> int | None:
    """How many neighbours the estimator (or its base) needs, or None."""
    return type(estimator).neighbors_needed(estimator.get_params()) or None


def fit_neighbors_to_size(method: str, params: dict[str, Any], n: int,
                          n_clusters: int | None = None) -> tuple[dict[str, Any], str | None]:
    """``method``'s parameters for a data set of ``n`` items in ``n_clusters`` clusters. A
    neighbour count the method takes by default (SCAN 20, TEMI 50, ...) becomes at most
    ``max(1, n // (2 K))``, half the mean cluster size (the bound spectral's graphs keep), and
    at most ``n - 1``; a note says so. Why: with 10 items a class (400 faces in 40 classes), 20
    neighbours hold at least 10 of other classes and the methods learn them as one (ORL, 400
    faces in 40 classes, 300 one-step epochs, seed 0: TEMI 32.8 ACC with 50 neighbours, 72.8
    with 5; k-means 64.3). A count the user set is kept, and
    raises a one-line error when it is not below ``n``. Returns the parameters and the note
    (None when nothing changed)."""
    klass = methods.get(method)
    need = klass.neighbors_needed(params)
    if not need:
        return params, None
    if "n_neighbors" in params or "n_neighbors" not in inspect.signature(klass.__init__).parameters:
        if need >= n:
            raise NolabelError(f"{method} uses {need} neighbours per item but the data set has only {n} items; "
                               f"pass -p {method}.n_neighbors=M with M <= {n - 1} (or use more data)")
        return params, None
    if n < 2:
        raise NolabelError(f"{method} needs neighbours, and the data set has {n} item")
    most = n - 1 if not n_clusters else min(n - 1, max(1, n // (2 * n_clusters)))
    if need <= most:
        return params, None
    if need >= n:
        note = f"{method}: {n} items, fewer than its default {need} neighbours per item: using {most}"
    else:
        note = (f"{method}: {n} items in {n_clusters} clusters, about {n // n_clusters} per cluster: using {most} "
                f"neighbours per item, not its default {need} (at most half a cluster)")
    return {**params, "n_neighbors": most}, note


def resolve_neighbors(x: np.ndarray, k: int, neighbors_path: Path | None) -> np.ndarray:
    """The first ``k`` columns of the given k-NN file, or the ``k``-NN of ``x`` mined here (not saved)."""
    from .neighbors import Neighbors, knn

    nb = Neighbors.load(neighbors_path) if neighbors_path is not None else knn(x, k)
    if nb.indices.shape[1] < k:
        raise NolabelError(f"the neighbour file has {nb.indices.shape[1]} neighbours per sample, the method needs {k}")
    return nb.indices


def fit_one(method: str, n_clusters: int, params: dict[str, Any], seed: int, x: np.ndarray,
            then: str | None = None, then_params: dict[str, Any] | None = None,
            neighbors_path: Path | None = None):
    """Build and fit the estimator for one seed (neighbours from ``neighbors_path`` or mined)."""
    est = make_method(method, n_clusters, params, seed, then, then_params)
    k = neighbors_needed(est)
    return est.fit(x, resolve_neighbors(x, k, neighbors_path) if k else None)


def score(est, x: np.ndarray, ids: Any, labels: np.ndarray | None) -> tuple[Assignment, dict[str, Any]]:
    """The fitted estimator's assignment of ``x`` and its metrics against ``labels`` (``{}`` without)."""
    assignment = Assignment.from_estimator(est, x, ids=ids)
    return assignment, (assignment.score(labels) if labels is not None else {})


def save_result(seed_dir: Path, est, assignment: Assignment, metrics: dict[str, Any]) -> None:
    """``seed_dir/model/``, ``assignment.npz`` (+ .csv) and ``metrics.json`` (written last: the seed is done)."""
    est.save(seed_dir / "model")
    assignment.save(seed_dir / "assignment.npz")
    write_json(seed_dir / "metrics.json", metrics)


def summarize(method: str, features_path: Path | str, n_clusters: int, params: dict[str, Any], seeds: list[int],
              per_seed: list[dict[str, Any]], out_dir: Path | None = None) -> dict[str, Any]:
    """Mean and std over seeds of every scored metric, written to ``out_dir/summary.json`` when given."""
    summary = {"method": method, "features": str(features_path), "n_clusters": n_clusters, "params": params,
               "seeds": seeds, "per_seed": per_seed, "metrics": aggregate(per_seed)}
    if out_dir is not None:
        write_json(Path(out_dir) / "summary.json", summary)
    return summary


def fit_seeds(
    features_path: Path,
    method: str,
    n_clusters: int,
    params: dict[str, Any],
    seeds: list[int],
    then: str | None = None,
    neighbors_path: Path | None = None,
    then_params: dict[str, Any] | None = None,
    out_dir: Path | None = None,
    reuse_done: bool = False,
    x: np.ndarray | None = None,
) -> dict[str, Any]:
    """Fit ``method`` once per seed (:func:`fit_one`), score it (:func:`score`), save model,
    assignment and metrics per seed under ``out_dir/seed<S>/`` (:func:`save_result`) and a
    ``summary.json`` with mean and std over seeds (:func:`summarize`). Neighbours come from
    ``neighbors_path`` when given, else they are mined in memory.

    With ``reuse_done`` a seed whose ``metrics.json`` (written last) exists is not refit:
    the pipeline uses it to resume, its folders being keyed by every setting.
    ``x`` passes already-loaded embeddings (else they are read from ``features_path``).
    """
    from .features import load_features
    from .health import health_check, kmeans_reference
    from .items import load_items

    features_path = Path(features_path)
    if x is None:
        x = as_float32(load_features(features_path).array)  # a large memory map stays one
    items = load_items(features_path)
    params, note = fit_neighbors_to_size(method, params, len(x), n_clusters)
    if note:
        warnings.warn(note, UserWarning, stacklevel=2)
    reference = None  # k-means labels for the health check, computed once
    per_seed = []
    for seed in seeds:
        seed_dir = Path(out_dir) / f"seed{seed}" if out_dir is not None else None
        if reuse_done and seed_dir is not None and (seed_dir / "metrics.json").exists():
            per_seed.append(read_json(seed_dir / "metrics.json"))
            continue
        est = fit_one(method, n_clusters, params, seed, x, then, then_params, neighbors_path)
        assignment, metrics = score(est, x, items.ids, items.labels)
        reference = kmeans_reference(x, n_clusters) if reference is None else reference
        metrics["health"] = health = health_check(assignment.clusters, assignment.confidences, n_clusters, reference)
        for problem in health["warnings"]:
            warnings.warn(f"{method}{'+' + then if then else ''} seed {seed}: {problem}", stacklevel=2)
        if seed_dir is not None:
            save_result(seed_dir, est, assignment, metrics)
        per_seed.append(metrics)
    return summarize(method + (f"+{then}" if then else ""), features_path, n_clusters, params, seeds, per_seed, out_dir)


def aggregate(per_seed: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and (population) std over seeds of the scored metrics present in every run."""
    if not per_seed or not per_seed[0]:
        return {}
    names = [m for m in SCORED if all(isinstance(r.get(m), float) for r in per_seed)]
    return {
        m: {"mean": float(np.mean([r[m] for r in per_seed])), "std": float(np.std([r[m] for r in per_seed]))}
        for m in names
    }
