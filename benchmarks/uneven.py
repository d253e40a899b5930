"""Learned methods against k-means on long-tailed subsets (uneven class sizes).

From labelled features (``nolabel embed`` output with its ``.items.npz``) take a fixed
long-tailed subset: class ``c`` (classes in a fixed shuffled order, subset seed 0) keeps
``n_max * r^(-c / (C - 1))`` items (the exponential profile of the long-tailed CIFAR
benchmarks; ``n_max`` the smallest class count, ``r`` the imbalance ratio). Ratio 1 is
the balanced set: every class cut to the smallest class count (all of CIFAR-10 test). Every method
runs with its DEFAULT parameters (K = C, 20-NN for SCAN/LSD-C and 50-NN for TEMI mined
on the subset) over seeds; labels only score. Writes
``benchmarks/results/uneven.<features>.{json,md}``, accumulating across calls (one per
method list), with the label-free health columns.

    python benchmarks/uneven.py --features /tmp/c10_r56.npy --ratios 1,10,100 --seeds 0,1,2
    python benchmarks/uneven.py --features /tmp/so_minilm.npy --ratios 1,10,100 --seeds 0,1,2

``--probe`` instead measures, per subset, a supervised linear probe (``ceilings.py``; labels
used: a ceiling for what the frozen features separate, not a method) into
``uneven.<features>.probe.json``, shown under the table.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ceilings import PROBE, linear_probe
from nolabel import methods
from nolabel.health import health_check, kmeans_reference
from nolabel.io import write_json
from nolabel.items import load_items
from nolabel.metrics import hungarian_acc
from nolabel.neighbors import knn

RESULTS = Path(__file__).parent / "results"
METHODS = ("kmeans", "scan", "sela", "temi", "lsdc", "lsdc+groups", "lsdc+avg10")
#: table label -> (method, parameters other than the defaults)
VARIANTS = {"lsdc+groups": ("lsdc", {"batches": "groups"}), "lsdc+avg10": ("lsdc", {"knn_smoothing": 10})}
#: the hand-written notes under this heading survive a rewrite of the table
NOTES = "## Notes"


def long_tail(y: np.ndarray, ratio: float, seed: int = 0) -> np.ndarray:
    """Indices of a long-tailed subset with largest/smallest class size ``ratio``."""
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.unique(y))
    n_max = min(int((y == c).sum()) for c in classes)
    keep = []
    for rank, c in enumerate(classes):
        n = max(1, int(round(n_max * ratio ** (-rank / (len(classes) - 1)))))
        keep.append(rng.choice(np.flatnonzero(y == c), n, replace=False))
    return np.sort(np.concatenate(keep))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", type=Path, required=True)
    ap.add_argument("--ratios", default="1,10,100")
    ap.add_argument("--methods", default=",".join(m for m in METHODS if m not in VARIANTS),
                    help=f"comma list; variants: {', '.join(VARIANTS)}")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--table-only", action="store_true", help="rewrite the markdown from the stored JSON and stop")
    ap.add_argument("--probe", action="store_true",
                    help="measure a supervised linear probe per subset (labels: a ceiling), then rewrite the table")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    store = RESULTS / f"uneven.{args.features.stem}.json"
    if args.table_only:
        write_table(json.loads(store.read_text()), seeds, args.features.stem)
        return
    x_all = np.load(args.features).astype(np.float32)
    y_all = load_items(args.features).labels
    if args.probe:
        probes = {}
        for ratio in [float(r) for r in args.ratios.split(",")]:
            idx = long_tail(y_all, ratio)
            folds = probes[f"{args.features.stem} r={ratio:g}"] = linear_probe(x_all[idx], y_all[idx])
            print(f"r={ratio:g}: linear probe {100 * np.mean(folds):.1f}", flush=True)
        write_json(_probe_store(args.features.stem), probes)
        write_table(json.loads(store.read_text()), seeds, args.features.stem)
        return
    results = json.loads(store.read_text()) if store.exists() else {}
    for ratio in [float(r) for r in args.ratios.split(",")]:
        idx = long_tail(y_all, ratio)
        x, y = x_all[idx], y_all[idx]
        k = len(np.unique(y))
        nb = knn(x, 50).indices
        reference = kmeans_reference(x, k)
        key = f"{args.features.stem} r={ratio:g}"
        entry = results.setdefault(key, {"n": len(x), "k": k, "largest_class": int(np.bincount(y).max()),
                                         "smallest_class": int(np.bincount(y).min()), "methods": {}})
        for name in args.methods.split(","):
            runs = []
            for seed in seeds:
                t0 = time.perf_counter()
                method, params = VARIANTS.get(name, (name, {}))
                est = methods.get(method)(n_clusters=k, seed=seed, **params).fit(x, nb if est_needs(method) else None)
                p = est.predict_proba(x)
                h = health_check(p.argmax(1), p.max(1), k, reference)
                runs.append({"seed": seed, "acc": hungarian_acc(y, p.argmax(1)), "seconds": time.perf_counter() - t0,
                             "health": h})
                print(key, name, seed, f"ACC {100 * runs[-1]['acc']:.1f}", h["warnings"], flush=True)
            entry["methods"][name] = runs
            results = save_runs(store, key, entry, name, runs)
    write_table(results, seeds, args.features.stem)


def save_runs(store: Path, key: str, entry: dict, name: str, runs: list) -> dict:
    """Merge one method's runs into the store as it is on disk now (several runs may share it)."""
    results = json.loads(store.read_text()) if store.exists() else {}
    stored = results.setdefault(key, {k: v for k, v in entry.items() if k != "methods"} | {"methods": {}})
    stored["methods"][name] = runs
    write_json(store, results)
    return results


