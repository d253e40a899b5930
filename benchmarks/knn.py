"""Exact k-NN: the chunked torch backend against faiss IndexFlatIP.

    .venv/bin/python benchmarks/knn.py            # N=50,000, d=384, k=50 (a few minutes on 2 cores)
    .venv/bin/python benchmarks/knn.py --quick    # N=5,000, d=64, k=10

Data: clustered float32 rows (100 Gaussian centres + noise), the same seed for both.
Each backend runs in its own fresh subprocess: wall time is the best of ``--repeats``
calls of ``nolabel.neighbors.knn``; peak memory is the rise of the process's resident
set high-water mark during those calls over the resident set just before them (the
mark is reset through /proc/self/clear_refs first; where that is not allowed, the
ru_maxrss delta is used and the JSON says so). Recall of torch against faiss is the
mean fraction of shared neighbour indices per row (1.0 up to ties).
Writes benchmarks/results/knn.{json,md} (knn.quick.* with --quick).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
BACKENDS = ("torch", "faiss")


def make_data(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(100, d)).astype(np.float32)
    x = centres[rng.integers(0, 100, n)]
    x += rng.normal(scale=1.5, size=(n, d)).astype(np.float32)
    return x


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def worker(args: argparse.Namespace) -> None:
    """One backend in this (fresh) process: time it, measure its peak memory, save its result."""
    import torch

    from nolabel.neighbors import knn

    torch.set_num_threads(args.threads)
    if args.backend.startswith("faiss"):
        import faiss

        faiss.omp_set_num_threads(args.threads)
    x = make_data(args.n, args.d, args.seed)
    knn(x[:64], 5, backend=args.backend, device="cpu")  # load libraries and thread pools outside the measurement
    try:
        Path("/proc/self/clear_refs").write_text("5")
        method = "VmHWM after reset (/proc/self/clear_refs) minus VmRSS before"
        before = _status_kib("VmRSS")
    except OSError:
        method = "ru_maxrss after minus ru_maxrss before (a lower bound)"
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seconds = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        nb = knn(x, args.k, backend=args.backend, device="cpu")
        seconds.append(time.perf_counter() - t0)
    peak = _status_kib("VmHWM") if method.startswith("VmHWM") else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    np.save(args.save + ".indices.npy", nb.indices)
    np.save(args.save + ".sims.npy", nb.similarities)
    Path(args.save + ".json").write_text(json.dumps({
        "seconds": seconds, "best_seconds": min(seconds), "peak_extra_mib": (peak - before) / 1024,
        "rss_before_mib": before / 1024, "memory_method": method,
    }))


def recall(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over rows of |a_i & b_i| / k (rows hold distinct indices)."""
    merged = np.sort(np.concatenate([a, b], axis=1), axis=1)
    return float((merged[:, 1:] == merged[:, :-1]).sum() / a.size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--d", type=int, default=384)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="N=5000, d=64, k=10")
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.backend:
        worker(args)
        return
    if args.quick:
        args.n, args.d, args.k = 5_000, 64, 10

    runs, results = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in BACKENDS:
            save = str(Path(tmp) / backend)
            cmd = [sys.executable, __file__, "--backend", backend, "--save", save, "--n", str(args.n), "--d", str(args.d),
                   "--k", str(args.k), "--repeats", str(args.repeats), "--threads", str(args.threads), "--seed", str(args.seed)]
            subprocess.run(cmd, check=True)
            runs[backend] = json.loads(Path(save + ".json").read_text())
            results[backend] = np.load(save + ".indices.npy"), np.load(save + ".sims.npy")
    (ti, ts), (fi, fs) = results["torch"], results["faiss"]
    summary = {
        "n": args.n, "d": args.d, "k": args.k, "repeats": args.repeats, "threads": args.threads,
        "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs (shared with other work)",
        "backends": runs,
        "recall_torch_vs_faiss": recall(ti, fi),
        "same_order_fraction": float((ti == fi).all(axis=1).mean()),
        "max_abs_similarity_diff": float(np.abs(ts - fs).max()),
        "time_ratio_torch_over_faiss": runs["torch"]["best_seconds"] / runs["faiss"]["best_seconds"],
    }
    lines = [
        f"# Exact k-NN, N={args.n:,}, d={args.d}, k={args.k} (clustered float32, cosine, self excluded)",
        "",
        "| backend | best of %d (s) | all runs (s) | peak extra RSS (MiB) |" % args.repeats,
        "|---|---:|---|---:|",
    ]
    for backend, r in runs.items():
        lines.append(f"| {backend} | {r['best_seconds']:.2f} | {', '.join(f'{s:.2f}' for s in r['seconds'])} | {r['peak_extra_mib']:.0f} |")
    lines += [
        "",
        f"- time ratio torch / faiss: {summary['time_ratio_torch_over_faiss']:.2f}",
        f"- recall of torch vs faiss: {summary['recall_torch_vs_faiss']:.6f}; rows in identical order: "
        f"{100 * summary['same_order_fraction']:.2f}%; max |similarity difference|: {summary['max_abs_similarity_diff']:.2e}",
        f"- memory: {runs['torch']['memory_method']}, in a fresh process per backend",
        f"- {args.threads} threads; {summary['machine']}",
    ]
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    write_results("knn.quick" if args.quick else "knn", summary, markdown)


def write_results(stem: str, summary: dict, markdown: str) -> None:
    from nolabel.io import atomic_path, write_json

    write_json(RESULTS / f"{stem}.json", summary)
    with atomic_path(RESULTS / f"{stem}.md") as tmp:
        tmp.write_text(markdown)
    print(f"wrote {RESULTS / stem}.json and .md")


if __name__ == "__main__":
    main()
