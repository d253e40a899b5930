"""Every clustering method against k-means on frozen short-text features, with health columns.

For each ``FEATURES.npy:K`` (``nolabel embed`` output with its ``.items.npz`` labels)
and each method, fit with the method's DEFAULT parameters over seeds, in this process
(one thread), with the k-NN mined once per feature file (cosine, as ``nolabel
neighbors``; each method reads the first ``n_neighbors`` columns it asks for, so the
neighbours are those the CLI would give it). Labels only score (Hungarian ACC).
The label-free health check (:mod:`nolabel.health`) of every seed is stored; the
table shows seed 0's (largest / smallest cluster share, non-empty clusters, mean
confidence, NMI to a k-means reference on the same features, warnings).

Runs go seed by seed (seed 0 of every set and method first) and accumulate across calls
in ``benchmarks/results/<name>.json`` (a (set, method, seed) already there is skipped, so
an interrupted grid resumes); the table is rewritten to ``<name>.md``.

    python benchmarks/frozen_text.py --features /work/runs/feats/so_minilm.npy:20 \
        /work/runs/feats/SearchSnippets.npy:8 /work/runs/feats/Biomedical.npy:20 \
        /work/runs/feats/agnews.npy:4 --seeds 0,1,2
"""
from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from ceilings import linear_probe
from nolabel import methods
from nolabel.clustering import make_method, neighbors_needed
from nolabel.health import health_check, kmeans_reference
from nolabel.items import load_items
from nolabel.metrics import hungarian_acc
from nolabel.neighbors import knn

RESULTS = Path(__file__).parent / "results"
#: feature-file stem -> data set name in the table
DISPLAY = {"so_minilm": "StackOverflow", "agnews": "AG News"}
#: table label -> (method, params, second stage or None)
METHODS = {
    "kmeans": ("kmeans", {}, None),
    "spectral": ("spectral", {}, None),
    "scan": ("scan", {}, None),
    "scan+selflabel": ("scan", {}, "selflabel"),
    "temi": ("temi", {}, None),
    "sela": ("sela", {}, None),
    "lsdc": ("lsdc", {}, None),
    "lsdc+groups": ("lsdc", {"batches": "groups"}, None),  # neighbour-group batches (not the paper's)
    "lsdc+avg10": ("lsdc", {"knn_smoothing": 10}, None),  # in-batch kNN on neighbour-averaged rows (opt-in)
}


