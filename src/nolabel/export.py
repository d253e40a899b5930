"""``nolabel export``: one folder per cluster holding its members, and ``clusters.csv``.

Members stored as files (image folders) are symlinked, or copied with ``copy=True``;
members held in memory (MNIST arrays, digits, texts) are written out: images as PNG,
texts as one ``.txt`` per item.
"""
from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

from .errors import NolabelError
from .io import atomic_path


def export_clusters(pipeline, to: str | Path, copy: bool = False, name: str | None = None) -> int:
    """Write ``to/cluster_<c>/...`` for every item and ``to/clusters.csv``; returns N."""
    if Path(to).exists() and not Path(to).is_dir():
        raise NolabelError(f"--to {to} is a file; give a folder (one sub-folder per cluster is made in it)")
    assignment = pipeline.assignment(name)
    dataset = pipeline.dataset()
    if len(dataset) != len(assignment.clusters):
        raise NolabelError(f"the data now has {len(dataset)} items but the run assigned {len(assignment.clusters)}: was it changed?")
    to = Path(to)
    width = len(str(int(assignment.clusters.max())))
    files = isinstance(dataset.source, list) and dataset.source and isinstance(dataset.source[0], (str, Path)) and dataset.modality == "image"
    rows = []
    for i, (cluster, confidence) in enumerate(zip(assignment.clusters, assignment.confidences)):
        folder = to / f"cluster_{int(cluster):0{width}d}"
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{i:06d}_" + Path(str(dataset.ids[i])).name.replace(os.sep, "_")
        if files:
            source = Path(dataset.source[i]).resolve()
            target = folder / (stem if Path(stem).suffix else stem + source.suffix)
            target.unlink(missing_ok=True)
            if copy:
                shutil.copy2(source, target)
            else:
                target.symlink_to(source)
        elif dataset.modality == "image":
            target = folder / (Path(stem).stem + ".png")
            with atomic_path(target, suffix=".png") as tmp:
                dataset.load(i).save(tmp, format="PNG")
        else:
            target = folder / (Path(stem).stem + ".txt")
            with atomic_path(target) as tmp:
                tmp.write_text(str(dataset.load(i)))
        rows.append((dataset.ids[i], int(cluster), f"{float(confidence):.6f}", str(target.relative_to(to))))
    with atomic_path(to / "clusters.csv") as tmp:
        with tmp.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["item_id", "cluster", "confidence", "file"])
            writer.writerows(rows)
    return len(rows)
