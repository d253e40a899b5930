"""CIFAR-10 test on EfficientNet-Lite0 features (ImageNet weights, no CIFAR label seen):
extraction speed against the bare-model floor, 20-NN purity, k-means and the learned
frozen-feature methods over seeds, and a supervised linear probe as the ceiling.

    .venv/bin/python benchmarks/cifar10_backbone.py \
        --features RUN/stages/features-*/features.npy --run RUN --seeds 0,1,2

Features: ``--features`` (a features.npy written by ``nolabel run``/``nolabel embed`` with
its items sidecar), else extracted here with ``efficientnet-lite0`` (224 px, L2-normalised)
into ``--cache``. Throughput: images/s of that extraction (the stage's own time when it came
from a run) against ``model(x)`` alone on ``--floor-n`` already preprocessed images (the floor).
Methods run through ``nolabel cluster`` (``benchmarks/frozen_methods.py``), default
hyper-parameters unless ``--param METHOD:NAME=VALUE``; ``--run RUN`` also lists the results
already in that run folder (e.g. TEMI's, which costs most) with their own seeds.
The linear probe (scikit-learn logistic regression on the same features, stratified 3-fold,
labels used for training) is a ceiling only, not a clustering result.
Writes benchmarks/results/cifar10_backbone.{json,md}.
"""
from __future__ import annotations

import argparse
import glob
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ceilings import linear_probe  # noqa: E402
from frozen_methods import METHODS, fmt, run_one  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def features_file(args) -> tuple[Path, float | None]:
    """(features path, extraction seconds) from --features, else extracted into --cache."""
    from nolabel.io import read_json

    found = sorted(glob.glob(args.features)) if args.features else []
    if found:  # copied (with its sidecars) so that `nolabel cluster` writes its k-NN file beside the copy
        path = Path(found[0])
        done = path.parent / "done.json"
        seconds = read_json(done).get("seconds") if done.exists() else None
        args.work.mkdir(parents=True, exist_ok=True)
        stem = path.name.removesuffix(".npy")
        for side in path.parent.glob(stem + ".*"):
            if not side.name.startswith(stem + ".knn"):
                shutil.copy(side, args.work / side.name.replace(stem, "cifar10_test_lite0", 1))
        return args.work / "cifar10_test_lite0.npy", seconds
    from nolabel import backbones
    from nolabel.data import load_dataset
    from nolabel.features import extract_features
    from nolabel.items import save_items

    dataset = load_dataset(args.data)
    model = backbones.get("efficientnet-lite0", device="cpu", modality="image")
    start = time.perf_counter()
    extract_features(dataset, model, args.cache, normalize=True)
    seconds = time.perf_counter() - start
    save_items(args.cache, dataset)
    return Path(args.cache), seconds


def floor_rate(data: str, n: int, batch: int = 64) -> float:
    """Images/s of the bare timm model on ``n`` preprocessed CIFAR images (NCHW, no_grad)."""
    import torch

    from nolabel import backbones
    from nolabel.data import load_dataset

    dataset = load_dataset(data)
    bb = backbones.get("efficientnet-lite0", device="cpu", modality="image")
    idx = np.random.default_rng(0).choice(len(dataset), n, replace=False)
    x = torch.stack([bb.preprocess(dataset.load(int(i))) for i in idx])
    with torch.no_grad():
        bb.model(x[:batch])
        start = time.perf_counter()
        for i in range(0, n, batch):
            bb.model(x[i:i + batch])
    return n / (time.perf_counter() - start)


def sklearn_kmeans(x: np.ndarray, y: np.ndarray, seeds: list[int]) -> list[float]:
    from sklearn.cluster import KMeans

    from nolabel.metrics import hungarian_acc

    return [hungarian_acc(y, KMeans(10, n_init=10, random_state=s).fit_predict(x)) for s in seeds]


