"""Pretext training on MNIST test (10,000 images): k-NN purity and k-means ACC of the features.

    .venv/bin/python benchmarks/pretext_mnist.py --task simclr --epochs 10
    .venv/bin/python benchmarks/pretext_mnist.py --task rotnet --epochs 5
    .venv/bin/python benchmarks/pretext_mnist.py --quick          # 2,000 images, 1 epoch

Trains ``small_cnn`` with :func:`nolabel.pretext.train_simclr` or ``train_rotnet`` (no
labels), resuming a killed run, and saves the checkpoint under ``--out`` (default
``../runs/pretext_mnist/<tag>.safetensors`` beside the repository). Then it embeds every
image through ``nolabel.backbones.get("local:<checkpoint>")`` and scores, with the
labels used only here: purity of the k = 1, 5, 10, 20 cosine nearest neighbours (self
excluded) and ACC (Hungarian) / NMI of scikit-learn KMeans(10, n_init=10). For SimCLR it
also scores the 128-d projection-head output (SCAN mines neighbours there), and it
scores raw pixels as a baseline. Wall time is the training time summed over epochs
(from the run's history). Results are added (keyed by tag) to
benchmarks/results/pretext_mnist.json and the table in pretext_mnist.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def score(features: np.ndarray, labels: np.ndarray, seed: int) -> dict[str, float]:
    """k-NN purity at 1/5/10/20 (cosine) and KMeans(10) ACC/NMI on L2-normalised features."""
    from sklearn.cluster import KMeans

    from nolabel.metrics import hungarian_acc, nmi
    from nolabel.neighbors import knn, normalize_rows, purity_at_k

    neighbors = knn(features, 20, backend="torch", device="cpu")
    purity = purity_at_k(neighbors.indices, labels, ks=(1, 5, 10, 20))
    x = normalize_rows(features)
    pred = KMeans(10, n_init=10, random_state=seed).fit_predict(x)
    out = {f"purity@{k}": round(v, 4) for k, v in purity.items()}
    out.update({"kmeans_acc": round(hungarian_acc(labels, pred), 4), "kmeans_nmi": round(nmi(labels, pred), 4)})
    return out


def projection_features(checkpoint: Path, images: torch.Tensor) -> np.ndarray:
    """SimCLR head output on the normalised images, from the training state beside ``checkpoint``."""
    from torch import nn

    from nolabel.backbones.archs import archs
    from nolabel.pretext.common import state_path

    state = torch.load(state_path(checkpoint), map_location="cpu", weights_only=True)
    s = state["config"]
    model = archs.get(s["arch"])(**s["arch_kwargs"])
    part = lambda name: {k.removeprefix(name + "."): v for k, v in state["model"].items() if k.startswith(name + ".")}
    model.load_state_dict(part("backbone"))
    d = model.feature_dim
    head = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, s["proj_dim"]))
    head.load_state_dict(part("head"))
    model.eval()
    head.eval()
    x = (images.float() / 255 - s["mean"][0]) / s["std"][0]
    with torch.no_grad():
        return torch.cat([head(model(x[i:i + 1000])) for i in range(0, len(x), 1000)]).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=("simclr", "rotnet"), default="simclr")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=None, help="default 256 (simclr) / 128 (rotnet)")
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="adam")
    parser.add_argument("--lr", type=float, default=None, help="default 1e-3 (adam), 0.4 / 0.1 (sgd)")
    parser.add_argument("--width", type=int, default=32, help="small_cnn width (features = 4 * width)")
    parser.add_argument("--scale", type=float, default=0.4, help="lower RandomResizedCrop area bound (simclr)")
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=None, help="use the first n test images")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets" / "mnist")
    parser.add_argument("--out", type=Path, default=ROOT.parent / "runs" / "pretext_mnist")
    parser.add_argument("--tag", default=None, help="name of the run (default from the settings)")
    parser.add_argument("--quick", action="store_true", help="2,000 images, 1 epoch")
    args = parser.parse_args()
    if args.quick:
        args.n, args.epochs = args.n or 2000, 1
    torch.set_num_threads(args.threads)

    import nolabel.backbones as backbones
    from nolabel.data import load_mnist
    from nolabel.pretext import train_rotnet, train_simclr

    data = load_mnist(args.data, split="test")
    if args.n:
        data = data.subset(np.arange(args.n), name=f"mnist-test[:{args.n}]")
    labels = np.asarray(data.labels)
    batch = args.batch_size or (256 if args.task == "simclr" else 128)
    tag = args.tag or (f"{args.task}_w{args.width}_e{args.epochs}_{args.optimizer}_b{batch}"
                       + (f"_s{args.scale}_t{args.temperature}" if args.task == "simclr" else "")
                       + (f"_n{args.n}" if args.n else ""))
    checkpoint = args.out / f"{tag}.safetensors"
    common = dict(arch="small_cnn", arch_kwargs={"width": args.width}, epochs=args.epochs, batch_size=batch,
                  optimizer=args.optimizer, lr=args.lr, device="cpu", seed=args.seed, progress=True)
    if args.task == "simclr":
        train_simclr(data, checkpoint, temperature=args.temperature,
                     augment={"hflip": False, "scale": (args.scale, 1.0)}, **common)
    else:
        train_rotnet(data, checkpoint, augment={"hflip": False}, **common)
    log = json.loads(checkpoint.with_name(checkpoint.stem + ".train.json").read_text())
    history = log["history"]

    t0 = time.perf_counter()
    backbone = backbones.get(f"local:{checkpoint}", device="cpu")
    items = [data.load(i) for i in range(len(data))]
    features = torch.cat([backbone.embed(items[i:i + 1000]) for i in range(0, len(items), 1000)]).numpy()
    embed_s = time.perf_counter() - t0
    result = {
        "tag": tag, "task": args.task, "images": len(data), "epochs": args.epochs, "batch_size": batch,
        "optimizer": args.optimizer, "lr": log["config"]["lr"], "width": args.width, "dim": int(features.shape[1]),
        "augment": log["config"]["augment"], "threads": args.threads, "seed": args.seed,
        "train_seconds": round(sum(h["seconds"] for h in history), 1),
        "images_per_s": round(float(np.mean([h["images_per_s"] for h in history])), 1),
        "final_loss": round(history[-1]["loss"], 4), "embed_seconds": round(embed_s, 1),
        "checkpoint": str(checkpoint), "machine": platform.processor() or platform.machine(),
        "backbone": score(features, labels, args.seed),
    }
    if args.task == "simclr":
        result["projection"] = score(projection_features(checkpoint, torch.from_numpy(np.asarray(data.source))[:, None]),
                                     labels, args.seed)
    pixels = np.asarray(data.source, dtype=np.float32).reshape(len(data), -1)
    result["pixels"] = score(pixels, labels, args.seed)

    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / ("pretext_mnist.quick.json" if args.quick else "pretext_mnist.json")
    runs = json.loads(path.read_text()) if path.is_file() else {}
    runs[tag] = result
    from nolabel.io import atomic_path, write_json

    write_json(path, runs)
    rows = ["| run | images | epochs | train s | img/s | features | purity@20 | k-means ACC | NMI |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, r in runs.items():
        for which in ("backbone", "projection", "pixels"):
            if which in r:
                s = r[which]
                rows.append(f"| {name} | {r['images']} | {r['epochs']} | {r['train_seconds']} | {r['images_per_s']} | "
                            f"{which} | {s['purity@20']:.4f} | {s['kmeans_acc']:.4f} | {s['kmeans_nmi']:.4f} |")
    table = "\n".join(rows) + "\n"
    with atomic_path(path.with_suffix(".md")) as tmp:
        tmp.write_text("# Pretext training on MNIST test (small_cnn, CPU)\n\n"
                       "Written by `benchmarks/pretext_mnist.py`; labels used only to score.\n\n" + table)
    print(json.dumps(result, indent=2))
    print(table)


if __name__ == "__main__":
    main()
