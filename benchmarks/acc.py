"""Hungarian ACC: the vectorised ``nolabel.metrics.hungarian_acc`` against a plain Python reference.

    .venv/bin/python benchmarks/acc.py            # N=1,000,000 labels, K=C=1000
    .venv/bin/python benchmarks/acc.py --quick    # N=100,000, K=C=100

Labels: half of the items keep a permuted copy of their class as cluster, the other
half get a random cluster, so the optimal map is not trivial.
Reference: one Python pass groups the class labels of each cluster into lists, then a
double loop over every (cluster, class) pair counts the matches of that pair
(``list.count``) into a K x C nested list; the same scipy ``linear_sum_assignment``
then picks the map. Both must give the identical ACC (asserted).
``hungarian_acc`` is timed as the best of ``--repeats`` calls, the reference once.
Writes benchmarks/results/acc.{json,md} (acc.quick.* with --quick).
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from nolabel.metrics import count_matrix, hungarian_acc

RESULTS = Path(__file__).resolve().parent / "results"


def reference_acc(y_true: list[int], y_pred: list[int], n_clusters: int, n_classes: int) -> tuple[float, list[list[int]]]:
    """Count matrix by a double loop over (cluster, class) pairs, then the optimal one-to-one map."""
    members: list[list[int]] = [[] for _ in range(n_clusters)]
    for cluster, label in zip(y_pred, y_true):
        members[cluster].append(label)
    counts = [[members[i].count(j) for j in range(n_classes)] for i in range(n_clusters)]
    rows, cols = linear_sum_assignment(np.array(counts), maximize=True)
    return sum(counts[r][c] for r, c in zip(rows, cols)) / len(y_true), counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--k", type=int, default=1000, help="clusters = classes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="N=100,000, K=C=100")
    args = parser.parse_args()
    if args.quick:
        args.n, args.k = 100_000, 100

    rng = np.random.default_rng(args.seed)
    y_true = rng.integers(0, args.k, args.n)
    y_pred = np.where(rng.random(args.n) < 0.5, rng.permutation(args.k)[y_true], rng.integers(0, args.k, args.n))

    fast = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        acc = hungarian_acc(y_true, y_pred)
        fast.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    counts = count_matrix(y_true, y_pred)
    count_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    linear_sum_assignment(counts, maximize=True)
    assignment_seconds = time.perf_counter() - t0

    true_list, pred_list = y_true.tolist(), y_pred.tolist()
    t0 = time.perf_counter()
    ref_acc, ref_counts = reference_acc(true_list, pred_list, args.k, args.k)
    ref_seconds = time.perf_counter() - t0
    assert ref_acc == acc, f"reference ACC {ref_acc} != vectorised ACC {acc}"
    assert np.array_equal(np.array(ref_counts), counts), "count matrices differ"

    summary = {
        "n": args.n, "n_clusters": args.k, "n_classes": args.k, "acc": acc, "reference_acc": ref_acc,
        "hungarian_acc_seconds": fast, "hungarian_acc_best_seconds": min(fast),
        "count_matrix_seconds": count_seconds, "assignment_seconds": assignment_seconds,
        "reference_seconds": ref_seconds, "speedup": ref_seconds / min(fast),
        "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs (shared with other work)",
    }
    markdown = "\n".join([
        f"# Hungarian ACC, N={args.n:,} labels, K=C={args.k}",
        "",
        "| implementation | seconds | ACC |",
        "|---|---:|---:|",
        f"| nolabel.metrics.hungarian_acc (best of {args.repeats}) | {min(fast):.3f} | {acc:.6f} |",
        f"| Python reference (double loop over pairs) | {ref_seconds:.3f} | {ref_acc:.6f} |",
        "",
        f"- speedup: {summary['speedup']:.1f}x (identical ACC and count matrix, asserted)",
        f"- inside hungarian_acc: count matrix {count_seconds:.3f} s, linear_sum_assignment {assignment_seconds:.3f} s "
        "(the assignment is shared by both implementations)",
        f"- {summary['machine']}",
    ]) + "\n"
    print(markdown)
    write_results("acc.quick" if args.quick else "acc", summary, markdown)


def write_results(stem: str, summary: dict, markdown: str) -> None:
    from nolabel.io import atomic_path, write_json

    write_json(RESULTS / f"{stem}.json", summary)
    with atomic_path(RESULTS / f"{stem}.md") as tmp:
        tmp.write_text(markdown)
    print(f"wrote {RESULTS / stem}.json and .md")


if __name__ == "__main__":
    main()
