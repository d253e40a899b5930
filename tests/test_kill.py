"""A ``nolabel run`` killed with SIGKILL resumes to the result of an uninterrupted run.

Each test starts ``python -m nolabel run ...`` as a subprocess, waits until a given
stage is under way, sends SIGKILL, checks that nothing half-written looks finished,
reruns the same command to completion and compares it with an uninterrupted run of the
same settings (same seed) in another folder. They need the real data in ``../shared``
(feature extraction) or use scikit-learn's digits (training), and run on the CPU.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest

from nolabel.features import load_features
from nolabel.pipeline import load_run

pytestmark = pytest.mark.slow  # end-to-end: each test starts three `nolabel run` processes

CIFAR_PER_CLASS = 150  # 1,500 images: a few seconds of ResNet-20 on two cores, 6 batches of 256


# ---- helpers ---------------------------------------------------------------------------
def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", NO_COLOR="1", TERM="dumb", COLUMNS="200")
    env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def _command(data: str, out: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "nolabel", "run", data, *args, "--out", str(out), "--no-report", "--device", "cpu"]


class Run:
    """A ``nolabel run`` subprocess with stdout and stderr going to files (no pipe to fill)."""

    def __init__(self, cmd: list[str], cwd: Path, tag: str):
        self.stdout_path = cwd / f"{tag}.stdout"
        self.stderr_path = cwd / f"{tag}.stderr"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=out, stderr=err)

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait(self, timeout: float = 240) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill_when(self, ready: Callable[[], object], timeout: float = 120, poll: float = 0.005) -> object:
        """SIGKILL the process as soon as ``ready()`` returns something truthy; return that.

        Returns None when the process ended (or ``timeout`` passed) first.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            seen = ready()
            if seen:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                return seen if self.proc.returncode == -signal.SIGKILL else None
            time.sleep(poll)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        return None

    def describe(self) -> str:
        return f"rc {self.proc.returncode}\nstdout:\n{self.stdout[-3000:]}\nstderr:\n{self.stderr[-3000:]}"


def _run_to_end(cmd: list[str], cwd: Path, tag: str) -> Run:
    run = Run(cmd, cwd, tag)
    rc = run.wait()
    assert rc == 0, f"`{' '.join(cmd)}` failed:\n{run.describe()}"
    return run


def _stage(out: Path, prefix: str) -> Optional[Path]:
    found = sorted((out / "stages").glob(f"{prefix}-*")) if (out / "stages").is_dir() else []
    assert len(found) <= 1, f"several {prefix} stages in {out}: {found}"
    return found[0] if found else None


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _check_finished(out: Path) -> dict:
    """Every stage of a finished run is complete, nothing partial is left, run.json is valid."""
    manifest = json.loads((out / "run.json").read_text())  # valid JSON or the test fails here
    for stage in (out / "stages").iterdir():
        assert (stage / "done.json").is_file(), f"{stage.name} has no done.json after the run finished"
        assert isinstance(json.loads((stage / "done.json").read_text()), dict)
        assert not list(stage.glob("*.partial.*")), f"partial files left in {stage}: {list(stage.glob('*.partial.*'))}"
    load_features(out / manifest["features"])  # array and sidecar agree
    return manifest


def _compare_runs(resumed: Path, reference: Path) -> None:
    a, b = load_run(resumed), load_run(reference)
    fa = np.load(resumed / a.manifest["features"])
    fb = np.load(reference / b.manifest["features"])
    assert fa.shape == fb.shape and np.allclose(fa, fb, rtol=1e-5, atol=1e-6)
    for name in [r["name"] for r in b.results]:
        ra, rb = a.assignment(name), b.assignment(name)
        assert np.array_equal(ra.clusters, rb.clusters), f"{name}: the resumed run assigns differently"
        assert np.array_equal(ra.ids, rb.ids)
        assert np.allclose(ra.probabilities, rb.probabilities, atol=1e-5)
    metrics = lambda run: {r["name"]: r["metrics"] for r in run.results}  # noqa: E731
    assert metrics(a) == metrics(b)
    assert a.manifest["k"] == b.manifest["k"] and a.manifest["dataset"] == b.manifest["dataset"]


def _mtimes(paths: list[Path]) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in paths}


# ---- kill during feature extraction ---------------------------------------------------
@pytest.fixture
def cifar_subset(shared, tmp_path) -> Path:
    """The first ``CIFAR_PER_CLASS`` test images of each CIFAR-10 class, copied into a folder."""
    source = shared("datasets", "cifar10-jpeg", "test")
    root = tmp_path / "cifar-subset"
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        (root / folder.name).mkdir(parents=True)
        for image in sorted(folder.glob("*.jpg"))[:CIFAR_PER_CLASS]:
            shutil.copyfile(image, root / folder.name / image.name)
    return root


