"""One table of every method on every benchmark set, next to k-means, with the label-free
health columns, gathered from the stored results of the other benchmark scripts.

Reads the two formats they write: a list of ``nolabel cluster`` summaries
(``frozen_methods.py``: one entry per features x method, ``per_seed`` rows with ``acc``
and ``health``) and a dict of sets (``uneven.py``, ``lsdc_large_k.py``: ``methods`` ->
per-seed rows with ``acc`` and ``health``). ACC is the mean ± std over the stored seeds;
the health columns are the mean over seeds of the label-free check (``nolabel.health``),
``warned`` counts the seeds with at least one warning. Writes
``benchmarks/results/summary.{md,json}``.

    python benchmarks/summary.py                                # the sets of summary.md (SETS, NOTE)
    python benchmarks/summary.py SET=FILE[:FEATURES_STEM] ...   # other sets
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"

#: the sets of ``results/summary.md``: NAME=RESULTS_JSON[:KEY], paths from the repository root
SETS = [
    'CIFAR-10 R56 balanced=benchmarks/results/uneven.c10_r56.json:c10_r56 r=1',
    'CIFAR-10 R56 ratio 10=benchmarks/results/uneven.c10_r56.json:c10_r56 r=10',
    'CIFAR-10 R56 ratio 100=benchmarks/results/uneven.c10_r56.json:c10_r56 r=100',
    'StackOverflow balanced subset=benchmarks/results/uneven.so_minilm.json:so_minilm r=1',
    'StackOverflow ratio 10=benchmarks/results/uneven.so_minilm.json:so_minilm r=10',
    'StackOverflow ratio 100=benchmarks/results/uneven.so_minilm.json:so_minilm r=100',
    'StackOverflow=benchmarks/results/frozen_text.json:so_minilm',
    'SearchSnippets=benchmarks/results/frozen_text.json:SearchSnippets',
    'Biomedical=benchmarks/results/frozen_text.json:Biomedical',
    'AG News=benchmarks/results/frozen_text.json:agnews',
    'SearchSnippets, LSD-C now=benchmarks/results/frozen_text_lsdc.json:SearchSnippets',
    'Biomedical, LSD-C now=benchmarks/results/frozen_text_lsdc.json:Biomedical',
    'AG News, LSD-C now=benchmarks/results/frozen_text_lsdc.json:agnews',
    'StackOverflow K 20, LSD-C run=benchmarks/results/lsdc_large_k.json:so20',
    'CIFAR-10 R56 K 100 (overclustering)=benchmarks/results/lsdc_large_k.json:c10k100',
    'CIFAR-10 lite0 (centre crop)=benchmarks/results/frozen_lite0.json:cifar10_test_lite0',
    'CIFAR-10 lite0 (whole frame)=benchmarks/results/frozen_lite0_whole.json:c10_lite0_whole',
    'CIFAR-10 lite2 (whole frame)=benchmarks/results/frozen_lite2_whole.json:c10_lite2_whole',
]
#: the paragraph under the table of ``results/summary.md``
NOTE = ("Settings: every row is the method's default at the time it ran; the notes of `uneven.*.md` say which code. "
        "Since 2026-12-01 evening (commit 3225118 and after) the defaults are: SCAN, SeLa and LSD-C start from nolabel's "
        "k-means partition (LSD-C with 3 heads and tempered size profiles), TEMI starts half its heads from it "
        "(`init=\"both\"`). Rows run with these defaults: every `uneven.*` row of scan, sela, temi and lsdc; the "
        "`LSD-C run` and `K 100` rows (3 seeds each; `lsdc-before` is the head before the large-K fix); the lite0 "
        "whole-frame rows. Earlier defaults: the lsdc rows of the four text sets (one uniform head, random start; one "
        "seed), whose new-default runs are the `LSD-C now` rows and the `LSD-C run` row (StackOverflow), and the lite0 "
        "centre-crop temi and lsdc rows (random start). temi with `init=\"both\"`: seeds 0-2 on the text sets and on lite0 "
        "whole frame. Splits: CIFAR-10 test (the supervised "
        "ResNet-56 features are a correctness check, not an unsupervised result; lite0: ImageNet weights, centre crop "
        "or whole frame); all items of each text file; ratio-r sets are fixed long-tailed subsets (`benchmarks/uneven.py`).")


def _rows_from_cli_summaries(entries: list, stem: str | None) -> dict[str, list[dict]]:
    """method label -> per-seed rows, from a list of ``nolabel cluster`` summaries."""
    out: dict[str, list[dict]] = {}
    for entry in entries:
        if stem and Path(entry["features"]).stem != stem:
            continue
        out[entry.get("label", entry["method"])] = entry["per_seed"]
    return out


def _rows_from_sets(sets: dict, key: str | None) -> dict[str, list[dict]]:
    """method -> per-seed rows, from a ``{set: {"methods": {...}}}`` file (one set)."""
    chosen = sets[key] if key else next(iter(sets.values()))
    return chosen["methods"]


def load_set(path: Path, key: str | None) -> dict[str, list[dict]]:
    data = json.loads(path.read_text())
    return _rows_from_cli_summaries(data, key) if isinstance(data, list) else _rows_from_sets(data, key)


def summarise(rows: list[dict]) -> dict:
    acc = np.array([r["acc"] for r in rows]) * 100
    health = [r.get("health") or {} for r in rows]

    def mean_of(name: str) -> float | None:
        vals = [h[name] for h in health if h.get(name) is not None]
        return float(np.mean(vals)) if vals else None

    return {
        "seeds": len(rows), "acc": float(acc.mean()), "acc_std": float(acc.std()),
        "n_clusters": health[0].get("n_clusters") if health and health[0] else None,
        "nonempty": mean_of("n_nonempty"), "largest": mean_of("largest_share"), "smallest": mean_of("smallest_share"),
        "confidence": mean_of("mean_confidence"), "agreement": mean_of("agreement_kmeans"),
        "warned": sum(bool(h.get("warnings")) for h in health),
    }


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _num(v: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if v is None else fmt.format(v)


def table(results: dict[str, dict[str, dict]]) -> str:
    lines = ["| set | method | seeds | ACC | vs k-means | non-empty | largest share | smallest share | mean conf. "
             "| agreement with k-means | seeds warned |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, per_method in results.items():
        base = per_method.get("kmeans", {}).get("acc")
        for method, s in sorted(per_method.items(), key=lambda item: item[0] != "kmeans"):
            delta = "-" if base is None else f"{s['acc'] - base:+.1f}"
            ne = "-" if s["nonempty"] is None else f"{s['nonempty']:.1f}/{s['n_clusters']}"
            lines.append(f"| {name} | {method} | {s['seeds']} | {s['acc']:.1f} ± {s['acc_std']:.1f} | {delta} | {ne} "
                         f"| {_pct(s['largest'])} | {_pct(s['smallest'])} | {_num(s['confidence'])} "
                         f"| {_num(s['agreement'])} | {s['warned']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sets", nargs="*", default=SETS,
                    help="NAME=RESULTS_JSON[:KEY], KEY = the features stem or the set key (default: SETS)")
    ap.add_argument("--note", default=None, help="a paragraph printed under the table (default: NOTE with the default sets)")
    args = ap.parse_args()
    if args.note is None:
        args.note = NOTE if args.sets == SETS else ""
    root = Path(__file__).resolve().parent.parent
    results: dict[str, dict[str, dict]] = {}
    for spec in args.sets:
        name, _, rest = spec.partition("=")
        path, _, key = rest.partition(":")
        per_method = load_set(root / path if not Path(path).is_absolute() else Path(path), key or None)
        results[name] = {m: summarise(rows) for m, rows in per_method.items() if rows}
    text = ("# Every method on every set, next to k-means, with the label-free health check\n\n"
            "Written by `benchmarks/summary.py` from the stored results named below; ACC (Hungarian) mean ± std over "
            "the stored seeds, labels only score; health columns: mean over seeds of `nolabel.health` (no labels).\n\n"
            + table(results) + "\n\n" + (args.note + "\n\n" if args.note else "") + "Sources: " + ", ".join(f"`{s}`" for s in args.sets) + "\n")
    (RESULTS / "summary.md").write_text(text)
    (RESULTS / "summary.json").write_text(json.dumps(results, indent=1))
    print(text)


if __name__ == "__main__":
    main()
