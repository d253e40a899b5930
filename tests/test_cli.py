"""The command line as a user meets it: help, the embed -> cluster chain, one-line errors."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}


def nolabel(*args, cwd=None, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "nolabel.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=ENV, timeout=300
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"nolabel {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def assert_user_error(proc, *fragments):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:") and "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_help_lists_every_command():
    out = nolabel("--help").stdout
    for command in ("embed", "neighbors", "cluster", "evaluate", "run", "report", "predict", "export", "list", "demo"):
        assert command in out
    assert "--backbone" in nolabel("embed", "--help").stdout


def test_embed_neighbors_cluster_evaluate_on_digits(tmp_path):
    feats = tmp_path / "digits.npy"
    nolabel("embed", "digits", "--backbone", "pixels", "--out", feats)
    assert feats.exists() and (tmp_path / "digits.json").exists() and (tmp_path / "digits.items.npz").exists()
    out = nolabel("neighbors", feats, "--k", "10").stdout
    assert (tmp_path / "digits.knn10.npz").exists() and "purity" in out
    out = nolabel("cluster", feats, "--method", "kmeans", "--k", "10", "--seeds", "0,1").stdout
    assert "acc" in out and "+-" in out
    result = tmp_path / "digits.kmeans"
    assert (result / "summary.json").exists() and (result / "seed1" / "assignment.csv").exists()
    out = nolabel("evaluate", result / "seed0" / "assignment.npz", "--features", feats).stdout
    assert "nmi" in out and "ari" in out


def test_user_errors_are_one_line(tmp_path):
    assert_user_error(nolabel("embed", tmp_path / "missing", "--backbone", "pixels", "--out", tmp_path / "f.npy", check=False), "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_user_error(nolabel("embed", empty, "--backbone", "pixels", "--out", tmp_path / "f.npy", check=False), "no images")
    assert_user_error(nolabel("embed", "digits", "--backbone", "nosuch:thing", "--out", tmp_path / "f.npy", check=False))
    feats = tmp_path / "d.npy"
    nolabel("embed", "digits", "--backbone", "pixels", "--out", feats)
    assert_user_error(nolabel("cluster", feats, "--method", "kmeans", "--k", "5000", check=False), "5000")
    assert_user_error(nolabel("cluster", feats, "--method", "nope", "--k", "3", check=False), "unknown method")
    assert_user_error(nolabel("cluster", feats, "--method", "kmeans", "--k", "3", "-p", "bogus=1", check=False), "bogus")
    assert_user_error(nolabel("run", "digits", "--k", "1", "--out", tmp_path / "r", check=False), "at least 2")
    # --split reaches the loader: the train split's file is the one reported missing
    assert_user_error(nolabel("run", f"mnist:{empty}", "--split", "train", "--k", "3", "--out", tmp_path / "r2", check=False),
                      "train-images")
    assert_user_error(nolabel("report", tmp_path / "nothing", check=False), "not a nolabel run folder")


def test_list_commands():
    assert "kmeans" in nolabel("list", "methods").stdout
    assert "pixels" in nolabel("list", "backbones").stdout
    assert "digits" in nolabel("list", "datasets").stdout


def test_cluster_plain_embeddings_made_elsewhere(tmp_path):
    """A bare (N, d) .npy (no sidecar, no item index) clusters with a warning; ids are row numbers."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(c, 0.1, size=(20, 8)) for c in (-1.0, 1.0)]).astype(np.float32)
    np.save(tmp_path / "mine.npy", x)
    proc = nolabel("cluster", tmp_path / "mine.npy", "--k", "2")
    assert "has no sidecar mine.json: read as plain (40, 8) embeddings" in proc.stderr
    csv = (tmp_path / "mine.kmeans" / "seed0" / "assignment.csv").read_text().splitlines()
    rows = [line.split(",") for line in csv[1:]]
    assert [r[0] for r in rows] == [str(i) for i in range(40)]
    assert len({r[1] for r in rows[:20]}) == 1 and {r[1] for r in rows[:20]} != {r[1] for r in rows[20:]}
    np.save(tmp_path / "ints.npy", np.arange(8).reshape(4, 2))
    assert_user_error(nolabel("cluster", tmp_path / "ints.npy", "--k", "2", check=False), "int64 array", "nolabel embed")


