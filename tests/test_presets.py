"""Every shipped preset parses, names registered methods and builds them with its parameters."""
import pytest

from nolabel import methods, presets
from nolabel.clustering import make_method
from nolabel.pipeline import RunConfig


@pytest.mark.parametrize("name", presets.names())
def test_preset_builds_its_methods(name):
    path = presets.preset_path(name)
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and len(first) > 30, "first line must say what the preset reproduces"
    cfg = RunConfig.from_yaml(path)
    for method in cfg.methods:
        est = make_method(method, int(cfg.k), cfg.params.get(method, {}), 0, cfg.then,
                          cfg.params.get(cfg.then, {}) if cfg.then else None)
        assert isinstance(est, methods.ClusterMethod)
        for key, value in cfg.params.get(cfg.then or "", {}).items():
            assert getattr(est, key) == value


def test_the_expected_presets_exist():
    assert {"kmeans_ssl", "temi_frozen", "sela_frozen", "scan_frozen", "lsdc_frozen", "cifar10_resnet56"} <= set(presets.names())
