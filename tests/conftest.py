"""Shared fixtures: the real data in ``../shared`` (tests skip cleanly without it)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NOLABEL_SHARED", ROOT.parent / "shared"))

torch.set_num_threads(min(2, os.cpu_count() or 1))


def shared_path(*parts: str) -> Path:
    """A path under ``../shared``; skips the calling test when it does not exist."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the shared data folder beside the repository)")
    return path


@pytest.fixture
def shared():
    return shared_path


@pytest.fixture
def mnist_fresh_network(tmp_path):
    """1,000 MNIST test images (labels taken off), their labels, a fresh small_cnn (width 8,
    seeded) saved as a checkpoint, and the images' pixel 10-NN: the set-up of the tests that
    show whole-network training learning."""
    import numpy as np

    from nolabel.backbones.archs import archs
    from nolabel.backbones.local import save_backbone_checkpoint
    from nolabel.data import load_dataset
    from nolabel.neighbors import knn

    data = load_dataset(f"mnist:{shared_path('datasets', 'mnist')}", split="test").subset(np.arange(1000))
    labels, data.labels = np.asarray(data.labels), None
    torch.manual_seed(0)
    ckpt = tmp_path / "bb.safetensors"
    save_backbone_checkpoint(archs.get("small_cnn")(in_chans=1, width=8), ckpt, "small_cnn",
                             {"in_chans": 1, "width": 8}, 28, 1, [0.13], [0.31])
    nbrs = knn(data.source.reshape(1000, -1).astype(np.float32), 10, backend="torch", device="cpu").indices
    return data, labels, ckpt, nbrs
