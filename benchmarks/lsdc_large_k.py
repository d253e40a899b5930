"""LSD-C on frozen features from small to large K, against k-means, with the health check.

Sets (features written by ``nolabel embed``, labels in the ``.items.npz`` beside them):

- ``so20``: StackOverflow, all-MiniLM-L6-v2 (16,407 x 384), K = 20 classes;
- ``so4`` / ``so8``: its first 4 / 8 classes (text-like small K);
- ``c10``: CIFAR-10 test, ResNet-56 (10,000 x 64), K = 10;
- ``c10k100``: the same with K = 100 (overclustering: scored by many-to-one ACC and NMI).

Methods: ``kmeans`` (nolabel's default), ``lsdc`` (default parameters), ``lsdc+groups``
(the defaults with ``batches="groups"``) and ``lsdc-before``
(the defaults this project had before: linear head, neighbour-group batches, in-batch k
``min(20, max(2, B // (2 K)))``, no size term). 20-NN by cosine mined once per set.
Labels only score. Results accumulate in benchmarks/results/lsdc_large_k.{json,md}.

    PYTHONPATH=src python benchmarks/lsdc_large_k.py --feats /work/runs/i11/feats --sets so20,c10k100 --seeds 0,1,2
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from nolabel import methods
from nolabel.health import health_check
from nolabel.io import atomic_path
from nolabel.metrics import hungarian_acc, many_to_one_acc, nmi
from nolabel.neighbors import knn

RESULTS = Path(__file__).parent / "results"
SETS = {"so20": ("so_minilm", None, 20), "so4": ("so_minilm", 4, 4), "so8": ("so_minilm", 8, 8),
        "c10": ("c10_r56", None, 10), "c10k100": ("c10_r56", None, 100)}
BEFORE = {"hidden": None, "n_layers": 1, "entropy_weight": 0.0, "batches": "groups"}
#: table label -> parameters other than the defaults (``lsdc-before`` adds its in-batch k)
VARIANTS = {"lsdc": {}, "lsdc-before": BEFORE, "lsdc+groups": {"batches": "groups"}, "lsdc+avg10": {"knn_smoothing": 10}}


def load(feats: Path, name: str) -> tuple[np.ndarray, np.ndarray, int]:
    stem, classes, k = SETS[name]
    x = np.load(feats / f"{stem}.npy").astype(np.float32)
    y = np.load(feats / f"{stem}.items.npz")["labels"]
    if classes is not None:
        keep = np.isin(y, np.unique(y)[:classes])
        x, y = x[keep], y[keep]
    return x, y, k


def run(name: str, x: np.ndarray, y: np.ndarray, k: int, nb: np.ndarray, seed: int) -> dict:
    t0 = time.perf_counter()
    if name == "kmeans":
        est = methods.get("kmeans")(n_clusters=k, seed=seed).fit(x)
    else:
        extra = dict(VARIANTS[name])
        if name == "lsdc-before":
            extra["adjacency_k"] = min(20, max(2, 256 // (2 * k)))
        est = methods.get("lsdc")(n_clusters=k, seed=seed, **extra).fit(x, nb)
    p = est.predict_proba(x)
    labels = p.argmax(1)
    h = health_check(labels, p.max(1), k)
    return {"seed": seed, "acc": hungarian_acc(y, labels), "m2o": many_to_one_acc(y, labels), "nmi": nmi(y, labels),
            "seconds": round(time.perf_counter() - t0, 1), "health": h}


def table(results: dict) -> str:
    lines = ["# LSD-C on frozen features, small to large K", "",
             "Written by `benchmarks/lsdc_large_k.py`; mean ± std over the seeds listed; labels only score. "
             "Health (label-free, `nolabel.health.health_check`): non-empty clusters and largest cluster "
             "over the uniform share 1/K, worst seed. K = 100 on 10 classes is overclustering: read many-to-one ACC.", "",
             "| set | N | K | method | seeds | ACC | many-to-one ACC | NMI | non-empty (min) | largest / uniform (max) | s/seed |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, entry in results.items():
        for name, runs in entry["methods"].items():
            cell = lambda f: f"{100 * np.mean([r[f] for r in runs]):.1f} ± {100 * np.std([r[f] for r in runs]):.1f}"
            k = entry["k"]
            lines.append(f"| {key} | {entry['n']} | {k} | {name} | {','.join(str(r['seed']) for r in runs)} | "
                         f"{cell('acc')} | {cell('m2o')} | {cell('nmi')} | "
                         f"{min(r['health']['n_nonempty'] for r in runs)}/{k} | "
                         f"{max(r['health']['largest_share'] * k for r in runs):.2f} | "
                         f"{np.mean([r['seconds'] for r in runs]):.0f} |")
    lines += ["", "`lsdc+avg10` (`knn_smoothing=10`: the in-batch kNN read on neighbour-averaged rows; opt-in) ran on "
              "2026-12-02 10:50-11:40 UTC, when it was briefly the default; the other rows without it."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--feats", type=Path, default=Path("/work/runs/i11/feats"))
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--methods", default="kmeans,lsdc,lsdc-before")
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    store = RESULTS / "lsdc_large_k.json"
    results = json.loads(store.read_text()) if store.exists() else {}
    for key in args.sets.split(","):
        x, y, k = load(args.feats, key)
        nb = knn(x, 20).indices
        entry = results.setdefault(key, {"n": len(x), "k": k, "methods": {}})
        for name in args.methods.split(","):
            runs = {r["seed"]: r for r in entry["methods"].get(name, [])}
            for seed in (int(s) for s in args.seeds.split(",")):
                runs[seed] = run(name, x, y, k, nb, seed)
                r = runs[seed]
                print(key, name, seed, f"ACC {100 * r['acc']:.1f} m2o {100 * r['m2o']:.1f} NMI {100 * r['nmi']:.1f}",
                      f"non-empty {r['health']['n_nonempty']}/{k} largest {r['health']['largest_share'] * k:.2f}x",
                      f"{r['seconds']}s", flush=True)
                entry["methods"][name] = [runs[s] for s in sorted(runs)]
                RESULTS.mkdir(exist_ok=True)
                with atomic_path(store) as tmp:
                    tmp.write_text(json.dumps(results, indent=1))
    with atomic_path(RESULTS / "lsdc_large_k.md") as tmp:
        tmp.write_text(table(results))
    print(table(results))


if __name__ == "__main__":
    main()
