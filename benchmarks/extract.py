"""Feature-extraction speed of EfficientNet-Lite0 (or ``--models`` lite0,lite1,lite2) against a
bare timm forward loop, and 20-NN purity per input size, on a class-balanced subset of a labelled
image set (``--data``: CIFAR-10 test by default; any ``nolabel`` data spec, e.g. ``mnist:DIR`` or a ``.mat``).

    .venv/bin/python benchmarks/extract.py                     # 100 images per class, sizes 224,160,128
    .venv/bin/python benchmarks/extract.py --per-class 20 --sizes 160   # quick look

For each input size S (``efficientnet-lite0?size=S``: resize to S / 0.875 bicubic, centre crop S):

- pipeline images/s: ``nolabel.features.embed_dataset`` on the subset (JPEG decoding and
  resizing in DataLoader workers, batched ``inference_mode`` forward, channels-last);
- floor images/s: the same model's plain ``model(x)`` under ``torch.no_grad`` on the already
  preprocessed tensors of the first ``--floor-n`` images, batch ``--batch``, NCHW (what a
  bare timm loop costs with decoding done for free);
- 20-NN purity (cosine, self excluded) of the L2-normalised features against the class
  folders (labels only score), and purity per second of pipeline time.

``--crops 0.875,1`` tries each crop fraction at every size (1: resize the whole image to S, no
border cut off; the default is the model's own 0.875). ``--norms`` also extracts the first size with ImageNet mean/std instead of the
config's (0.5, 0.5, 0.5), to check which normalisation the weights expect.
Writes benchmarks/results/extract.{json,md}. Wall times on a shared machine vary; the JSON
records the CPU count and torch threads.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def balanced_subset(dataset, per_class: int):
    """The first ``per_class`` items of every class, in dataset order."""
    labels = np.asarray(dataset.labels)
    keep = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)])
    return dataset.subset(np.sort(keep), name=f"{dataset.name}-{per_class}pc")


def purity20(x: np.ndarray, labels: np.ndarray) -> float:
    from nolabel.neighbors import knn, neighbor_purity

    return neighbor_purity(knn(x, 20, device="cpu").indices, labels)


def with_norm(backbone, mean, std):
    """The backbone with its Normalize step's mean/std replaced."""
    from torchvision.transforms import Normalize

    for step in backbone.transform.transforms:
        if isinstance(step, Normalize):
            step.mean, step.std = list(mean), list(std)
    backbone.preprocessing = dict(backbone.preprocessing, mean=list(mean), std=list(std))
    return backbone


def floor_rate(model: torch.nn.Module, tensors: torch.Tensor, batch: int) -> float:
    """Images/s of ``model(x)`` over ``tensors`` in batches (NCHW, no_grad), after one warm-up batch."""
    model = model.to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        model(tensors[:batch])
        start = time.perf_counter()
        for i in range(0, len(tensors), batch):
            model(tensors[i:i + batch])
    return len(tensors) / (time.perf_counter() - start)


def measure(dataset, spec: str, args, norm=None) -> dict:
    from nolabel import backbones
    from nolabel.features import auto_workers, embed_dataset

    backbone = backbones.get(spec, device="cpu", modality="image")
    if norm is not None:
        backbone = with_norm(backbone, *norm)
    workers = auto_workers(len(dataset), args.batch, backbone)
    start = time.perf_counter()
    x = embed_dataset(dataset, backbone, batch_size=args.batch, normalize=True, num_workers=workers)
    seconds = time.perf_counter() - start
    row = {"spec": spec, "mean": backbone.preprocessing["mean"], "std": backbone.preprocessing["std"],
           "input_size": backbone.preprocessing["input_size"][-1], "crop_pct": backbone.preprocessing["crop_pct"],
           "images": len(dataset), "workers": workers,
           "pipeline_seconds": seconds, "pipeline_images_per_s": len(dataset) / seconds,
           "purity20": purity20(x, np.asarray(dataset.labels))}
    row["purity_per_s"] = row["purity20"] / seconds
    if norm is None:
        n = min(args.floor_n, len(dataset))
        tensors = torch.stack([backbone.preprocess(dataset.load(i)) for i in range(n)])
        row["floor_images"] = n
        row["floor_images_per_s"] = floor_rate(backbone.model, tensors, args.batch)
        row["pipeline_over_floor"] = row["pipeline_images_per_s"] / row["floor_images_per_s"]
    print(json.dumps(row), flush=True)
    return row