def run_method(label: str, x: np.ndarray, y: np.ndarray, k: int, nb: np.ndarray, seed: int,
               reference: np.ndarray, fitted: dict) -> dict:
    """Fit ``label`` with one seed and score it. A second stage (``scan+selflabel``) starts
    from the base fitted for the base's own row with the same seed when ``fitted`` holds
    it (as ``nolabel cluster --then`` does: the same base, fitted once); its seconds
    then count the base's fit too."""
    name, params, then = METHODS[label]
    t0 = time.perf_counter()
    base = fitted.get((name, seed)) if then else None
    extra = 0.0
    if base is not None:
        est = methods.get(then)(n_clusters=k, seed=seed, base=base[0])
        extra = base[1]
    else:
        est = make_method(name, k, dict(params), seed, then)
    need = neighbors_needed(est)
    if need and (nb is None or need > nb.shape[1]):
        raise SystemExit(f"{label} needs {need} neighbours, only {nb.shape[1]} mined: raise --neighbors")
    est.fit(x, nb if need else None)
    p = est.predict_proba(x)
    lab = p.argmax(1)
    seconds = time.perf_counter() - t0
    if not then:
        fitted.clear()  # keep one fitted estimator at a time
        fitted[(name, seed)] = (est, seconds)
    return {"seed": seed, "acc": hungarian_acc(y, lab), "seconds": seconds + extra,
            "health": health_check(lab, p.max(1), k, reference)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", nargs="+", default=[], help="FEATURES.npy:K pairs")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--neighbors", type=int, default=200, help="neighbours mined per item (>= any method's need)")
    ap.add_argument("--name", default="frozen_text")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--probe", action="store_true",
                    help="only store a supervised ceiling per set in <name>.probe.json: 3-fold logistic regression "
                         "on the labels (not a method), then rewrite the table")
    ap.add_argument("--table-only", action="store_true", help="rewrite the markdown from the stored JSON and stop")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    store = RESULTS / f"{args.name}.json"
    results = json.loads(store.read_text()) if store.exists() else {}
    if not isinstance(results, dict):  # the earlier CLI-driven table (a list of summaries)
        results = {}
    for entry in results.values():  # (an earlier layout kept {"runs": [...]} per method)
        entry["methods"] = {label: m["runs"] if isinstance(m, dict) else m for label, m in entry["methods"].items()}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    data, fitted = {}, {}
    if args.probe:  # a file of its own, so that it can run beside a grid writing the main one
        probe_store = RESULTS / f"{args.name}.probe.json"
        probes = json.loads(probe_store.read_text()) if probe_store.exists() else {}
        for spec in args.features:
            features = Path(spec.rpartition(":")[0])
            if features.stem not in probes and features.with_suffix(".items.npz").exists():
                probes[features.stem] = linear_probe(np.load(features).astype(np.float32), load_items(features).labels)
                print(features.stem, "linear probe", probes[features.stem], flush=True)
                probe_store.write_text(json.dumps(probes, indent=1))
        args.table_only = True
    for upto in [] if args.table_only else range(len(seeds)):  # seed by seed: every set and method gets a first seed
        for spec in args.features:
            path, _, k = spec.rpartition(":")
            features, k = Path(path), int(k)
            if not features.with_suffix(".items.npz").exists():
                print(f"{features}: no labels yet, skipped", flush=True)
                continue
            if features.stem not in data:
                x = np.load(features).astype(np.float32)
                needs = any(neighbors_needed(make_method(METHODS[m][0], k, dict(METHODS[m][1]), 0, METHODS[m][2]))
                            for m in args.methods.split(","))
                data[features.stem] = (x, load_items(features).labels,
                                       knn(x, args.neighbors).indices if needs else None, kmeans_reference(x, k))
            x, y, nb, reference = data[features.stem]
            entry = results.setdefault(features.stem, {"n": len(x), "k": k, "methods": {}})
            for seed in seeds[: upto + 1]:  # (a set whose features appeared late catches up)
                for label in args.methods.split(","):
                    runs = entry["methods"].setdefault(label, [])
                    if any(r["seed"] == seed for r in runs):
                        continue
                    run = run_method(label, x, y, k, nb, seed, reference, fitted)
                    run.update(commit=commit, params=METHODS[label][1], then=METHODS[label][2])
                    runs.append(run)
                    print(features.stem, label, seed, f"ACC {100 * run['acc']:.1f}", f"{run['seconds']:.0f}s",
                          run["health"]["warnings"], flush=True)
                    RESULTS.mkdir(exist_ok=True)
                    store.write_text(json.dumps(results, indent=1))
    write_table(results, args.name)


NOTES = """Notes. `spectral` is the multi-scale default (k-NN graphs of 10, 20, 40, 80 and 160 neighbours, each at
most N/2K, eigenvectors joined; `nolabel/methods/spectral.py`), no longer the 50-NN graph picked with labels.
`scan+selflabel` starts from the SCAN fitted for the `scan` row with the same seed (as `--then` does), so its
s/seed counts both. The supervised linear probe (`--probe`: logistic regression on the labels, 3 folds) is a
ceiling for what the frozen features separate, not a method. A row with fewer than 3 seeds did not fit in the
session's time; rerunning the command resumes the grid where it stopped. `temi` seed 1 ran 2026-12-01
22:30-23:15 UTC, seed 2 on 2026-12-02 00:15-00:54 UTC (same defaults). Missing: seeds 1 and 2 of `lsdc` here (its
current default has them in `frozen_text_lsdc`). `scan`, `scan+selflabel` and `sela`
were rerun on 2026-12-01 afternoon with their new default start from the k-means partition (`init="kmeans"`);
`temi` (seed 0) ran on 2026-12-01 evening with its new default `init="both"` (half the heads from that partition).
The `lsdc` rows of `frozen_text.json` are from the morning's code (one uniform head, random start); LSD-C with its
new defaults (3 tempered heads from the k-means partition) is in `frozen_text_lsdc.{json,md}` (`--name
frozen_text_lsdc`; StackOverflow at K 20 with these defaults: `lsdc_large_k.md`, 3 seeds). `lsdc+avg10`
(`knn_smoothing=10`, opt-in: the in-batch kNN read on neighbour-averaged rows) ran 2026-12-02 10:38-11:40 UTC."""


