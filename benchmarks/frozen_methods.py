"""Frozen-feature clustering methods against k-means, through the CLI, over seeds.

For every embedding file and method this runs
``nolabel cluster FEATURES --method M --k K --seeds S [-p ...] [--then selflabel]``
and collects ``summary.json``. Labels are used only by the scoring inside the CLI.
Prints a Markdown table (mean +- std over the seeds) and writes it with the raw
summaries to ``benchmarks/results/<name>.{md,json}``.

``--ceiling`` adds, per features file, what the features hold before any clustering:
the 20-NN purity (cosine neighbours, self excluded, as ``nolabel neighbors``) and a
supervised linear probe (logistic regression on L2-normalised rows, C=10, 3 stratified
folds, shuffle seed 0). Both use the labels: they are ceilings to read the methods
against, never a method or a way to choose one. They go to ``<name>.ceiling.json`` and
under the table; ``<name>.json`` stays the list of CLI summaries ``summary.py`` reads.

    python benchmarks/frozen_methods.py --name frozen_text \
        --features /work/runs/text/StackOverflow.npy:20 ... --seeds 0,1,2
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

#: method label -> (method, extra CLI args)
METHODS = {
    "kmeans": ("kmeans", []),
    "scan": ("scan", []),
    "scan+selflabel": ("scan", ["--then", "selflabel"]),
    # the per-cluster relative threshold: each cluster's most confident half, Adam lr 1e-3
    # (seed 0: StackOverflow MiniLM 60.7 -> 60.1, CIFAR-10 lite0 46.5 -> 43.3; see selflabel.py)
    "scan+selflabel-top": ("scan", ["--then", "selflabel", "-p", "selflabel.top_fraction=0.5", "-p", "selflabel.lr=1e-3"]),
    "temi": ("temi", []),
    "sela": ("sela", []),
    "lsdc": ("lsdc", []),
    "spectral": ("spectral", []),
}


def run_one(features: Path, k: int, label: str, seeds: str, params: list[str], work: Path) -> dict:
    method, extra = METHODS[label]
    out = work / f"{features.stem}.k{k}.{label}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "nolabel", "cluster", str(features), "--method", method, "--k", str(k),
           "--seeds", seeds, "--out", str(out), *extra]
    for p in params:
        cmd += ["-p", p]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    summary.update(label=label, command=" ".join(cmd[2:]), wall_s=wall)
    return summary


def ceiling(features: Path, n_neighbors: int = 20) -> dict:
    """k-NN purity and a 3-fold linear probe of ``features`` (labels used: a ceiling only)."""
    import numpy as np

    from ceilings import PROBE, linear_probe
    from nolabel.items import load_items
    from nolabel.neighbors import knn, neighbor_purity

    x = np.load(features).astype(np.float32)
    y = load_items(features).labels
    if y is None:
        raise SystemExit(f"{features}: no labels beside it, no ceiling to measure")
    t0 = time.perf_counter()
    purity = neighbor_purity(knn(x, n_neighbors).indices, y)
    t1 = time.perf_counter()
    probe = linear_probe(x, y)
    return {"features": str(features), "n": int(len(x)), "dim": int(x.shape[1]),
            f"purity@{n_neighbors}": purity, "purity_s": t1 - t0,
            "probe_folds": probe, "probe_mean": float(np.mean(probe)), "probe_std": float(np.std(probe)),
            "probe_s": time.perf_counter() - t1,
            "probe": PROBE}


def merge_seeds(s: dict, other_path: Path) -> dict:
    """``s`` with the per-seed rows of ``other_path`` (a summary.json of the same method, K and
    parameters on the same features) for the seeds ``s`` lacks; metrics re-aggregated; the wall
    time per seed stays that of the seeds run here."""
    from nolabel.clustering import aggregate

    other = json.loads(other_path.read_text())
    if (other["method"], other["n_clusters"], other.get("params") or {}) != (s["method"], s["n_clusters"], s["params"]):
        raise SystemExit(f"{other_path}: not the same method, K and parameters as {s['label']}")
    rows = dict(zip(s["seeds"], s["per_seed"]))
    added = [seed for seed in other["seeds"] if seed not in rows]
    rows.update({seed: row for seed, row in zip(other["seeds"], other["per_seed"]) if seed in added})
    seeds = sorted(rows)
    wall_per_seed = s["wall_s"] / len(s["seeds"])
    return {**s, "seeds": seeds, "per_seed": [rows[seed] for seed in seeds], "metrics": aggregate([rows[seed] for seed in seeds]),
            "wall_s": wall_per_seed * len(seeds), "merged": {"from": str(other_path), "seeds": added,
                                                            "features": other["features"]},
            "command": s["command"] + f" (+ seeds {','.join(map(str, added))} from {other_path})"}


def fmt(stats: dict | None) -> str:
    return f"{100 * stats['mean']:.1f} ± {100 * stats['std']:.1f}" if stats else "-"


def row_of(s: dict) -> str:
    m = s["metrics"]
    return (f"| {Path(s['features']).stem} | {s['n_clusters']} | {s['label']} | {fmt(m.get('acc'))} | "
            f"{fmt(m.get('many_to_one_acc'))} | {fmt(m.get('nmi'))} | {fmt(m.get('ari'))} | "
            f"{s['wall_s'] / len(s['seeds']):.0f} |")


def write(args, raw: list[dict], ceilings: list[dict]) -> None:
    """The table of every stored row, the ceilings and the commands, rewritten after each row."""
    seeds = sorted({tuple(s["seeds"]) for s in raw})
    head = [f"# {args.title}", "",
            f"Written by `benchmarks/frozen_methods.py`; seeds {', '.join(','.join(map(str, t)) for t in seeds) or args.seeds} "
            "(mean ± std over seeds), labels used only to score; each row is one `nolabel cluster` command "
            "(see the .json for it). Wall time: seconds per seed on this machine (2 CPU cores shared with other "
            "jobs, one thread), including process start and the k-NN.", "",
            "| features | K | method | ACC | many-to-one ACC | NMI | ARI | s/seed |",
            "|---|---|---|---|---|---|---|---|"]
    tail = [""]
    for c in ceilings:
        tail.append(f"Ceilings of `{Path(c['features']).stem}` ({c['n']} x {c['dim']}; labels used, not methods): "
                    f"20-NN purity {100 * c['purity@20']:.1f} %; supervised linear probe {100 * c['probe_mean']:.1f} "
                    f"± {100 * c['probe_std']:.1f} % ({c['probe']}).")
    if args.note:
        tail += ["", args.note]
    tail += ["", "Commands (one per row):", ""] + [f"- `{s['label']}`: `{s['command']}`" for s in raw]
    tail += ["", f"Written by: `python benchmarks/frozen_methods.py {' '.join(sys.argv[1:])}`"]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.md").write_text("\n".join(head + [row_of(s) for s in raw] + tail) + "\n")
    if ceilings:
        (RESULTS / f"{args.name}.ceiling.json").write_text(json.dumps(ceilings, indent=1))
    (RESULTS / f"{args.name}.json").write_text(json.dumps(raw, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True, help="results file stem")
    ap.add_argument("--features", nargs="+", required=True, help="FEATURES.npy:K pairs")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--param", action="append", default=[], help="METHOD:NAME=VALUE, passed as -p to that method")
    ap.add_argument("--work", type=Path, default=Path("/tmp/nolabel-bench"))
    ap.add_argument("--title", default="Frozen-feature methods")
    ap.add_argument("--ceiling", action="store_true",
                    help="also measure 20-NN purity and a 3-fold supervised linear probe per features file "
                         "(labels used: a ceiling, not a method) -> <name>.ceiling.json")
    ap.add_argument("--append", action="store_true",
                    help="keep the rows (and ceilings) already in <name>.json and skip the features x method pairs "
                         "they hold, so that a grid cut short resumes")
    ap.add_argument("--merge", action="append", default=[], metavar="LABEL=SUMMARY_JSON",
                    help="add the seeds of another run of the same method and parameters (e.g. a `nolabel run` "
                         "stage's summary.json) to LABEL's row: its per-seed rows for seeds not run here; "
                         "the row then records where they came from")
    ap.add_argument("--note", default="", help="a paragraph written under the table")
    args = ap.parse_args()
    merges = dict(spec.split("=", 1) for spec in args.merge)

    per_method: dict[str, list[str]] = {}
    for spec in args.param:
        method, _, value = spec.partition(":")
        per_method.setdefault(method, []).append(value)
    raw, ceilings = [], []
    if args.append and (RESULTS / f"{args.name}.json").exists():
        raw = json.loads((RESULTS / f"{args.name}.json").read_text())
        if (RESULTS / f"{args.name}.ceiling.json").exists():
            ceilings = json.loads((RESULTS / f"{args.name}.ceiling.json").read_text())
    for spec in args.features:
        path, _, k = spec.rpartition(":")
        features = Path(path)
        if args.ceiling and not any(Path(c["features"]).stem == features.stem for c in ceilings):
            c = ceiling(features)
            print(f"{features.stem}: 20-NN purity {100 * c['purity@20']:.1f} %, linear probe (labels, ceiling) "
                  f"{100 * c['probe_mean']:.1f} ± {100 * c['probe_std']:.1f} %", flush=True)
            ceilings.append(c)
            write(args, raw, ceilings)
        for label in args.methods.split(","):
            if any(Path(s["features"]).stem == features.stem and s["label"] == label for s in raw):
                continue
            method = METHODS[label][0]
            s = run_one(features, int(k), label, args.seeds, per_method.get(label, per_method.get(method, [])), args.work)
            if label in merges:
                s = merge_seeds(s, Path(merges[label]))
            print(row_of(s), flush=True)
            raw.append(s)
            write(args, raw, ceilings)
    write(args, raw, ceilings)
    print(f"-> {RESULTS / args.name}.md")


if __name__ == "__main__":
    main()
