"""The run folder can be trusted: changed data is recomputed (and the log says why), a
damaged stage is recomputed, two runs never write one folder at once, and results of
runs into the same folder accumulate in run.json."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from nolabel.errors import NolabelError
from nolabel.fingerprint import fingerprint
from nolabel.pipeline import RUN_VERSION, Pipeline, load_run, read_manifest

ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "OMP_NUM_THREADS": "1"}


def _photos(folder, n_per_class=6, seed=0):
    rng = np.random.default_rng(seed)
    for c, colour in enumerate([(220, 40, 40), (40, 220, 40)]):
        (folder / f"c{c}").mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            _save(folder / f"c{c}" / f"{i}.png", colour, rng)


def _save(path, colour, rng):
    Image.fromarray(np.clip(np.array(colour) + rng.normal(0, 15, (6, 6, 3)), 0, 255).astype(np.uint8)).save(path)


def fit(data, out, **kw):
    lines = []
    run = Pipeline(data=str(data), backbone="pixels", k=2, out=out, **kw).fit(progress=False, log=lines.append)
    return run, lines


def test_fingerprint_sees_content_count_and_edits(tmp_path):
    (tmp_path / "a.txt").write_text("one")
    before = fingerprint(tmp_path)
    assert fingerprint(tmp_path) == before
    (tmp_path / ".hidden").write_text("ignored")
    assert fingerprint(tmp_path) == before
    (tmp_path / "b.txt").write_text("two")
    assert fingerprint(tmp_path)["files"] == 2
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * (9 << 20))
    first, st = fingerprint(big), big.stat()
    with open(big, "r+b") as f:  # same size, edited in the first MiB, mtime restored
        f.write(b"y")
    os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert fingerprint(big)["sha256"] != first["sha256"]


def test_changed_added_and_removed_files_are_recomputed(tmp_path):
    data = tmp_path / "photos"
    _photos(data)
    out = tmp_path / "run"
    run, lines = fit(data, out)
    assert run.manifest["dataset"]["count"] == 12 and len(run.assignment().clusters) == 12

    run, lines = fit(data, out)  # unchanged: everything from the cache, nothing logged as recomputed
    assert not any("recomputing" in line or "items done" in line for line in lines), lines

    rng = np.random.default_rng(1)
    for i in range(3):  # overwrite 3 images with other pictures
        _save(data / "c0" / f"{i}.png", (40, 40, 220), rng)
    run, lines = fit(data, out)
    assert any(line.startswith("features: recomputing: data changed since it was cached: 12 files") for line in lines), lines
    assert run.manifest["dataset"]["count"] == 12

    for i in range(4):  # add 4
        _save(data / "c1" / f"new{i}.png", (40, 220, 40), rng)
    run, lines = fit(data, out)
    assert any("data changed" in line and "16 files" in line and "was 12 files" in line for line in lines), lines
    assert run.manifest["dataset"]["count"] == 16 and len(run.assignment().clusters) == 16
    assert any(line.startswith("kmeans: recomputing: the features were recomputed") for line in lines), lines

    for i in range(2):  # remove 2
        (data / "c0" / f"{i + 3}.png").unlink()
    run, lines = fit(data, out)
    assert any("14 files" in line and "was 16 files" in line for line in lines), lines
    assert run.manifest["dataset"]["count"] == 14 and len(load_run(out).assignment().clusters) == 14


def test_local_weights_file_is_part_of_the_key(tmp_path):
    from nolabel.pipeline import backbone_identity

    ckpt = tmp_path / "w.safetensors"
    ckpt.write_bytes(b"abc")
    first = backbone_identity(f"local:{ckpt}")
    ckpt.write_bytes(b"abcd")
    assert backbone_identity(f"local:{ckpt}")["fingerprint"] != first["fingerprint"]
    assert backbone_identity("pixels")["fingerprint"] is None


def test_a_done_marker_without_its_files_is_recomputed(tmp_path):
    """Defect 3's leftover: done.json present, features.json gone -> recomputed, not a traceback."""
    data = tmp_path / "photos"
    _photos(data)
    out = tmp_path / "run"
    run, _ = fit(data, out)
    features = out / run.manifest["features"]
    features.with_suffix(".json").unlink()
    run, lines = fit(data, out)
    assert any("damaged" in line and "recomputing" in line for line in lines), lines
    assert features.with_suffix(".json").exists() and len(run.assignment().clusters) == 12
    model_state = out / run.results[0]["dir"] / "seed0" / "model" / "state.safetensors"
    model_state.write_bytes(b"\0" * 10)
    run, lines = fit(data, out)
    assert any(line.startswith("kmeans: the cached stage") and "damaged" in line for line in lines), lines
    run.model()


def test_two_concurrent_runs_never_share_a_folder(tmp_path):
    """Run A holds the folder (paused inside a stage); run B stops with a one-line error;
    A then finishes and the folder loads."""
    data = tmp_path / "photos"
    _photos(data)
    out = tmp_path / "run"
    inside, release, errors = threading.Event(), threading.Event(), []

    def log(line):
        inside.set()
        release.wait(30)

    def run_a():
        try:
            Pipeline(data=str(data), backbone="pixels", k=2, out=out).fit(progress=False, log=log)
        except Exception as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=run_a)
    thread.start()
    assert inside.wait(30)
    with pytest.raises(NolabelError, match="another nolabel run is writing into"):
        Pipeline(data=str(data), backbone="pixels", k=2, out=out).fit(progress=False, log=lambda m: None)
    release.set()
    thread.join(60)
    assert not errors and len(load_run(out).assignment().clusters) == 12


