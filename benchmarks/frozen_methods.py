"""Frozen-feature clustering methods against k-means, through the CLI, over seeds.

For every embedding file and method this runs
``nolabel cluster FEATURES --method M --k K --seeds S [-p ...] [--then selflabel]``
and collects ``summary.json``. Labels are used only by the scoring inside the CLI.
Prints a Markdown table (mean +- std over the seeds) and writes it with the raw
summaries to ``benchmarks/results/<name>.{md,json}``.

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


def fmt(stats: dict | None) -> str:
    return f"{100 * stats['mean']:.1f} ± {100 * stats['std']:.1f}" if stats else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True, help="results file stem")
    ap.add_argument("--features", nargs="+", required=True, help="FEATURES.npy:K pairs")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--param", action="append", default=[], help="METHOD:NAME=VALUE, passed as -p to that method")
    ap.add_argument("--work", type=Path, default=Path("/tmp/nolabel-bench"))
    ap.add_argument("--title", default="Frozen-feature methods")
    args = ap.parse_args()

    per_method: dict[str, list[str]] = {}
    for spec in args.param:
        method, _, value = spec.partition(":")
        per_method.setdefault(method, []).append(value)
    rows, raw = [], []
    for spec in args.features:
        path, _, k = spec.rpartition(":")
        features = Path(path)
        for label in args.methods.split(","):
            method = METHODS[label][0]
            s = run_one(features, int(k), label, args.seeds, per_method.get(label, per_method.get(method, [])), args.work)
            m = s["metrics"]
            row = (f"| {features.stem} | {k} | {label} | {fmt(m.get('acc'))} | {fmt(m.get('many_to_one_acc'))} | "
                   f"{fmt(m.get('nmi'))} | {fmt(m.get('ari'))} | {s['wall_s'] / len(s['seeds']):.0f} |")
            print(row, flush=True)
            rows.append(row)
            raw.append(s)
    head = [f"# {args.title}", "",
            f"Written by `benchmarks/frozen_methods.py`; seeds {args.seeds} (mean ± std over seeds), "
            "labels used only to score; each row is one `nolabel cluster` command (see the .json for it). "
            "Wall time: seconds per seed on this machine (2 CPU cores), including process start.", "",
            "| features | K | method | ACC | many-to-one ACC | NMI | ARI | s/seed |",
            "|---|---|---|---|---|---|---|---|"]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.md").write_text("\n".join(head + rows) + "\n")
    (RESULTS / f"{args.name}.json").write_text(json.dumps(raw, indent=1))
    print(f"-> {RESULTS / args.name}.md")


if __name__ == "__main__":
    main()
