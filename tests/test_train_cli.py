"""The end-to-end image commands at small scale on CPU (the CIFAR-10 recipe, waiting for a GPU at
full scale): pretext -> SCAN -> self-label, SeLa and LSD-C, on 200 CIFAR-10 train images, 1 epoch each."""
import json
import subprocess
import sys

import pytest

from conftest import shared_path

CLASSES = 4
PER_CLASS = 50


def nolabel(*args, cwd):
    proc = subprocess.run([sys.executable, "-m", "nolabel", *map(str, args)], capture_output=True, text=True, cwd=cwd)
    assert proc.returncode == 0, proc.stdout[-1500:] + proc.stderr[-1500:]
    return proc.stdout


@pytest.fixture(scope="module")
def cifar_subset(tmp_path_factory):
    """200 CIFAR-10 train images of 4 classes, linked into a class-per-folder tree."""
    train = shared_path("datasets", "cifar10-jpeg", "train")
    root = tmp_path_factory.mktemp("cifar200")
    for cls in sorted(p.name for p in train.iterdir())[:CLASSES]:
        (root / cls).mkdir()
        for image in sorted((train / cls).iterdir())[:PER_CLASS]:
            (root / cls / image.name).symlink_to(image)
    return root


def test_pretext_scan_selflabel_sela_lsdc_small_scale(cifar_subset, tmp_path):
    small = ["--epochs", "1", "--batch-size", "50"]
    nolabel("pretext", cifar_subset, "--out", "simclr.safetensors", "--arch", "small_cnn", "--width", "8",
            "--image-size", "16", "--optimizer", "adam", *small, cwd=tmp_path)
    assert (tmp_path / "simclr.safetensors").exists() and (tmp_path / "simclr.json").exists()
    out = nolabel("train", cifar_subset, "--method", "scan", "--backbone", "simclr.safetensors", "--k", CLASSES,
                  "--out", "scan", *small, cwd=tmp_path)
    assert "scan: ACC" in out
    nolabel("train", cifar_subset, "--method", "selflabel", "--from", "scan", "--out", "selflabel",
            "-p", "threshold=0.3", *small, cwd=tmp_path)
    for method in ("sela", "lsdc"):
        nolabel("train", cifar_subset, "--method", method, "--backbone", "simclr.safetensors", "--k", CLASSES,
                "--out", method, *small, cwd=tmp_path)
    for folder in ("scan", "selflabel", "sela", "lsdc"):
        metrics = json.loads((tmp_path / folder / folder / "seed0" / "metrics.json").read_text())
        assert 0.25 <= metrics["acc"] <= 1.0  # 4 classes: chance is 0.25 at least
        assert (tmp_path / folder / folder / "seed0" / "model" / "backbone.safetensors").exists()


def test_train_writes_a_run_folder_that_report_and_predict_read(tmp_path):
    """pretext -> train scan on the 1,797 digits (at 16 x 16) -> report -> predict: a whole-network run is a run folder."""
    small = ["--epochs", "1", "--batch-size", "50"]
    nolabel("pretext", "digits", "--out", "pre.safetensors", "--task", "rotnet", "--arch", "small_cnn", "--width", "8",
            "--image-size", "16", "--optimizer", "adam", "--split", "test", *small, cwd=tmp_path)
    out = nolabel("train", "digits", "--method", "scan", "--backbone", "pre.safetensors", "--k", "10", "--out", "run",
                  "--split", "test", "-p", "n_neighbors=5", *small, cwd=tmp_path)
    assert "scan: ACC" in out
    manifest = json.loads((tmp_path / "run" / "run.json").read_text())
    assert manifest["results"][0]["name"] == "scan" and manifest["config"]["normalize"] is False
    assert 0.0 < manifest["results"][0]["metrics"]["acc"]["mean"] <= 1.0
    nolabel("report", "run", cwd=tmp_path)
    assert (tmp_path / "run" / "report.html").stat().st_size > 1000
    nolabel("predict", "run", "digits", "--out", "pred.csv", cwd=tmp_path)
    from nolabel.assignments import Assignment

    predicted = Assignment.load(tmp_path / "pred.npz")
    trained = Assignment.load(tmp_path / "run" / "scan" / "seed0" / "assignment.npz")
    assert (predicted.clusters == trained.clusters).mean() > 0.99  # the same network on the same images


def test_train_user_errors(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nolabel", "train", "digits", "--method", "scan", "--out", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "needs --backbone" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "nolabel", "train", "digits", "--method", "nope", "--out", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown end-to-end method" in proc.stderr