def test_sigkill_during_feature_extraction_resumes_to_the_same_result(shared, cifar_subset, tmp_path):
    weights = shared("weights", "resnet_cifar10", "resnet20-12fca82f.th")
    args = ("--backbone", f"local:{weights}", "--method", "kmeans", "--k", "10", "--seeds", "0")
    killed_out, reference_out = tmp_path / "killed", tmp_path / "reference"
    cmd = _command(str(cifar_subset), killed_out, *args)

    def extraction_under_way():
        """(stage, rows done) once a flushed batch exists and the stage is not finished."""
        stage = _stage(killed_out, "features")
        if stage is None or (stage / "done.json").exists():
            return None
        state = _read_json(stage / "features.partial.json")
        if state and 0 < state.get("done", 0) < state["settings"]["count"]:
            return stage, int(state["done"])
        return None

    seen = None
    for attempt in range(3):  # a kill that misses (the run ended first) is retried afresh
        shutil.rmtree(killed_out, ignore_errors=True)
        run = Run(cmd, tmp_path, f"killed{attempt}")
        seen = run.kill_when(extraction_under_way)
        if seen:
            break
        assert run.proc.returncode in (0, None, -signal.SIGKILL), f"the run failed:\n{run.describe()}"
    assert seen, "could not kill `nolabel run` during feature extraction in 3 tries"
    stage, rows_done = seen
    n = len(list(cifar_subset.rglob("*.jpg")))

    # The killed stage looks unfinished: no done.json, no final array, a resumable partial state.
    assert not (stage / "done.json").exists()
    assert not (stage / "features.npy").exists() and not (stage / "features.json").exists()
    state = _read_json(stage / "features.partial.json")
    assert state is not None and rows_done <= state["done"] < n, state
    rows_done = state["done"]  # the kill may land a batch or two after the poll saw it
    assert (stage / "features.partial.npy").is_file()
    assert not (killed_out / "run.json").exists()
    assert _stage(killed_out, "method-kmeans") is None

    resumed = _run_to_end(cmd, tmp_path, "resumed")
    # The extraction continued from the flushed rows (the log, one line per stage off a terminal, says so).
    assert f"features: resuming the unfinished stage ({rows_done} of {n} items were done)" in resumed.stdout, (
        f"the rerun did not resume from row {rows_done}:\n{resumed.stdout[-2000:]}"
    )
    _check_finished(killed_out)

    _run_to_end(_command(str(cifar_subset), reference_out, *args), tmp_path, "reference")
    _check_finished(reference_out)
    assert _stage(killed_out, "features").name == _stage(reference_out, "features").name  # same settings hash...
    _compare_runs(killed_out, reference_out)  # ...and the same features, labels and metrics


# ---- kill during training ----------------------------------------------------------------
SCAN_ARGS = ("--backbone", "pixels", "--method", "scan", "--k", "10", "--seeds", "0",
             "-p", "scan.epochs=20", "-p", "scan.n_heads=2")


def test_sigkill_during_method_training_resumes_to_the_same_result(tmp_path):
    killed_out, reference_out = tmp_path / "killed", tmp_path / "reference"
    cmd = _command("digits", killed_out, *SCAN_ARGS)

    def training_under_way(run: Run, delay: float) -> Callable[[], bool]:
        """True ``delay`` s after the pipeline announced the scan fit, while the fit is not saved."""
        announced: list[float] = []

        def ready() -> bool:
            if not announced:
                if "scan: K=10" not in run.stdout:
                    return False
                announced.append(time.monotonic())
            if time.monotonic() - announced[0] < delay:
                return False
            stage = _stage(killed_out, "method-scan")
            return stage is None or not (stage / "seed0" / "metrics.json").exists()

        return ready

    killed = False
    for attempt, delay in enumerate((1.0, 0.3, 0.0)):  # shorter waits if the fit outran the kill
        shutil.rmtree(killed_out, ignore_errors=True)
        run = Run(cmd, tmp_path, f"killed{attempt}")
        killed = bool(run.kill_when(training_under_way(run, delay)))
        if killed:
            break
        assert run.proc.returncode in (0, None, -signal.SIGKILL), f"the run failed:\n{run.describe()}"
    assert killed, "could not kill `nolabel run` while it trained SCAN in 3 tries"

    # Killed mid-fit: earlier stages finished, the method stage is not, no manifest yet.
    features = _stage(killed_out, "features")
    assert features is not None and (features / "done.json").is_file()
    knn = features / "features.knn20.npz"
    assert knn.is_file()
    method = _stage(killed_out, "method-scan")
    assert method is None or not (method / "done.json").exists()
    assert method is None or not (method / "seed0" / "metrics.json").exists()
    assert not (killed_out / "run.json").exists()
    before = _mtimes([features / "done.json", features / "features.npy", knn])

    resumed = _run_to_end(cmd, tmp_path, "resumed")
    assert _mtimes(list(before)) == before, "the rerun recomputed the features or the neighbours"
    assert "features:" not in resumed.stdout and "neighbours:" not in resumed.stdout
    assert "scan: K=10" in resumed.stdout  # the method stage, and only it, ran again
    _check_finished(killed_out)

    _run_to_end(_command("digits", reference_out, *SCAN_ARGS), tmp_path, "reference")
    _check_finished(reference_out)
    assert _stage(killed_out, "method-scan").name == _stage(reference_out, "method-scan").name
    _compare_runs(killed_out, reference_out)
