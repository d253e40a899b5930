"""A whole-network run: one method trained end to end, written as an ordinary run folder.

``train_network(data, "scan", out, backbone="pretext.safetensors", k=10)`` (what
``nolabel train`` calls) checks the options, fits ``METHOD.for_network(...)`` with
:meth:`~nolabel.methods.network.NetworkMethod.fit_dataset` (SCAN mines its neighbours
on the pretext features; ``selflabel`` starts from the run folder ``start`` of an
earlier whole-network run), then writes::

    OUT/checkpoint.pt, history.json   the training loop's state (a killed run resumes)
    OUT/<method>/seed<S>/model/       the fitted estimator; backbone.safetensors = the trained backbone
    OUT/<method>/seed<S>/assignment.npz, metrics.json; OUT/<method>/summary.json
    OUT/features/features.npy         the trained backbone's features of the data (+ sidecar, items)
    OUT/run.json                      backbone local:OUT/<method>/seed<S>/model/backbone.safetensors, no L2 normalisation

so ``nolabel report``, ``predict`` and ``export`` read it like a ``nolabel run`` folder.
Labels, when the data has them, only score the result.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

from .errors import NolabelError, check_choice
from .io import read_json, write_json

#: methods with a whole-network regime
TRAINERS = ("scan", "selflabel", "sela", "lsdc")


def check_train_options(method: str, backbone: Optional[Path], start: Optional[Path], k: Optional[int],
                        out: Path) -> None:
    """One-line errors for options that do not fit together."""
    check_choice("end-to-end method", method, TRAINERS)
    if (method == "selflabel") != (start is not None):
        raise NolabelError("selflabel needs --from RUN_DIR (a whole-network run); the other methods need --backbone instead")
    if method != "selflabel" and (backbone is None or k is None):
        raise NolabelError(f"{method} needs --backbone PRETEXT.safetensors and --k")
    if start is not None and not Path(start).is_dir():
        raise NolabelError(f"--from {start}: no such folder; give the run folder of a whole-network run "
                           "(e.g. of `nolabel train --method scan`)")
    if backbone is not None and not Path(backbone).is_file():
        raise NolabelError(f"--backbone {backbone}: no such checkpoint file; give the .safetensors written by `nolabel pretext`")
    if out.exists() and not out.is_dir():
        raise NolabelError(f"--out {out} is a file; give a folder for the run")


def train_network(data: str, method: str, out: str | Path, backbone: Optional[str | Path] = None,
                  start: Optional[str | Path] = None, k: Optional[int] = None,
                  params: Optional[dict[str, Any]] = None, seed: int = 0, split: str = "train",
                  device: Optional[str] = None, resume: bool = True, progress: bool = False):
    """Train ``method`` end to end on ``data`` and write the run folder ``out`` (module doc).

    ``params`` are the estimator's keyword arguments over its ``network_defaults``.
    Returns the run (:class:`~nolabel.pipeline.Pipeline`) on the main process, None on
    the others under torchrun.
    """
    from . import methods
    from .data import load_dataset
    from .pipeline import load_run
    from .train import distributed as D

    out = Path(out)
    backbone = Path(backbone) if backbone is not None else None
    start = Path(start) if start is not None else None
    check_train_options(method, backbone, start, k, out)
    params = dict(params or {})
    dataset = load_dataset(data, split=split)
    common = dict(seed=seed, device=device, progress=progress)
    t0 = time.perf_counter()
    if method == "selflabel":
        base = load_run(start).model()
        if getattr(base, "backbone_", None) is None:
            raise NolabelError(f"--from {start} holds a method fitted on frozen features; give a whole-network run")
        k = base.n_clusters
        est = methods.get(method).for_network(n_clusters=k, base=base, **common, **params)
        est.fit_dataset(dataset, out_dir=out, resume=resume)
    else:
        est = methods.get(method).for_network(n_clusters=k, **common, **params)
        est.fit_dataset(dataset, backbone, out_dir=out, resume=resume)
    seconds = time.perf_counter() - t0
    if not D.is_main():
        return None
    write_network_run(out, est, dataset, data, split, params, device, seconds, progress)
    return load_run(out)


def write_network_run(out: Path, est, dataset, data: str, split: str, params: dict[str, Any],
                      device: Optional[str], seconds: float, progress: bool = False) -> None:
    """The run folder of a network-fitted estimator (module doc); ``run.json`` last."""
    import numpy as np

    from . import backbones
    from .clustering import score, summarize
    from .features import extract_features
    from .health import health_check, kmeans_reference
    from .items import save_items
    from .methods.network import BACKBONE_FILE
    from .pipeline import RUN_FORMAT, RUN_VERSION, RunConfig

    name, seed = est.name, int(est.seed)
    seed_dir = out / name / f"seed{seed}"
    est.save(seed_dir / "model")
    spec = f"local:{(seed_dir / 'model' / BACKBONE_FILE).resolve()}"
    t0 = time.perf_counter()
    features = out / "features" / "features.npy"
    shutil.rmtree(features.parent, ignore_errors=True)  # features of an earlier training would resume
    extract_features(dataset, backbones.get(spec, device=device), features, normalize=False, progress=progress)
    save_items(features, dataset)
    embed_seconds = time.perf_counter() - t0
    from .memory import as_float32

    x = as_float32(np.load(features, mmap_mode="r"))  # float32 within the memory budget; a larger memory map stays one
    assignment, metrics = score(est, x, np.asarray(dataset.ids, dtype=str), dataset.labels)
    metrics["health"] = health_check(assignment.clusters, assignment.confidences, est.n_clusters,
                                     kmeans_reference(x, est.n_clusters))
    assignment.save(seed_dir / "assignment.npz")
    write_json(seed_dir / "metrics.json", metrics)
    summary = summarize(name, features, est.n_clusters, params, [seed], [metrics], out / name)
    config = RunConfig(data=data, backbone=spec, methods=[name], k=est.n_clusters, seeds=[seed], split=split,
                       normalize=False, device=device)
    write_json(out / "run.json", {
        "format": RUN_FORMAT, "version": RUN_VERSION, "config": asdict(config),
        "dataset": read_json(features.with_suffix(".json")).get("dataset", {}),
        "features": "features/features.npy", "neighbors": None, "k": est.n_clusters, "k_estimate": None,
        "results": [{"name": name, "dir": name, "primary_seed": seed, "metrics": summary["metrics"],
                     "k": est.n_clusters, "seeds": [seed], "params": params, "then_params": {}}],
        "timings": {"features": embed_seconds, name: seconds},
        "training": "history.json",
    })
