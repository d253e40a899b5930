"""Every bad input a user can give gets one line, exit status 2, no traceback, a message
naming the problem, and leaves the earlier files of the run folder loadable.

Each case runs through the command line (in-process through ``nolabel.cli.main``, and a
representative set as real subprocesses) and, where the Python API can express it,
through the API (a :class:`NolabelError` naming the same thing).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from nolabel import cli
from nolabel.data import load_dataset
from nolabel.errors import NolabelError
from nolabel.pipeline import Pipeline, RunConfig, load_run

ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "OMP_NUM_THREADS": "1"}


def quiet(msg):
    pass


def _image(path: Path, colour, size: int = 8, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour, dtype=np.float64) + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    photos = root / "photos"
    for c, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        (photos / f"class{c}").mkdir(parents=True)
        for i in range(8):
            _image(photos / f"class{c}" / f"{i}.png", colour, seed=10 * c + i)
    # a colour set whose one picture happens to have R = G = B (defect 2)
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(photos / "class0" / "gray_looking.png")
    other = root / "other-size"
    other.mkdir()
    for i in range(2):
        _image(other / f"{i}.png", (100, 100, 100), size=12, seed=i)
    run = root / "run"
    Pipeline(data=str(photos), backbone="pixels", methods=["kmeans"], k=3, out=run).fit(progress=False, log=quiet)
    afile = root / "afile.txt"
    afile.write_text("not a folder")
    bad_st = root / "bad.safetensors"
    bad_st.write_bytes((16).to_bytes(8, "little") + b"{not json at all")
    blank = root / "blank.txt"
    blank.write_text("\n   \n\n")
    return SimpleNamespace(root=root, photos=photos, other=other, run=run, afile=afile, bad_st=bad_st, blank=blank)


def damaged(world, how: str) -> Path:
    """A copy of the run folder with one file damaged."""
    copy = world.root / f"damaged-{how}"
    if copy.exists():
        return copy
    shutil.copytree(world.run, copy)
    manifest = load_run(copy).manifest
    model = copy / manifest["results"][0]["dir"] / "seed0" / "model"
    state = model / "state.safetensors"
    if how == "missing-state":
        state.unlink()
    elif how == "zeroed-state":
        state.write_bytes(b"\0" * state.stat().st_size)
    elif how == "truncated-state":
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    elif how == "truncated-run-json":
        text = (copy / "run.json").read_text()
        (copy / "run.json").write_text(text[: len(text) // 2])
    elif how == "invalid-config-json":
        (model / "config.json").write_text("{oops")
    elif how in ("future-version", "no-version"):
        data = json.loads((copy / "run.json").read_text())
        data["version"] = 99
        if how == "no-version":
            del data["version"]
        (copy / "run.json").write_text(json.dumps(data))
    else:
        raise ValueError(how)
    return copy


# ---- the cases: (id, CLI arguments, fragment the message names, API call or None) ------------------
def _run_args(w, *extra):
    return ["run", w.photos, "--k", "3", "--out", w.root / "out", "--no-report", *extra]


def _api_run(w, **kw):
    return lambda: Pipeline(RunConfig(data=str(w.photos), **{"k": 3, **kw}), out=w.root / "out-api").fit(progress=False, log=quiet)


def _predict(w, how):
    return lambda: load_run(damaged(w, how)).predict(str(w.photos))


CASES = [
    ("seed-negative", lambda w: _run_args(w, "--seeds", "-1"), "seed -1", lambda w: _api_run(w, seeds=[-1])),
    ("seed-huge", lambda w: _run_args(w, "--seeds", "99999999999999"), "99999999999999", lambda w: _api_run(w, seeds=[99999999999999])),
    ("seed-word", lambda w: _run_args(w, "--seeds", "0,x"), "'x'", lambda w: _api_run(w, seeds=["x"])),
    ("k-word", lambda w: _run_args(w, "--k", "abc"), "abc", lambda w: _api_run(w, k="abc")),
    ("k-one", lambda w: _run_args(w, "--k", "1"), "at least 2", lambda w: _api_run(w, k=1)),
    ("k-above-items", lambda w: _run_args(w, "--k", "40"), "40 clusters from 25", lambda w: _api_run(w, k=40)),
    ("seed-repeated", lambda w: _run_args(w, "--seeds", "0,1,0"), "seed 0 is given twice", lambda w: _api_run(w, seeds=[0, 1, 0])),
    ("method-typo", lambda w: _run_args(w, "--methods", "kmeans,scna"), "'scna'", lambda w: _api_run(w, methods="kmeans,scna")),
    ("out-is-a-file", lambda w: ["run", w.photos, "--k", "3", "--out", w.afile], "is a file",
     lambda w: lambda: Pipeline(data=str(w.photos), k=3, out=w.afile).fit(progress=False, log=quiet)),
    ("export-to-a-file", lambda w: ["export", w.run, "--to", w.afile], "is a file",
     lambda w: lambda: __import__("nolabel.export").export.export_clusters(load_run(w.run), w.afile)),
    ("embed-out-is-a-folder", lambda w: ["embed", w.photos, "-b", "pixels", "--out", w.root], "is a folder", None),
    ("pixels-absurd-size", lambda w: _run_args(w, "-b", "pixels:30000"), "pixels:30000", lambda w: _api_run(w, backbone="pixels:30000")),
    ("backbone-unknown", lambda w: _run_args(w, "-b", "nosuch:thing"), "nosuch:thing", lambda w: _api_run(w, backbone="nosuch:thing")),
    ("backbone-local-missing", lambda w: _run_args(w, "-b", f"local:{w.root / 'no.safetensors'}"), "no.safetensors",
     lambda w: _api_run(w, backbone=f"local:{w.root / 'no.safetensors'}")),
    ("backbone-bad-safetensors", lambda w: _run_args(w, "-b", f"local:{w.bad_st}"), "bad.safetensors",
     lambda w: _api_run(w, backbone=f"local:{w.bad_st}")),
    ("param-lr-word", lambda w: _run_args(w, "-m", "scan", "-p", "scan.lr=abc"), "scan.lr=abc", lambda w: _api_run(w, methods="scan", params={"scan": {"lr": "abc"}})),
    ("param-epochs-fraction", lambda w: _run_args(w, "-m", "scan", "-p", "scan.epochs=1.5"), "scan.epochs=1.5",
     lambda w: _api_run(w, methods="scan", params={"scan": {"epochs": 1.5}})),
    ("param-heads-list", lambda w: _run_args(w, "-m", "scan", "-p", "scan.n_heads=[1,2]"), "scan.n_heads",
     lambda w: _api_run(w, methods="scan", params={"scan": {"n_heads": [1, 2]}})),
    ("param-n-init-word", lambda w: _run_args(w, "-p", "kmeans.n_init=abc"), "kmeans.n_init=abc",
     lambda w: _api_run(w, params={"kmeans": {"n_init": "abc"}})),
    ("param-nan", lambda w: _run_args(w, "-m", "temi", "-p", "temi.lr=.nan"), "temi.lr=",
     lambda w: _api_run(w, methods="temi", params={"temi": {"lr": float("nan")}})),
    ("param-negative-lr", lambda w: _run_args(w, "-m", "scan", "-p", "scan.lr=-1e-4"), "> 0",
     lambda w: _api_run(w, methods="scan", params={"scan": {"lr": -1e-4}})),
    ("param-momentum-above-one", lambda w: _run_args(w, "-m", "temi", "-p", "temi.prior_momentum=2"), "between 0 and 1",
     lambda w: _api_run(w, methods="temi", params={"temi": {"prior_momentum": 2}})),
    ("param-unknown-name", lambda w: _run_args(w, "-p", "kmeans.bogus=1"), "bogus", lambda w: _api_run(w, params={"kmeans": {"bogus": 1}})),
    ("param-no-method-with-several", lambda w: _run_args(w, "--methods", "kmeans,temi", "-p", "lr=1e-3"), "name the method", None),
    ("param-other-method", lambda w: _run_args(w, "-p", "scan.lr=1e-4"), "scan", lambda w: _api_run(w, params={"scan": {"lr": 1e-4}})),
    ("neighbours-more-than-items", lambda w: _run_args(w, "-m", "temi", "-p", "temi.n_neighbors=40"), "temi.n_neighbors",
     lambda w: _api_run(w, methods="temi", params={"temi": {"n_neighbors": 40}})),
    ("text-column-on-images", lambda w: _run_args(w, "--text-column", "body"), "--text-column", lambda w: _api_run(w, text_column="body")),
    ("text-all-blank", lambda w: ["run", w.blank, "--k", "2", "-b", "st:all-MiniLM-L6-v2", "--out", w.root / "out"], "blank",
     lambda w: lambda: load_dataset(str(w.blank))),
    ("train-from-missing", lambda w: ["train", w.photos, "-m", "selflabel", "--from", w.root / "missing" / "model", "--out", w.root / "t"],
     "missing/model", None),
    ("cluster-param-word", lambda w: ["cluster", w.run / load_run(w.run).manifest["features"], "--k", "3", "-p", "n_init=many"],
     "kmeans.n_init=many", None),
    ("cluster-neighbours-more-than-items", lambda w: ["cluster", w.run / load_run(w.run).manifest["features"], "--k", "3", "-m", "temi",
                                                     "-p", "n_neighbors=40", "--out", w.root / "cl"], "temi.n_neighbors", None),
    ("unknown-option", lambda w: _run_args(w, "--bogus"), "--bogus", None),
    ("data-missing", lambda w: ["run", w.root / "nothing-here", "--k", "3", "--out", w.root / "out"], "nothing-here",
     lambda w: lambda: Pipeline(data=str(w.root / "nothing-here"), k=3, out=w.root / "out-api").fit(progress=False, log=quiet)),
    ("report-not-a-run", lambda w: ["report", w.photos], "not a nolabel run folder", lambda w: lambda: load_run(w.photos)),
    ("predict-missing-state", lambda w: ["predict", damaged(w, "missing-state"), w.photos, "--out", w.root / "p.csv"],
     "state.safetensors", lambda w: _predict(w, "missing-state")),
    ("predict-zeroed-state", lambda w: ["predict", damaged(w, "zeroed-state"), w.photos, "--out", w.root / "p.csv"],
     "damaged", lambda w: _predict(w, "zeroed-state")),
    ("predict-truncated-state", lambda w: ["predict", damaged(w, "truncated-state"), w.photos, "--out", w.root / "p.csv"],
     "damaged", lambda w: _predict(w, "truncated-state")),
    ("predict-truncated-run-json", lambda w: ["predict", damaged(w, "truncated-run-json"), w.photos, "--out", w.root / "p.csv"],
     "run.json is damaged", lambda w: _predict(w, "truncated-run-json")),
    ("predict-invalid-config-json", lambda w: ["predict", damaged(w, "invalid-config-json"), w.photos, "--out", w.root / "p.csv"],
     "damaged", lambda w: _predict(w, "invalid-config-json")),
    ("predict-future-version", lambda w: ["predict", damaged(w, "future-version"), w.photos, "--out", w.root / "p.csv"],
     "newer nolabel", lambda w: _predict(w, "future-version")),
    ("predict-no-version", lambda w: ["predict", damaged(w, "no-version"), w.photos, "--out", w.root / "p.csv"],
     "format version", lambda w: _predict(w, "no-version")),
    ("predict-other-image-size", lambda w: ["predict", w.run, w.other, "--out", w.root / "p.csv"], "8x8",
     lambda w: lambda: load_run(w.run).predict(str(w.other))),
]
IDS = [c[0] for c in CASES]
API_CASES = [c for c in CASES if c[3] is not None]


def call_cli(args, capsys, monkeypatch) -> tuple[int, str, str]:
    import warnings

    monkeypatch.setattr(sys, "argv", ["nolabel", *map(str, args)])
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # main() replaces it
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def assert_one_line_error(code, err, fragment):
    lines = [line for line in err.strip().splitlines() if line.strip() and not line.startswith("warning:")]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err
    assert fragment in lines[0], lines[0]


def assert_run_still_loads(world):
    run = load_run(world.run)
    assert len(run.assignment().clusters) == 25
    run.model()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cli_bad_input(case, world, capsys, monkeypatch):
    _, args, fragment, _ = case
    code, _, err = call_cli(args(world), capsys, monkeypatch)
    assert_one_line_error(code, err, fragment)
    assert_run_still_loads(world)


@pytest.mark.parametrize("case", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_bad_input(case, world):
    _, _, fragment, api = case
    with pytest.raises(NolabelError) as info:
        api(world)()
    message = str(info.value)
    assert "\n" not in message and fragment.lstrip("-") in message.replace("--", ""), message
    assert "Traceback" not in message
    assert_run_still_loads(world)


SUBPROCESS_CASES = ["seed-negative", "param-lr-word", "backbone-bad-safetensors", "predict-truncated-state", "unknown-option"]


def test_subprocess_bad_inputs(world):
    """A representative set as real processes (each pays the torch import): run side by side."""
    cases = {c[0]: c for c in CASES}
    procs = {
        name: subprocess.Popen([sys.executable, "-m", "nolabel", *map(str, cases[name][1](world))],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        for name in SUBPROCESS_CASES
    }
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=120)
        assert_one_line_error(proc.returncode, err, cases[name][2])
    assert_run_still_loads(world)


def test_gray_looking_photo_in_a_colour_set_runs(world):
    """Defect 2: the default pixels backbone on a colour folder with one R = G = B picture."""
    run = load_run(world.run)
    assert run.manifest["dataset"]["count"] == 25
    from nolabel.features import load_features

    assert load_features(world.run / run.manifest["features"]).array.shape == (25, 3 * 8 * 8)


def test_k_above_the_items_fails_before_the_features(world, tmp_path):
    """The item count is known once the data is listed: a K above it costs no extraction."""
    with pytest.raises(NolabelError, match="40 clusters from 25"):
        Pipeline(data=str(world.photos), k=40, out=tmp_path / "run").fit(progress=False, log=quiet)
    assert not list((tmp_path / "run").rglob("features*.npy"))


def test_small_set_runs_neighbour_methods_with_their_defaults(world, tmp_path):
    """25 items in 3 clusters: TEMI's default 50 neighbours and SCAN's 20 become 4, half a mean
    cluster (logged), and the run clusters the three colours; only a count the user set is
    refused (the cases above)."""
    lines = []
    run = Pipeline(data=str(world.photos), backbone="pixels", methods=["temi", "scan"], k=3, out=tmp_path / "run",
                   params={"temi": {"epochs": 3}, "scan": {"epochs": 3}}).fit(progress=False, log=lines.append)
    assert "note: temi: 25 items, fewer than its default 50 neighbours per item: using 4" in lines
    assert ("note: scan: 25 items in 3 clusters, about 8 per cluster: using 4 neighbours per item, "
            "not its default 20 (at most half a cluster)") in lines
    for result in run.manifest["results"]:
        assert len(run.assignment(result["name"]).clusters) == 25
        assert result["metrics"]["acc"]["mean"] >= 0.95, result["name"]  # three plain colours (and one grey picture)


def test_finite_huge_values_are_not_zeros(tmp_path):
    """Values around 1e30 are finite: normalised, clustered, not reported as all-zero rows."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (20, 4)) + 5, rng.normal(0, 1, (20, 4)) - 5]).astype(np.float32) * 1e30
    np.save(tmp_path / "huge.npy", x)
    run = Pipeline(data=str(tmp_path / "huge.npy"), backbone="pixels", k=2, out=tmp_path / "run").fit(progress=False, log=quiet)
    clusters = run.assignment().clusters
    assert sorted(np.bincount(clusters).tolist()) == [20, 20]


def test_disk_full_is_one_line_and_keeps_earlier_files(world, monkeypatch, capsys):
    import nolabel.feature_store as F

    class Full:
        free = 1000

    monkeypatch.setattr(F.shutil, "disk_usage", lambda path: Full)
    code, _, err = call_cli(["run", world.photos, "--k", "3", "-b", "pixels:4", "--out", world.run, "--no-report"], capsys, monkeypatch)
    assert_one_line_error(code, err, "disk full: need")
    assert_run_still_loads(world)