def run_results(run: Path) -> list[dict]:
    """The results of a run folder: from run.json, or, while the run is still going, from the
    summaries of its finished method stages (with their time from done.json)."""
    from nolabel.io import read_json

    if (run / "run.json").exists():
        manifest = read_json(run / "run.json")
        timings = manifest.get("timings") or {}
        return [{"label": r["name"] + " (run)", "seeds": r.get("seeds"), "metrics": r["metrics"],
                 "s_per_seed": timings.get(r["name"], 0) / max(1, len(r.get("seeds") or [0])),
                 "command": f"nolabel run ... --out {run}"} for r in manifest["results"]]
    rows = []
    for summary_path in sorted((run / "stages").glob("method-*/summary.json")):
        summary = read_json(summary_path)
        done = summary_path.parent / "done.json"
        seconds = read_json(done).get("seconds", 0) if done.exists() else 0
        rows.append({"label": f"{summary['method']} (run)", "seeds": summary.get("seeds"), "metrics": summary["metrics"],
                     "s_per_seed": seconds / max(1, len(summary.get("seeds") or [0])),
                     "command": f"nolabel run ... --out {run} (stage {summary_path.parent.name})"})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/datasets/cifar10-jpeg/test")
    ap.add_argument("--features", default="/work/runs/i13/cifar_run/stages/features-*/features.npy")
    ap.add_argument("--cache", default="/work/runs/i13/cifar10_test_lite0.npy")
    ap.add_argument("--run", type=Path, default=None, help="a run folder whose results are listed too")
    ap.add_argument("--add-run", action="store_true", help="only append --run's results to the existing --out files")
    ap.add_argument("--methods", default="kmeans,scan,lsdc,scan+selflabel,sela")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--param", action="append", default=[], help="METHOD:NAME=VALUE")
    ap.add_argument("--floor-n", type=int, default=256)
    ap.add_argument("--sklearn-kmeans", action="store_true", help="also scikit-learn k-means, n_init=10, every seed")
    ap.add_argument("--extract-items", type=int, default=None,
                    help="items the features stage's time covers (a resumed stage times only the rest)")
    ap.add_argument("--work", type=Path, default=Path("/work/runs/i13/bench"))
    ap.add_argument("--out", default=str(RESULTS / "cifar10_backbone"))
    args = ap.parse_args()

    from nolabel.io import read_json, write_json
    from nolabel.items import load_items
    from nolabel.neighbors import knn, neighbor_purity

    if args.add_run:
        out = read_json(Path(args.out + ".json"))
        out["methods"] += run_results(args.run)
        out["command"] += f" && python benchmarks/cifar10_backbone.py --add-run --run {args.run}"
        write_json(Path(args.out + ".json"), out)
        Path(args.out + ".md").write_text(markdown(out))
        print(markdown(out))
        return

    path, extract_s = features_file(args)
    x = np.asarray(np.load(path, mmap_mode="r"), dtype=np.float32)
    y = load_items(path).labels
    seeds = [int(s) for s in args.seeds.split(",")]
    out: dict = {"features": str(path), "n": len(x), "dim": int(x.shape[1]), "seeds": seeds,
                 "command": "python " + " ".join(sys.argv)}
    out["extract_seconds"] = extract_s
    out["extract_items"] = args.extract_items or len(x)
    out["extract_images_per_s"] = out["extract_items"] / extract_s if extract_s else None
    out["floor_images_per_s"] = floor_rate(args.data, args.floor_n)
    out["purity20"] = neighbor_purity(knn(x, 20, device="cpu").indices, y)
    print(json.dumps({k: v for k, v in out.items()}), flush=True)
    def save() -> None:  # after every step: a run cut short keeps what it measured
        write_json(Path(args.out + ".json"), out)
        Path(args.out + ".md").write_text(markdown(out))

    if args.sklearn_kmeans:
        accs = sklearn_kmeans(x, y, seeds)
        out["sklearn_kmeans_acc"] = {"mean": float(np.mean(accs)), "std": float(np.std(accs)), "per_seed": accs}
        print("sklearn k-means", accs, flush=True)
    probe = linear_probe(x, y, c=1.0, max_iter=1000)
    out["linear_probe_acc"] = {"mean": float(np.mean(probe)), "per_fold": probe}
    print("linear probe", probe, flush=True)
    out["methods"] = run_results(args.run) if args.run is not None else []
    save()
    per_method: dict[str, list[str]] = {}
    for spec in args.param:
        method, _, value = spec.partition(":")
        per_method.setdefault(method, []).append(value)
    for label in args.methods.split(","):
        method = METHODS[label][0]
        s = run_one(path, 10, label, args.seeds, per_method.get(label, per_method.get(method, [])), args.work)
        out["methods"].append({"label": label, "seeds": seeds, "metrics": s["metrics"], "s_per_seed": s["wall_s"] / len(seeds),
                               "command": s["command"]})
        print(label, fmt(s["metrics"].get("acc")), flush=True)
        save()
    print(markdown(out))


def markdown(out: dict) -> str:
    ex = out["extract_images_per_s"]
    lines = [
        "# CIFAR-10 test on EfficientNet-Lite0 features (ImageNet weights, offline)",
        "",
        f"{out['n']} test images, `efficientnet-lite0` (tf_efficientnet_lite0, 224 px bicubic, mean/std 0.5), "
        f"{out['dim']}-d L2-normalised pooled features. Labels only score (and train the probe, the ceiling). "
        "Shared machine: 2 CPU cores used by several jobs at once, so speeds are indicative.",
        "",
        f"- extraction: {ex:.1f} images/s ({out['extract_seconds']:.0f} s for {out['extract_items']})" if ex else "- extraction: -",
        f"- floor (bare `model(x)` on preprocessed tensors, batch 64): {out['floor_images_per_s']:.1f} images/s",
        f"- 20-NN purity: {100 * out['purity20']:.1f} %",
        f"- scikit-learn k-means (n_init=10), seeds {','.join(map(str, out['seeds']))}: ACC "
        f"{fmt(out['sklearn_kmeans_acc'])}" if "sklearn_kmeans_acc" in out else "- scikit-learn k-means: not run",
        f"- linear probe (labels, stratified 3-fold; the CEILING, not a clustering result): "
        f"{100 * out['linear_probe_acc']['mean']:.1f} %",
        "",
        "| method | seeds | ACC | many-to-one ACC | NMI | ARI | s/seed |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in out["methods"]:
        m = r["metrics"]
        seeds = ",".join(map(str, r["seeds"] or []))
        lines.append(f"| {r['label']} | {seeds} | {fmt(m.get('acc'))} | {fmt(m.get('many_to_one_acc'))} | "
                     f"{fmt(m.get('nmi'))} | {fmt(m.get('ari'))} | {r['s_per_seed']:.0f} |")
    lines += ["", f"Command: `{out['command']}`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
