"""The cached pipeline: a second run does no work, a changed setting redoes only what
depends on it, predict agrees with the run, export lays out one folder per cluster."""
import csv

import numpy as np
import pytest

import nolabel.clustering
import nolabel.features
from nolabel.errors import NolabelError
from nolabel.pipeline import Pipeline, RunConfig, load_run


def quiet(msg):
    pass


def forbid(*args, **kwargs):
    raise AssertionError("this stage should have come from the cache")


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return Pipeline(data="digits", backbone="pixels", methods=["kmeans"], k=10, seeds=[0], out=out).fit(progress=False, log=quiet)


def test_run_scores_and_writes_a_manifest(digits_run):
    result = digits_run.results[0]
    assert result["name"] == "kmeans" and result["metrics"]["acc"]["mean"] > 0.6
    manifest = load_run(digits_run.out).manifest
    assert manifest["k"] == 10 and manifest["features"].startswith("stages/features-")
    assert (digits_run.out / manifest["features"]).exists()


def test_second_run_does_no_work(digits_run, monkeypatch):
    monkeypatch.setattr(nolabel.features, "extract_features", forbid)
    monkeypatch.setattr(nolabel.clustering, "fit_seeds", forbid)
    again = Pipeline(data="digits", backbone="pixels", methods=["kmeans"], k=10, seeds=[0], out=digits_run.out).fit(progress=False, log=quiet)
    assert again.results == digits_run.results


def test_changed_k_reuses_the_features(digits_run, monkeypatch):
    monkeypatch.setattr(nolabel.features, "extract_features", forbid)
    other = Pipeline(data="digits", backbone="pixels", methods=["kmeans"], k=12, seeds=[0], out=digits_run.out).fit(progress=False, log=quiet)
    assert other.manifest["k"] == 12 and other.results[0]["dir"] != digits_run.results[0]["dir"]
    assert np.load(other.result_dir() / "seed0" / "assignment.npz")["probabilities"].shape[1] == 12


def test_predict_agrees_with_the_run(digits_run):
    run = load_run(digits_run.out)
    subset = run.dataset().subset(range(100))
    predicted = run.predict(subset)
    np.testing.assert_array_equal(predicted.clusters, run.assignment().clusters[:100])
    assert predicted.ids.tolist() == subset.ids


def test_export_one_folder_per_cluster(digits_run, tmp_path):
    from nolabel.export import export_clusters

    run = load_run(digits_run.out)
    n = export_clusters(run, tmp_path / "export")
    assert n == 1797
    folders = [p for p in (tmp_path / "export").iterdir() if p.is_dir()]
    assert len(folders) == len(set(run.assignment().clusters.tolist()))
    assert sum(len(list(f.iterdir())) for f in folders) == 1797
    with open(tmp_path / "export" / "clusters.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1797 and (tmp_path / "export" / rows[0]["file"]).exists()


@pytest.mark.parametrize(
    "kwargs, message",
    [({"k": 1}, "at least 2"), ({"k": "many"}, "'auto'"), ({"methods": []}, "no method"),
     ({"params": {"scan": {}}}, "not in the run")],
)
def test_config_errors(kwargs, message):
    with pytest.raises(NolabelError, match=message):
        RunConfig(data="digits", **kwargs)


def test_preset_with_unknown_key(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("data: digits\nmethod: kmeans\n")
    with pytest.raises(NolabelError, match="unknown keys method"):
        RunConfig.from_yaml(preset)
