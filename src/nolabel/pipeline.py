"""The whole chain with an on-disk cache: features -> neighbours -> methods -> report.

Each stage writes into ``RUN_DIR/stages/<stage>-<hash>/``, the hash covering every
setting that produced it and the hash of the stage it reads. A stage is complete when
its ``done.json`` (written last, atomically) exists, so a second run with the same
settings does no work, a changed setting redoes only the stages downstream of it, and
a killed run resumes: feature extraction continues from its last flushed batch, method
fitting from the last finished seed. ``RUN_DIR/run.json`` is the manifest the report,
``predict`` and ``export`` read (layout in ``docs/run-folder.md``).
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import NolabelError
from .io import read_json, write_json

RUN_VERSION = 1


@dataclass
class RunConfig:
    """Every setting of a run; ``nolabel run`` flags and preset YAML keys map onto it."""

    data: str
    backbone: str = "pixels"
    methods: list[str] = field(default_factory=lambda: ["kmeans"])
    k: int | str = 10
    then: str | None = None
    seeds: list[int] = field(default_factory=lambda: [0])
    split: str = "test"
    normalize: bool = True
    n_neighbors: int | None = None
    batch_size: int = 256
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    device: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.methods, str):
            self.methods = [m.strip() for m in self.methods.split(",") if m.strip()]
        if not self.methods:
            raise NolabelError("no method given: pass --method NAME or --methods a,b")
        if isinstance(self.k, str) and self.k != "auto":
            if not self.k.isdigit():
                raise NolabelError(f"--k must be an integer >= 2 or 'auto', got {self.k!r}")
            self.k = int(self.k)
        if isinstance(self.k, int) and self.k < 2:
            raise NolabelError(f"--k must be at least 2, got {self.k}")
        named = {part for entry in self.methods for part in entry.split("+")} | {self.then}
        unknown = sorted(set(self.params) - named)
        if unknown:
            raise NolabelError(f"params given for methods not in the run: {', '.join(unknown)}")

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> "RunConfig":
        """A preset file, with ``overrides`` (non-None values) taking precedence."""
        import yaml

        path = Path(path)
        if not path.exists():
            raise NolabelError(f"no preset file {path}; see `nolabel list presets`")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise NolabelError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise NolabelError(f"{path}: unknown keys {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "data" not in values:
            raise NolabelError("no data given: pass DATA or set `data:` in the preset")
        return cls(**values)


def stage_key(kind: str, settings: dict[str, Any]) -> str:
    blob = json.dumps(settings, sort_keys=True, default=str)
    return f"{kind}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


class Pipeline:
    """``Pipeline(config, out).fit()`` runs (or reuses) every stage; then ``predict``,
    ``report`` and ``results`` work on the run, as does ``load_run(out)`` later."""

    def __init__(self, config: RunConfig | None = None, out: str | Path = "runs/run", **kwargs: Any):
        self.config = config if config is not None else RunConfig(**kwargs)
        self.out = Path(out)
        self.manifest: dict[str, Any] = {}
        self._dataset = None

    # ---- stages --------------------------------------------------------------------
    def fit(self, progress: bool = True, log=print) -> "Pipeline":
        cfg = self.config
        self.manifest = {"version": RUN_VERSION, "config": asdict(cfg), "timings": {}, "results": []}
        features_path = self._features_stage(progress, log)
        x = np.asarray(np.load(features_path, mmap_mode="r"), dtype=np.float32)
        k = self._resolve_k(x, features_path, log)
        self.manifest["k"] = k
        needed = self._neighbors_needed(k)
        self.manifest["neighbors"] = None
        if needed:
            self.manifest["neighbors"] = self._rel(self._neighbors_stage(features_path, x, needed, log))
        for method in cfg.methods:
            self._method_stage(method, features_path, x, k, log)
        self._write_manifest()
        return self

    def _features_stage(self, progress: bool, log) -> Path:
        from . import backbones
        from .features import extract_features
        from .items import save_items

        cfg = self.config
        settings = {"data": _data_identity(cfg.data), "split": cfg.split, "backbone": cfg.backbone, "normalize": cfg.normalize}
        stage = self.out / "stages" / stage_key("features", settings)
        path = stage / "features.npy"
        if not (stage / "done.json").exists():
            t0 = time.perf_counter()
            dataset = self.dataset()
            log(f"features: {cfg.backbone} on {len(dataset)} {dataset.modality} items")
            model = backbones.get(cfg.backbone, device=cfg.device, modality=dataset.modality)
            extract_features(dataset, model, path, batch_size=cfg.batch_size, normalize=cfg.normalize, progress=progress)
            save_items(path, dataset)
            write_json(stage / "done.json", {"settings": settings, "seconds": time.perf_counter() - t0})
        self.manifest["features"] = self._rel(path)
        self.manifest["dataset"] = read_json(path.with_suffix(".json")).get("dataset", {})
        self.manifest["timings"]["features"] = read_json(stage / "done.json")["seconds"]
        return path

    def _resolve_k(self, x: np.ndarray, features_path: Path, log) -> int:
        if self.config.k != "auto":
            self.manifest["k_estimate"] = None
            return int(self.config.k)
        from .kestimate import estimate_k

        stage = features_path.parent / "k_estimate.json"
        if stage.exists():
            estimate = read_json(stage)
        else:
            estimate = asdict(estimate_k(x, seed=self.config.seeds[0]))
            write_json(stage, estimate)
        self.manifest["k_estimate"] = estimate
        log(f"k: estimated {estimate['k']} clusters ({estimate['method']})")
        return int(estimate["k"])

    def _neighbors_needed(self, k: int) -> int:
        from .clustering import make_method, neighbors_needed

        needs = []
        for entry in self.config.methods:
            method, then = self._split(entry)
            needs.append(neighbors_needed(make_method(method, k, self.config.params.get(method, {}), 0, then)) or 0)
        if self.config.n_neighbors is not None and max(needs, default=0):
            return max(self.config.n_neighbors, max(needs))
        return max(needs, default=0)

    def _neighbors_stage(self, features_path: Path, x: np.ndarray, k: int, log) -> Path:
        from .neighbors import knn

        path = features_path.parent / f"features.knn{k}.npz"
        if not path.exists():
            t0 = time.perf_counter()
            log(f"neighbours: {k}-NN of {len(x)} samples")
            knn(x, k, device=self.config.device).save(path)
            self.manifest["timings"]["neighbors"] = time.perf_counter() - t0
        return path

    def _split(self, entry: str) -> tuple[str, str | None]:
        """A methods entry ``"scan"`` or ``"scan+selflabel"`` -> (method, second stage or the run's ``then``)."""
        method, _, then = entry.partition("+")
        return method, then or self.config.then

    def _method_stage(self, entry: str, features_path: Path, x: np.ndarray, k: int, log) -> None:
        from .clustering import fit_seeds

        cfg = self.config
        method, then = self._split(entry)
        params = cfg.params.get(method, {})
        then_params = cfg.params.get(then, {}) if then else {}
        name = method + (f"+{then}" if then else "")
        settings = {
            "features": features_path.parent.name, "method": method, "then": then, "k": k,
            "params": params, "then_params": then_params, "seeds": cfg.seeds,
        }
        stage = self.out / "stages" / stage_key(f"method-{method}", settings)
        if not (stage / "done.json").exists():
            t0 = time.perf_counter()
            log(f"{name}: K={k}, seeds {cfg.seeds}")
            summary = fit_seeds(
                features_path, method, k, params, cfg.seeds, then=then, out_dir=stage, reuse_done=True, x=x,
                then_params=then_params,
            )
            write_json(stage / "done.json", {"settings": settings, "seconds": time.perf_counter() - t0})
        summary = read_json(stage / "summary.json")
        self.manifest["timings"][name] = read_json(stage / "done.json")["seconds"]
        self.manifest["results"].append(
            {"name": name, "dir": self._rel(stage), "primary_seed": cfg.seeds[0], "metrics": summary["metrics"]}
        )

    def _write_manifest(self) -> None:
        write_json(self.out / "run.json", self.manifest)

    def _rel(self, path: Path) -> str:
        return str(Path(path).relative_to(self.out))

    # ---- using a finished run ----------------------------------------------------------
    def dataset(self):
        if self._dataset is None:
            from .data import load_dataset

            self._dataset = load_dataset(self.config.data, split=self.config.split)
        return self._dataset

    @property
    def results(self) -> list[dict[str, Any]]:
        return self.manifest.get("results", [])

    def result_dir(self, name: str | None = None) -> Path:
        """The folder of result ``name`` (default: the first method of the run)."""
        if not self.results:
            raise NolabelError(f"{self.out} holds no fitted method: run `nolabel run` first")
        if name is None:
            return self.out / self.results[0]["dir"]
        for result in self.results:
            if result["name"] == name:
                return self.out / result["dir"]
        raise NolabelError(f"no result {name!r} in {self.out}; it has {', '.join(r['name'] for r in self.results)}")

    def model(self, name: str | None = None, seed: int | None = None):
        from .methods import ClusterMethod

        seed = self.config.seeds[0] if seed is None else seed
        return ClusterMethod.load(self.result_dir(name) / f"seed{seed}" / "model")

    def assignment(self, name: str | None = None, seed: int | None = None):
        from .assignments import Assignment

        seed = self.config.seeds[0] if seed is None else seed
        return Assignment.load(self.result_dir(name) / f"seed{seed}" / "assignment.npz")

    def predict(self, data: str | Sequence[Any], name: str | None = None, batch_size: int | None = None):
        """Assign new items with the run's backbone and fitted method.

        ``data`` is a data spec (folder, text file, ...), a :class:`~nolabel.data.base.Dataset`,
        or a list of image paths or texts. Returns an
        :class:`~nolabel.assignments.Assignment` (cluster and confidence per item).
        """
        from . import backbones
        from .assignments import Assignment
        from .data import items_dataset, load_dataset
        from .data.base import Dataset
        from .features import embed_dataset

        if isinstance(data, Dataset):
            dataset = data
        elif isinstance(data, (str, Path)):
            dataset = load_dataset(str(data), split=self.config.split)
        else:
            dataset = items_dataset(list(data))
        model = backbones.get(self.config.backbone, device=self.config.device, modality=dataset.modality)
        x = embed_dataset(dataset, model, batch_size=batch_size or self.config.batch_size, normalize=self.config.normalize)
        return Assignment.from_proba(self.model(name).predict_proba(x), ids=np.asarray(dataset.ids, dtype=str))

    def report(self, out: str | Path | None = None) -> Path:
        from .report import build_report

        return build_report(self.out, out=out, dataset=self._dataset)  # reuse the loaded data when there is one


def load_run(path: str | Path) -> Pipeline:
    """A finished run, ready for ``predict``, ``report`` and ``export``."""
    path = Path(path)
    if not (path / "run.json").exists():
        raise NolabelError(f"{path} is not a nolabel run folder (no run.json); create one with `nolabel run`")
    manifest = read_json(path / "run.json")
    pipeline = Pipeline(RunConfig(**manifest["config"]), out=path)
    pipeline.manifest = manifest
    return pipeline


def _data_identity(spec: str) -> str:
    """The data spec with local paths resolved, so the cache key names the data itself."""
    prefix, _, rest = spec.rpartition(":") if ":" in spec and not Path(spec).exists() else ("", "", spec)
    path = Path(rest).expanduser()
    resolved = str(path.resolve()) if path.exists() else rest
    return f"{prefix}:{resolved}" if prefix else resolved