def _probe_store(stem: str) -> Path:
    return RESULTS / f"uneven.{stem}.probe.json"


def est_needs(name: str) -> bool:
    return bool(methods.get(name).needs_neighbors) or name == "lsdc"


def write_table(results: dict, seeds: list[int], stem: str) -> None:
    lines = [f"Default parameters, K = number of classes, mean ± std over seeds {seeds}; ACC (Hungarian) on the whole "
             "subset; health (label-free) of the first seed.", "",
             "| set | N | class sizes | method | ACC | vs k-means | largest share | smallest share | non-empty | "
             "mean conf. | NMI to k-means | warnings |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, entry in sorted(results.items(), key=lambda kv: float(kv[0].split("r=")[1])):
        base = entry["methods"].get("kmeans")
        km = np.mean([r["acc"] for r in base]) if base else None
        for name, runs in sorted(entry["methods"].items(), key=lambda kv: METHODS.index(kv[0])):
            acc = np.array([r["acc"] for r in runs])
            h = runs[0]["health"]
            delta = f"{100 * (acc.mean() - km):+.1f}" if km is not None else "-"
            lines.append(f"| {key} | {entry['n']} | {entry['largest_class']}..{entry['smallest_class']} | {name} | "
                         f"{100 * acc.mean():.1f} ± {100 * acc.std():.1f} | {delta} | {100 * h['largest_share']:.1f}% | "
                         f"{100 * h['smallest_share']:.1f}% | {h['n_nonempty']}/{h['n_clusters']} | "
                         f"{h['mean_confidence']:.2f} | {h['agreement_kmeans']:.2f} | {len(h['warnings'])} |")
    lines += ["", f"Command: `python benchmarks/uneven.py --features FEATURES/{stem}.npy --ratios 1,10,100 --seeds "
              f"{','.join(map(str, seeds))}` (features from `nolabel embed`; ratio 1 = every class cut to the smallest "
              "class count). Health columns: label-free (`nolabel.health`), NMI to k-means on the same subset."]
    if _probe_store(stem).exists():  # ceilings, with labels
        probes = json.loads(_probe_store(stem).read_text())
        lines += ["", f"Supervised linear probe per subset (labels used: a ceiling, not a method; {PROBE}; "
                  f"`--probe`): " + "; ".join(f"{key}: {100 * np.mean(folds):.1f} ± {100 * np.std(folds):.1f}"
                                              for key, folds in probes.items()) + "."]
    table = "\n".join(lines)
    print(table)
    path = RESULTS / f"uneven.{stem}.md"
    notes = path.read_text().partition(NOTES)[2] if path.exists() else ""
    path.write_text(table + "\n" + (f"\n{NOTES}{notes}" if notes else ""))


if __name__ == "__main__":
    main()
