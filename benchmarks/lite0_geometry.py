"""Why the heads gain little over k-means on EfficientNet-Lite0 features: the geometry of the
features, and what a label-free change of the input space does to k-means and SCAN.

Label-free statistics of the stored (L2-normalised) features: the mean cosine between
random pairs (EfficientNet's pooled features are averages of ReLU6 outputs, so every
coordinate is >= 0 and all pairs point roughly the same way), the share of the variance
in the first 10 principal components, and the participation ratio of the PCA spectrum
(``(sum l)^2 / sum l^2``, an effective dimension).

Then the same inputs under three label-free transforms, each followed by L2
normalisation (the cosine geometry neighbours and heads use):

- ``stored``: the features as ``nolabel run`` wrote them;
- ``centred``: minus the mean row (removes the common direction that every ReLU feature shares);
- ``pca256w``: PCA to 256 components, whitened (each component scaled to unit variance).

For each: 20-NN purity, and ACC of nolabel's default k-means and default SCAN (seed 0,
neighbours mined in that space). THESE COMPARISONS USE LABELS: whatever they show was
"chosen with labels" and is not made a default on their strength alone.

    python benchmarks/lite0_geometry.py --features FEATURES.npy --k 10 --seed 0
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from nolabel import methods
from nolabel.items import load_items
from nolabel.metrics import hungarian_acc
from nolabel.neighbors import knn, neighbor_purity

RESULTS = Path(__file__).parent / "results"


def l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def spectrum_stats(x: np.ndarray, seed: int = 0) -> dict:
    """Label-free: mean cosine of random pairs, top-10 variance share, participation ratio."""
    rng = np.random.default_rng(seed)
    z = l2(x)
    i, j = rng.integers(0, len(z), 20000), rng.integers(0, len(z), 20000)
    keep = i != j
    cos = float((z[i[keep]] * z[j[keep]]).sum(1).mean())
    c = z - z.mean(0)
    eig = np.clip(np.linalg.eigvalsh(c.T.astype(np.float64) @ c / len(c))[::-1], 0, None)
    return {"mean_pair_cosine": cos, "top10_variance": float(eig[:10].sum() / eig.sum()),
            "participation_ratio": float(eig.sum() ** 2 / (eig ** 2).sum()),
            "min_coordinate": float(x.min()), "mean_norm_of_mean_row": float(np.linalg.norm(z.mean(0)))}


def transform(x: np.ndarray, name: str) -> np.ndarray:
    z = l2(x).astype(np.float64)
    if name == "stored":
        return z.astype(np.float32)
    if name == "centred":
        return l2(z - z.mean(0)).astype(np.float32)
    if name == "pca256w":
        c = z - z.mean(0)
        vals, vecs = np.linalg.eigh(c.T @ c / len(c))
        top = np.argsort(vals)[::-1][:256]
        return l2(c @ vecs[:, top] / np.sqrt(vals[top] + 1e-12)).astype(np.float32)
    raise ValueError(name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", type=Path, required=True)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", default="stored,centred,pca256w")
    ap.add_argument("--methods", default="kmeans,scan")
    ap.add_argument("--name", default="lite0_geometry")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x = np.load(args.features).astype(np.float32)
    y = load_items(args.features).labels
    out = {"features": str(args.features), "seed": args.seed, "stats": spectrum_stats(x), "variants": {}}
    print("label-free:", out["stats"], flush=True)
    for name in args.variants.split(","):
        z = transform(x, name)
        nb = knn(z, 50).indices
        row = {"purity@20": neighbor_purity(nb[:, :20], y)}
        for m in args.methods.split(","):
            t0 = time.perf_counter()
            est = methods.get(m)(n_clusters=args.k, seed=args.seed)
            labels = est.fit(z, nb if est.neighbors_needed(est.get_params()) else None).labels_
            row[m] = {"acc": hungarian_acc(y, labels), "seconds": time.perf_counter() - t0}
        out["variants"][name] = row
        print(name, json.dumps(row), flush=True)
        (RESULTS / f"{args.name}.json").write_text(json.dumps(out, indent=1))
    s = out["stats"]
    lines = ["# EfficientNet-Lite0 CIFAR-10 test features: geometry, and label-free input transforms (compared with labels)", "",
             f"Features: `{args.features}`; seed {args.seed}; written by `python benchmarks/lite0_geometry.py "
             f"--features {args.features} --k {args.k} --seed {args.seed}`.", "",
             f"Label-free statistics of the stored rows: smallest coordinate {s['min_coordinate']:.3f}"
             f"{' (no coordinate negative)' if s['min_coordinate'] >= 0 else ''}, mean cosine of random pairs {s['mean_pair_cosine']:.3f}, norm of the mean unit row "
             f"{s['mean_norm_of_mean_row']:.3f}, first 10 principal components {100 * s['top10_variance']:.1f} % of the "
             f"variance, participation ratio {s['participation_ratio']:.1f} (of {x.shape[1]} dimensions).", "",
             "Each variant is L2-normalised after the transform; neighbours are mined in its space. "
             "**Compared with labels** (ACC, purity): a variant that scores higher here was chosen with labels and "
             "is not a default on that ground.", "",
             "| input | 20-NN purity | " + " | ".join(f"{m} ACC (s)" for m in args.methods.split(",")) + " |",
             "|---|---|" + "---|" * len(args.methods.split(","))]
    for name, row in out["variants"].items():
        lines.append(f"| {name} | {100 * row['purity@20']:.1f} | " + " | ".join(
            f"{100 * row[m]['acc']:.1f} ({row[m]['seconds']:.0f})" for m in args.methods.split(",")) + " |")
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