def markdown(out: dict) -> str:
    lines = [
        "# EfficientNet-Lite feature extraction: speed against a bare timm loop, 20-NN purity per input size",
        "",
        f"Data: `{out.get('data', '../shared/datasets/cifar10-jpeg/test')}`, first {out['per_class']} images of each class "
        f"({out['images']} images), "
        f"batch {out['batch']}, {out['cpus']} CPUs ({out['torch_threads']} torch threads), shared machine. "
        "Pipeline = decode + resize in DataLoader workers + inference_mode forward (channels-last); "
        f"floor = bare `model(x)` on the first {out['rows'][0].get('floor_images', '?')} preprocessed tensors (NCHW, no_grad). "
        "Purity: 20-NN (cosine) on L2-normalised features, labels only score. The pipeline beats the floor "
        "mostly by channels-last (NHWC), which speeds EfficientNet's depthwise convolutions on CPU, and by "
        "decoding in a worker while the model runs.",
        "",
        "| model | input | crop | mean/std | pipeline img/s | floor img/s | pipeline / floor | 20-NN purity % | purity / s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in out["rows"]:
        norm = "0.5" if r["mean"][0] == 0.5 else "ImageNet"
        floor = f"{r['floor_images_per_s']:.1f}" if "floor_images_per_s" in r else "-"
        ratio = f"{r['pipeline_over_floor']:.2f}" if "pipeline_over_floor" in r else "-"
        lines.append(f"| {r['spec'].split('?')[0]} | {r['input_size']} | {r.get('crop_pct', 0.875):g} | {norm} | {r['pipeline_images_per_s']:.1f} | {floor} | {ratio} | "
                     f"{100 * r['purity20']:.1f} | {100 * r['purity_per_s']:.3f} |")
    lines += ["", f"Command: `{out['command']}`", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/datasets/cifar10-jpeg/test")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--models", default="efficientnet-lite0",
                        help="comma-separated offline backbones to measure (efficientnet-lite0/1/2)")
    parser.add_argument("--sizes", default="224,160,128")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--floor-n", type=int, default=256)
    parser.add_argument("--crops", default="", help="crop fractions (crop_pct) to try at every size, e.g. 0.875,1 "
                        "(default: the model's own)")
    parser.add_argument("--norms", action="store_true", help="also the first size with ImageNet mean/std")
    parser.add_argument("--out", default=str(RESULTS / "extract"))
    args = parser.parse_args()
    path = Path(args.data.split(":", 1)[1] if ":" in args.data and not Path(args.data).exists() else args.data)
    if not path.exists():
        sys.exit(f"no data at {args.data}: give a labelled image set (default ../shared/datasets/cifar10-jpeg/test)")
    from nolabel.data import load_dataset

    dataset = balanced_subset(load_dataset(args.data), args.per_class)
    sizes = [int(s) for s in args.sizes.split(",")]
    crops = [f"&crop={c}" for c in args.crops.split(",")] if args.crops else [""]
    models = args.models.split(",")
    rows = [measure(dataset, f"{m}?size={s}{c}", args) for m in models for s in sizes for c in crops]
    if args.norms:
        rows.append(measure(dataset, f"{models[0]}?size={sizes[0]}", args, norm=IMAGENET))
    out = {"data": args.data, "per_class": args.per_class, "images": len(dataset), "batch": args.batch,
           "cpus": len(os.sched_getaffinity(0)), "torch_threads": torch.get_num_threads(),
           "torch": torch.__version__, "machine": platform.machine(),
           "command": "python " + " ".join(sys.argv), "rows": rows}
    from nolabel.io import write_json

    write_json(Path(args.out + ".json"), out)
    Path(args.out + ".md").write_text(markdown(out))
    print(markdown(out))


if __name__ == "__main__":
    main()