def test_a_second_process_gets_one_line_while_the_folder_is_locked(tmp_path):
    data = tmp_path / "photos"
    _photos(data)
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time, filelock; l = filelock.FileLock(sys.argv[1]); l.acquire(); "
         "print('held', flush=True); time.sleep(60)", str(out / ".lock")],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = subprocess.run([sys.executable, "-m", "nolabel", "run", str(data), "--k", "2", "--out", str(out)],
                              capture_output=True, text=True, env=ENV, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "another nolabel run is writing into" in lines[0], proc.stderr
    assert not (out / "run.json").exists()


def test_results_of_several_runs_accumulate(tmp_path):
    data = tmp_path / "photos"
    _photos(data)
    out = tmp_path / "run"
    fit(data, out, methods=["kmeans"])
    run, _ = fit(data, out, methods=["temi"], params={"temi": {"epochs": 2, "n_neighbors": 5}})
    assert [r["name"] for r in run.results] == ["temi", "kmeans"]
    again = load_run(out)
    assert [r["name"] for r in again.results] == ["temi", "kmeans"]
    assert again.model("kmeans") is not None and len(again.assignment("kmeans").clusters) == 12
    run, _ = fit(data, out, methods=["kmeans"], seeds=[1])  # same name: replaced, not duplicated
    assert [r["name"] for r in run.results] == ["kmeans", "temi"] and run.results[0]["seeds"] == [1]
    other = tmp_path / "other"  # other data: earlier results are dropped (and the log says so)
    shutil.copytree(data, other)
    run, lines = fit(other, out, methods=["kmeans"])
    assert [r["name"] for r in run.results] == ["kmeans"]
    assert any("made on other features" in line for line in lines)


def test_run_json_version_1_is_migrated(tmp_path):
    data = tmp_path / "photos"
    _photos(data)
    out = tmp_path / "run"
    fit(data, out)
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["version"] == RUN_VERSION and manifest["format"] == "nolabel-run"
    del manifest["format"]
    manifest["version"] = 1
    for result in manifest["results"]:
        for key in ("k", "seeds", "params", "then_params"):
            result.pop(key, None)
    (out / "run.json").write_text(json.dumps(manifest))
    migrated = read_manifest(out / "run.json")
    assert migrated["version"] == RUN_VERSION and migrated["results"][0]["k"] == 2
    assert len(load_run(out).assignment().clusters) == 12


def test_log_file_output_has_no_progress_frames_and_fits_80_columns(tmp_path):
    """Off a terminal: one line per stage, no carriage-return frames, the table within 80 columns."""
    data = tmp_path / "photos"
    _photos(data)
    env = {**ENV, "COLUMNS": "80"}
    proc = subprocess.run([sys.executable, "-m", "nolabel", "run", str(data), "--k", "2", "--seeds", "0,1", "--out", str(tmp_path / "run"),
                           "--no-report"], capture_output=True, text=True, env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("> features:") and "items done" in line for line in lines)
    table = lines[lines.index(next(line for line in lines if line.startswith("method"))):]
    assert all(len(line) <= 80 for line in table) and any(line.startswith("kmeans ") and "+-" in line for line in table), table


def test_fingerprint_of_a_copied_folder_is_kept_unless_it_is_large(tmp_path, monkeypatch):
    """Small and medium folders are identified by content (a copy, a re-mount with new
    mtimes, keeps the cache); above the budget by sizes and mtimes."""
    from nolabel import fingerprint as fp

    _photos(tmp_path / "a")
    first = fingerprint(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # new mtimes, same bytes
    for path in (tmp_path / "b").rglob("*.png"):
        os.utime(path, ns=(1, 10**18))
    assert fingerprint(tmp_path / "b") == first
    with open(tmp_path / "b" / "c0" / "0.png", "r+b") as f:  # same size and mtime, one byte changed
        f.seek(40)
        byte = f.read(1)
        f.seek(40)
        f.write(bytes([byte[0] ^ 1]))
    os.utime(tmp_path / "b" / "c0" / "0.png", ns=(1, 10**18))
    assert fingerprint(tmp_path / "b")["sha256"] != first["sha256"]
    monkeypatch.setattr(fp, "FOLDER_CONTENT_BYTES", 10)  # a "large" folder: sizes and mtimes only
    assert fingerprint(tmp_path / "a")["sha256"] != fingerprint(tmp_path / "b")["sha256"]


def test_a_changed_method_default_is_recomputed(tmp_path, monkeypatch):
    """The stage key holds every parameter the method runs with, defaults included: after an
    upgrade that changes a default, the cached result is not reused, and the log says which."""
    from nolabel.methods.kmeans import KMeans

    data = tmp_path / "photos"
    _photos(data)
    out = tmp_path / "run"
    fit(data, out)
    _, lines = fit(data, out)
    assert not any("recomputing" in line for line in lines), lines
    import inspect

    params = inspect.signature(KMeans.__init__).parameters
    names = [name for name, p in params.items() if p.default is not inspect.Parameter.empty]
    defaults = [params[name].default for name in names]
    defaults[names.index("n_init")] = 3  # an upgrade that changed k-means' restarts
    monkeypatch.setattr(KMeans.__init__, "__defaults__", tuple(defaults))
    _, lines = fit(data, out)
    assert any(line.startswith("kmeans: recomputing") and "n_init" in line for line in lines), lines
    _, lines = fit(data, out, methods=["kmeans+selflabel"])  # a second stage: said once, not parameter by parameter
    assert any(line == "kmeans+selflabel: recomputing: then null -> selflabel" for line in lines), lines
