"""``nolabel demo``: the chain on scikit-learn's digits (1,797 8x8 images, embedded).

pixels -> embeddings -> 20-NN -> k-means, SCAN and SCAN + self-labelling, each over
three seeds, scored against the digit labels (used only to score).
"""
from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

DEMO_SEEDS = [0, 1, 2]
DEMO_RUNS = (  # (method, then, params)
    ("kmeans", None, {}),
    ("scan", None, {}),
    ("scan", "selflabel", {}),
)


def run_demo(out: Path, console: Console) -> dict:
    from . import backbones
    from .clustering import fit_seeds
    from .data import load_dataset
    from .features import extract_features
    from .items import save_items
    from .neighbors import knn, neighbor_purity

    start = time.perf_counter()
    out = Path(out)
    dataset = load_dataset("digits")
    console.print(f"data: {dataset.name}, {len(dataset)} images, {dataset.num_classes} classes")
    features_path = out / "features.npy"
    emb = extract_features(dataset, backbones.get("pixels"), features_path, normalize=False, progress=False)
    save_items(features_path, dataset)
    nb = knn(emb.array, 20)
    nb.save(out / "features.knn20.npz")
    purity = neighbor_purity(nb.indices, dataset.labels)
    console.print(f"features: raw pixels {emb.array.shape[1]}-d; 20-NN purity {100 * purity:.1f}%")

    table = Table(title=f"digits, all {len(dataset)} images, mean +- std over seeds {DEMO_SEEDS}")
    for col in ("method", "ACC", "NMI", "ARI", "seconds"):
        table.add_column(col, justify="right" if col != "method" else "left")
    results = {}
    for method, then, params in DEMO_RUNS:
        t0 = time.perf_counter()
        name = method + (f"+{then}" if then else "")
        summary = fit_seeds(features_path, method, 10, params, DEMO_SEEDS, then=then, out_dir=out / name)
        m = summary["metrics"]
        table.add_row(
            name,
            *(f"{100 * m[k]['mean']:.1f} +- {100 * m[k]['std']:.1f}" for k in ("acc", "nmi", "ari")),
            f"{time.perf_counter() - t0:.1f}",
        )
        results[name] = m
    console.print(table)
    console.print(f"done in {time.perf_counter() - start:.0f} s; artifacts in {out}")
    return results