def test_run_prints_the_wall_time_of_every_stage(tmp_path):
    """`nolabel run` to a log file: each computed stage logs its seconds (the neighbours too),
    the report prints its own, and closing lines (<= 80 columns) give every stage's wall time; a second
    run, served from the cache, says its times are those first computed."""
    args = ("run", "digits", "-b", "pixels", "--methods", "kmeans,scan", "--k", "10", "-p", "scan.epochs=2",
            "--out", tmp_path / "r")
    out = nolabel(*args).stdout
    assert "neighbours: done in" in out and "scan: done in" in out
    assert re.search(r"report: .*report\.html \(\d+\.\d s\)", out.replace("\n", ""))
    lines = out.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("wall seconds per stage"))
    assert all(len(l) <= 80 for l in lines[start:])
    line = " ".join(lines[start:])
    for stage in ("features", "neighbours", "kmeans", "scan", "report", "this command"):
        assert re.search(rf"{stage} \d+\.\d", line), (stage, line)
    again = nolabel(*args, "--no-report").stdout
    assert "done in" not in again and "report:" not in again
    again = " ".join(again.splitlines())
    assert re.search(r"\(cached ones as first computed\): features \d+\.\d, .*scan \d+\.\d; this command", again)
    assert re.search(r"neighbours \d+\.\d", again)


def test_output_into_a_closed_pipe_ends_without_a_traceback():
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "nolabel", "embed", "--help"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # the reader is gone before the help is written, as with `| head -0`
    err = proc.stderr.read().decode()
    assert proc.wait() != 0 and "Traceback" not in err, err[-800:]


def test_cluster_estimates_k_when_asked(tmp_path):
    """`cluster --k auto` picks K without labels, as `run` does, and keeps the estimate beside the results."""
    import json

    import numpy as np

    rng = np.random.default_rng(0)
    centres = np.eye(8)[:3] * 5.0
    x = np.concatenate([rng.normal(c, 0.2, size=(40, 8)) for c in centres]).astype(np.float32)
    np.save(tmp_path / "blobs.npy", x)
    out = nolabel("cluster", tmp_path / "blobs.npy", "--k", "auto", "--k-max", "8", "-o", tmp_path / "res").stdout
    assert "k: estimated 3 clusters" in out
    assert json.loads((tmp_path / "res" / "k_estimate.json").read_text())["k"] == 3
    labels = [line.split(",")[1] for line in (tmp_path / "res" / "seed0" / "assignment.csv").read_text().splitlines()[1:]]
    assert len(set(labels)) == 3
    assert_user_error(nolabel("cluster", tmp_path / "blobs.npy", "--k", "many", check=False), "'many'", "auto")


def test_embed_without_a_backbone_says_which_it_used(tmp_path):
    """No --backbone: the data's default, as `nolabel run` picks it, named on the console and in the sidecar."""
    import json

    import numpy as np
    from PIL import Image

    from nolabel.backbones import default_for

    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray((rng.random((24, 24, 3)) * 255).astype("uint8")).save(folder / f"{i}.png")
    feats = tmp_path / "p.npy"
    out = nolabel("embed", folder, "--out", feats).stdout
    spec = default_for("image", image_side=24)  # 24 px pictures: read whole at 160 px
    assert f"backbone: {spec} (the default for image data of 24 px" in " ".join(out.split())
    assert json.loads((tmp_path / "p.json").read_text())["backbone"]["spec"] == spec
    assert np.load(feats).shape[0] == 4