def write_table(results: dict, name: str) -> None:
    order = list(METHODS)
    probe_store = RESULTS / f"{name}.probe.json"
    probes = json.loads(probe_store.read_text()) if probe_store.exists() else {}
    lines = ["| set | N | K | method | seeds | ACC | vs k-means | s/seed | largest share | smallest share | non-empty | "
             "mean conf. | NMI to k-means | seeds warned |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    best = []
    for stem, entry in results.items():
        base = entry["methods"].get("kmeans")
        km = np.mean([r["acc"] for r in base]) if base else None
        top = None
        for label, runs in sorted(entry["methods"].items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99):
            runs = sorted(runs, key=lambda r: r["seed"])
            if not runs:
                continue
            acc = np.array([r["acc"] for r in runs])
            h = {f: np.mean([r["health"][f] for r in runs]) for f in
                 ("largest_share", "smallest_share", "n_nonempty", "mean_confidence", "agreement_kmeans")}
            warned = sum(bool(r["health"]["warnings"]) for r in runs)
            delta = f"{100 * (acc.mean() - km):+.1f}" if km is not None else "-"
            if label != "kmeans" and (top is None or acc.mean() > top[1]):
                top = (label, acc.mean())
            lines.append(f"| {DISPLAY.get(stem, stem)} | {entry['n']} | {entry['k']} | {label} | {len(runs)} | "
                         f"{100 * acc.mean():.1f} ± {100 * acc.std():.1f} | {delta} | "
                         f"{np.mean([r['seconds'] for r in runs]):.0f} | {100 * h['largest_share']:.1f}% | "
                         f"{100 * h['smallest_share']:.1f}% | {h['n_nonempty']:.1f}/{entry['k']} | "
                         f"{h['mean_confidence']:.2f} | {h['agreement_kmeans']:.2f} | {warned}/{len(runs)} |")
        if top and km is not None:
            probe = f" (supervised linear probe {100 * np.mean(probes[stem]):.1f})" if stem in probes else ""
            best.append(f"{DISPLAY.get(stem, stem)}: {top[0]} {100 * top[1]:.1f}, {100 * (top[1] - km):+.1f} over k-means{probe}")
    seeds = sorted({r["seed"] for e in results.values() for runs in e["methods"].values() for r in runs})
    head = ["# Frozen all-MiniLM-L6-v2 features of the short-text sets: every method against k-means", "",
            f"Written by `benchmarks/frozen_text.py`; default parameters of every method, K = number of classes, "
            f"seeds {','.join(map(str, seeds))} (mean ± std), labels used only to score (Hungarian ACC on all items). "
            "Health columns (label-free, `nolabel.health`), mean over seeds: cluster shares, non-empty clusters, mean "
            "confidence, NMI to a k-means reference on the same features; seeds warned: seeds with at least one warning. s/seed: seconds per "
            "seed in one process with one thread on this shared 2-core machine. The commit each row ran at is in the "
            ".json.", "",
            "Command: `python benchmarks/frozen_text.py --features /work/runs/feats/so_minilm.npy:20 "
            "/work/runs/feats/SearchSnippets.npy:8 /work/runs/feats/Biomedical.npy:20 /work/runs/feats/agnews.npy:4 "
            "--seeds 0,1,2` (features: `nolabel embed` with all-MiniLM-L6-v2 of `../shared/datasets/text`).", ""]
    tail = ["", "Best learned method against k-means: " + "; ".join(best) + "."] if best else []
    tail += ["", NOTES]
    table = "\n".join(head + lines + tail)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
