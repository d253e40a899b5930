"""The whole chain with an on-disk cache: features -> neighbours -> methods -> report.

Each stage writes into ``RUN_DIR/stages/<stage>-<hash>/``, the hash covering every
setting that produced it, the hash of the stage it reads, and fingerprints of its
inputs: the data (:mod:`nolabel.fingerprint`: for a folder its files' relative paths,
sizes and mtimes; for a file its size, mtime and content hash) and a local backbone's
weights. Changed data or weights therefore give a new key and the stage is recomputed;
the log says why (what differs from the newest cached stage of the same kind).

A stage is complete when its ``done.json`` exists; it is written last, atomically, and
only after the stage's files have been loaded back. A cached stage whose files no longer
load is recomputed (the log says so). So a second run with the same settings does no
work, a changed setting redoes only the stages downstream of it, and a killed run
resumes: feature extraction continues from its last flushed batch, method fitting from
the last finished seed.

One run at a time writes into a run folder: ``fit`` holds ``RUN_DIR/.lock`` (the
``filelock`` package; released by the OS if the process dies), and a second run on
the same folder stops at once with a one-line error.

``RUN_DIR/run.json`` is the manifest the report, ``predict`` and ``export`` read
(layout in ``docs/run-folder.md``; format version :data:`RUN_VERSION`, older versions
are migrated on reading, newer ones refused). Runs into the same folder accumulate:
results of earlier runs made on the same features stay listed after the new ones
(a result of the same name is replaced).
"""
from __future__ import annotations

import hashlib
import inspect
import json
import shutil
import time
import zipfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import NolabelError
from .io import read_json, write_json

RUN_FORMAT = "nolabel-run"
RUN_VERSION = 2  # 2: "format", per-result "k", "seeds" and "params"; results accumulate


@dataclass
class RunConfig:
    """Every setting of a run; ``nolabel run`` flags and preset YAML keys map onto it."""

    data: str
    backbone: str | None = None  # None: backbones.default_for_data(the data), resolved by fit()
    methods: list[str] = field(default_factory=lambda: ["kmeans"])
    k: int | str = 10
    k_max: int | None = None
    then: str | None = None
    seeds: list[int] = field(default_factory=lambda: [0])
    split: str = "test"
    normalize: bool = True
    n_neighbors: int | None = None
    batch_size: int = 256
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    device: str | None = None
    text_column: str | None = None

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
        self.seeds = check_seeds(self.seeds)
        named = {part for entry in self.methods for part in entry.split("+")} | {self.then}
        from . import methods

        for name in sorted(n for n in named if n):  # a typo fails before any feature is extracted
            methods.get(name)
        if not isinstance(self.params, dict) or not all(isinstance(v, dict) for v in self.params.values()):
            raise NolabelError("params must map each method to its NAME: VALUE settings, e.g. {scan: {lr: 1e-4}}")
        unknown = sorted(set(self.params) - named)
        if unknown:
            raise NolabelError(f"params given for methods not in the run: {', '.join(unknown)}")
        from .params import coerce_params

        self.params = {name: coerce_params(methods.get(name), values, name) for name, values in self.params.items()}

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


MAX_SEED = 2**32 - 1  # numpy and torch seeds


def check_seeds(seeds: Any) -> list[int]:
    """Seeds as a non-empty list of integers in 0..2**32-1 (a one-line error otherwise)."""
    if isinstance(seeds, (int, str)) and not isinstance(seeds, bool):
        seeds = [seeds]
    out = []
    for seed in seeds if isinstance(seeds, (list, tuple)) else [seeds]:
        text = str(seed).strip()
        if isinstance(seed, bool) or not text.lstrip("-").isdigit():
            raise NolabelError(f"seeds must be integers, got {seed!r}")
        if not 0 <= int(text) <= MAX_SEED:
            raise NolabelError(f"seed {text} is out of range: seeds are integers from 0 to {MAX_SEED}")
        if int(text) in out:
            raise NolabelError(f"seed {text} is given twice: each seed is one more run (a repeated one would shrink the std)")
        out.append(int(text))
    if not out:
        raise NolabelError("no seed given: pass --seeds 0 (or 0,1,2)")
    return out


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
        self._progress = False

    # ---- stages --------------------------------------------------------------------
    def fit(self, progress: bool = True, log=print) -> "Pipeline":
        cfg = self.config
        if cfg.backbone is None:
            from .backbones import default_for_data

            cfg.backbone, note = default_for_data(self.dataset())
            log(note)
        check_backbone(cfg.backbone)  # before the data is read: a wrong spec fails in a second
        self._progress = progress
        with self._locked():
            self.manifest = {"format": RUN_FORMAT, "version": RUN_VERSION, "config": asdict(cfg), "timings": {}, "results": []}
            features_path = self._features_stage(progress, log)
            from .memory import as_float32

            x = as_float32(np.load(features_path, mmap_mode="r"))  # a large memory map stays one
            k = self._resolve_k(x, features_path, log)
            self.manifest["k"] = k
            needed = self._neighbors_needed(k, len(x), log)
            self.manifest["neighbors"] = None
            if needed:
                self.manifest["neighbors"] = self._rel(self._neighbors_stage(features_path, x, needed, log))
            for method in cfg.methods:
                self._method_stage(method, features_path, x, k, log)
            self._keep_earlier_results(log)
            self._write_manifest()
        return self

    @contextmanager
    def _locked(self):
        """Hold ``RUN_DIR/.lock`` while writing; a second writer gets a one-line error."""
        from filelock import FileLock, Timeout

        if self.out.exists() and not self.out.is_dir():
            raise NolabelError(f"--out {self.out} is a file; give a folder for the run (it is created if missing)")
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise NolabelError(f"cannot create the run folder {self.out}: {exc.strerror}") from None
        lock = FileLock(str(self.out / ".lock"), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise NolabelError(
                f"another nolabel run is writing into {self.out} (it holds {self.out / '.lock'}); "
                "wait for it to finish, or pass another --out"
            ) from None
        try:
            yield
        finally:
            lock.release()

    def _cached(self, stage: Path, kind: str, settings: dict[str, Any], check, log) -> bool:
        """Whether ``stage`` is complete and loads; logs why it is (re)computed otherwise."""
        if (stage / "done.json").exists():
            problem = check()
            if problem is None:
                return True
            log(f"{kind}: the cached stage {stage.name} is damaged ({problem}); recomputing it")
            shutil.rmtree(stage, ignore_errors=True)
            return False
        why = f"resuming the unfinished stage{_progress_note(stage)}" if stage.exists() else self._why_new(stage, settings)
        if why:
            log(f"{kind}: {why}")
        return False

    def _why_new(self, stage: Path, settings: dict[str, Any]) -> str | None:
        """What differs from the newest complete stage of the same kind (None when there is none)."""
        from .fingerprint import describe_change

        kind = stage.name.rsplit("-", 1)[0]
        cached = []
        for done in (self.out / "stages").glob(f"{kind}-*/done.json"):
            try:
                cached.append((done.stat().st_mtime, read_json(done)["settings"]))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        if not cached:
            return None
        old = max(cached, key=lambda pair: pair[0])[1]
        reasons = []
        for key, value in settings.items():
            before = old.get(key)
            if before == value:
                continue
            if isinstance(value, dict) and "fingerprint" in value:
                was = before.get("spec") if isinstance(before, dict) else before
                if was == value.get("spec") and not isinstance(before, dict):
                    reasons.append(f"{key} cached by an older nolabel without a fingerprint")
                elif was != value.get("spec"):
                    reasons.append(f"{key} {_short(was)} -> {_short(value.get('spec'))}")
                elif before.get("fingerprint") != value.get("fingerprint") and value.get("fingerprint"):
                    reasons.append(f"{key} changed since it was cached: {describe_change(before.get('fingerprint'), value['fingerprint'])}")
                else:
                    reasons.append(f"{key} changed")
            elif key == "features":
                reasons.append("the features were recomputed")
            elif key == "then_params" and old.get("then") != settings.get("then"):
                continue  # another second stage: "then" already says so
            elif isinstance(value, dict) and isinstance(before, dict):  # parameters: name only those that changed
                reasons += [f"{key}.{name} {_short(before.get(name))} -> {_short(value.get(name))}"
                            for name in sorted(set(value) | set(before)) if before.get(name) != value.get(name)]
            else:
                reasons.append(f"{key} {_short(before)} -> {_short(value)}")
        return "recomputing: " + "; ".join(reasons or ["settings changed"])

    def _features_stage(self, progress: bool, log) -> Path:
        from . import backbones
        from .features import extract_features
        from .items import save_items

        cfg = self.config
        settings = {
            "data": data_identity(cfg.data), "split": cfg.split, "backbone": backbone_identity(cfg.backbone),
            "normalize": cfg.normalize,
        }
        if cfg.text_column is not None:  # (absent otherwise, so earlier keys stay valid)
            settings["text_column"] = cfg.text_column
        stage = self.out / "stages" / stage_key("features", settings)
        path = stage / "features.npy"
        if not self._cached(stage, "features", settings, lambda: _features_problem(path), log):
            t0 = time.perf_counter()
            dataset = self.dataset()
            if isinstance(cfg.k, int) and cfg.k > len(dataset):  # before the features, not after
                raise NolabelError(f"cannot make {cfg.k} clusters from {len(dataset)} samples: lower --k")
            log(f"features: {cfg.backbone} on {len(dataset)} {dataset.modality} items")
            model = backbones.get(cfg.backbone, device=cfg.device, modality=dataset.modality)
            extract_features(dataset, model, path, batch_size=cfg.batch_size, normalize=cfg.normalize, progress=progress)
            save_items(path, dataset)
            problem = _features_problem(path)
            if problem is not None:
                raise NolabelError(f"the features just written to {stage} do not load back ({problem}); check the disk")
            seconds = time.perf_counter() - t0
            write_json(stage / "done.json", {"settings": settings, "seconds": seconds})
            log(f"features: {len(dataset)} items done in {seconds:.1f} s")
        self.manifest["features"] = self._rel(path)
        self.manifest["dataset"] = read_json(path.with_suffix(".json")).get("dataset", {})
        self.manifest["timings"]["features"] = read_json(stage / "done.json")["seconds"]
        return path

    def _resolve_k(self, x: np.ndarray, features_path: Path, log) -> int:
        if self.config.k != "auto":
            self.manifest["k_estimate"] = None
            return int(self.config.k)
        from .kestimate import estimate_k, estimate_lines

        k_max = self.config.k_max
        stage = features_path.parent / ("k_estimate.json" if k_max is None else f"k_estimate.kmax{k_max}.json")
        if stage.exists():
            estimate = read_json(stage)
        else:
            estimate = asdict(estimate_k(x, k_max=k_max, seed=self.config.seeds[0]))
            write_json(stage, estimate)
        self.manifest["k_estimate"] = estimate
        for line in estimate_lines(estimate):
            log(line)
        return int(estimate["k"])

    def _neighbors_needed(self, k: int, n: int, log) -> int:
        """The most neighbours any method of the run needs (0: none); a method's default count
        becomes at most half the mean cluster size ``n // (2 k)`` and below ``n`` in its
        parameters (logged, :func:`~nolabel.clustering.fit_neighbors_to_size`)."""
        from . import methods
        from .clustering import fit_neighbors_to_size

        needs = []
        for entry in self.config.methods:
            method, _ = self._split(entry)  # a second stage reads its base's neighbours
            params, note = fit_neighbors_to_size(method, self.config.params.get(method, {}), n, k)
            if note:
                self.config.params = {**self.config.params, method: params}
                log(f"note: {note}")
            needs.append(methods.get(method).neighbors_needed(params))
        if self.config.n_neighbors is not None and max(needs, default=0):
            if self.config.n_neighbors >= n:
                raise NolabelError(f"n_neighbors {self.config.n_neighbors} needs more than the {n} items of the data set; use at most {n - 1}")
            return max(self.config.n_neighbors, max(needs))
        return max(needs, default=0)

    def _neighbors_stage(self, features_path: Path, x: np.ndarray, k: int, log) -> Path:
        from .neighbors import knn

        path = features_path.parent / f"features.knn{k}.npz"
        if not path.exists():
            t0 = time.perf_counter()
            log(f"neighbours: {k}-NN of {len(x)} samples")
            nb = knn(x, k, device=self.config.device)
            nb.save(path)
            if nb.backend in ("faiss-ivf", "faiss-hnsw"):
                log(f"neighbours: approximate ({nb.backend.removeprefix('faiss-').upper()}), recall@{k} {nb.recall:.3f} against exact search on a sample")
            seconds = time.perf_counter() - t0
            write_json(path.with_suffix(".seconds.json"), {"seconds": seconds})
            log(f"neighbours: done in {seconds:.1f} s")
        timing = path.with_suffix(".seconds.json")  # (absent for neighbours cached by earlier versions)
        if timing.exists():
            self.manifest["timings"]["neighbors"] = read_json(timing)["seconds"]
        return path

    def _split(self, entry: str) -> tuple[str, str | None]:
        """A methods entry ``"scan"`` or ``"scan+selflabel"`` -> (method, second stage or the run's ``then``)."""
        method, _, then = entry.partition("+")
        return method, then or self.config.then

    def _method_stage(self, entry: str, features_path: Path, x: np.ndarray, k: int, log) -> None:
        from .clustering import fit_seeds, resolved_params

        cfg = self.config
        method, then = self._split(entry)
        params = cfg.params.get(method, {})
        then_params = cfg.params.get(then, {}) if then else {}
        name = method + (f"+{then}" if then else "")
        settings = {
            "features": features_path.parent.name, "method": method, "then": then, "k": k,
            "params": resolved_params(method, params), "then_params": resolved_params(then, then_params) if then else {},
            "seeds": cfg.seeds, "n_neighbors": cfg.n_neighbors,
        }
        stage = self.out / "stages" / stage_key(f"method-{method}", settings)
        if not self._cached(stage, name, settings, lambda: _method_problem(stage, cfg.seeds), log):
            t0 = time.perf_counter()
            log(f"{name}: K={k}, seeds {cfg.seeds}")
            neighbors = self.manifest.get("neighbors")
            fit_seeds(
                features_path, method, k, _with_progress(method, params, self._progress), cfg.seeds, then=then,
                neighbors_path=self.out / neighbors if neighbors else None, out_dir=stage, reuse_done=True, x=x,
                then_params=_with_progress(then, then_params, self._progress),
            )
            problem = _method_problem(stage, cfg.seeds)
            if problem is not None:
                raise NolabelError(f"the results just written to {stage} do not load back ({problem}); check the disk")
            seconds = time.perf_counter() - t0
            write_json(stage / "done.json", {"settings": settings, "seconds": seconds})
            log(f"{name}: done in {seconds:.1f} s")
        summary = read_json(stage / "summary.json")
        self.manifest["timings"][name] = read_json(stage / "done.json")["seconds"]
        self.manifest["results"].append({
            "name": name, "dir": self._rel(stage), "primary_seed": cfg.seeds[0], "metrics": summary["metrics"],
            "k": k, "seeds": cfg.seeds, "params": params, "then_params": then_params,
        })

    def _keep_earlier_results(self, log) -> None:
        """Append the results of ``run.json`` made on the same features by earlier runs
        (not those this run replaced by name, nor those whose stage is gone)."""
        path = self.out / "run.json"
        if not path.exists():
            return
        try:
            earlier = read_manifest(path)
        except NolabelError as exc:
            log(f"run.json: {exc}; writing a new one")
            return
        if earlier.get("features") != self.manifest["features"]:
            if earlier.get("results"):
                log(f"run.json: {len(earlier['results'])} earlier result(s) were made on other features "
                    "(data or backbone changed) and are no longer listed")
            return
        names = {r["name"] for r in self.manifest["results"]}
        kept = [r for r in earlier["results"] if r["name"] not in names and (self.out / r["dir"] / "done.json").exists()]
        self.manifest["results"].extend(kept)
        for result in kept:
            if result["name"] in earlier.get("timings", {}):
                self.manifest["timings"][result["name"]] = earlier["timings"][result["name"]]

    def _write_manifest(self) -> None:
        write_json(self.out / "run.json", self.manifest)

    def _rel(self, path: Path) -> str:
        return str(Path(path).relative_to(self.out))

    # ---- using a finished run ----------------------------------------------------------
    def dataset(self):
        if self._dataset is None:
            from .data import load_dataset

            self._dataset = load_dataset(self.config.data, split=self.config.split, **self._data_options(self.config.data))
        return self._dataset

    def _data_options(self, spec: Any) -> dict[str, Any]:
        """Loader keywords from the config: ``text_columns`` for CSV/TSV/JSONL data."""
        column = self.config.text_column
        if column is None:
            return {}
        text = str(spec)
        if not (text.startswith(("csv:", "jsonl:")) or Path(text).suffix.lower() in (".csv", ".tsv", ".jsonl")):
            raise NolabelError(f"--text-column applies to CSV/TSV/JSONL data, not to {text}")
        return {"text_columns": int(column) if column.lstrip("-").isdigit() else column}

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

    def _result(self, name: str | None) -> dict[str, Any]:
        self.result_dir(name)  # the errors for a missing run or name
        return self.results[0] if name is None else next(r for r in self.results if r["name"] == name)

    def model(self, name: str | None = None, seed: int | None = None):
        """The fitted method of result ``name`` (default: the first) for ``seed`` (default: its primary seed)."""
        from safetensors import SafetensorError

        from .methods import ClusterMethod

        seed = self._result(name).get("primary_seed", self.config.seeds[0]) if seed is None else seed
        folder = self.result_dir(name) / f"seed{seed}" / "model"
        try:
            return ClusterMethod.load(folder)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as exc:
            raise NolabelError(
                f"the fitted model in {folder} is damaged or missing ({_first_line(exc)}); "
                f"re-run `nolabel run` with --out {self.out} to recompute it"
            ) from None

    def assignment(self, name: str | None = None, seed: int | None = None):
        from .assignments import Assignment

        seed = self._result(name).get("primary_seed", self.config.seeds[0]) if seed is None else seed
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
            dataset = load_dataset(str(data), split=self.config.split, **self._data_options(data))
        else:
            dataset = items_dataset(list(data))
        method = self.model(name)  # a damaged run folder fails before any embedding
        model = backbones.get(self.config.backbone, device=self.config.device, modality=dataset.modality)
        x = embed_dataset(dataset, model, batch_size=batch_size or self.config.batch_size, normalize=self.config.normalize)
        self._check_dim(x.shape[1], dataset)
        return Assignment.from_estimator(method, x, ids=np.asarray(dataset.ids, dtype=str))

    def _check_dim(self, dim: int, dataset) -> None:
        """New items must embed to the run's feature size (e.g. pixels of images of another size do not)."""
        try:
            meta = read_json(self.out / Path(self.manifest["features"]).with_suffix(".json"))
        except (OSError, ValueError, KeyError, TypeError):
            return  # no sidecar to compare with: the method's own input check applies
        if meta.get("dim") in (None, dim):
            return
        shape = ((meta.get("backbone") or {}).get("preprocessing") or {}).get("item_shape")
        seen = f" ({'x'.join(map(str, shape))} images)" if shape else ""
        hint = (" resize them to the run's size, or make the run with a fixed size such as pixels:32"
                if dataset.modality == "image" else "")
        raise NolabelError(
            f"the new {dataset.modality} items give {dim} features with {self.config.backbone}, but the run's model "
            f"was fitted on {meta['dim']}{seen};{hint or ' give items like those of the run'}"
        )

    def report(self, out: str | Path | None = None) -> Path:
        from .report import build_report

        return build_report(self.out, out=out, dataset=self._dataset)  # reuse the loaded data when there is one


def load_run(path: str | Path) -> Pipeline:
    """A finished run, ready for ``predict``, ``report`` and ``export``."""
    path = Path(path)
    if path.is_file() and path.name == "run.json":
        path = path.parent
    if not path.is_dir():
        raise NolabelError(f"{path} is not a nolabel run folder (no such folder); create one with `nolabel run DATA --out {path}`")
    if not (path / "run.json").exists():
        raise NolabelError(f"{path} is not a nolabel run folder (no run.json); create one with `nolabel run`")
    manifest = read_manifest(path / "run.json")
    try:
        config = RunConfig(**manifest["config"])
    except TypeError as exc:
        raise NolabelError(f"{path / 'run.json'} has an invalid config ({exc}); re-run `nolabel run`") from None
    pipeline = Pipeline(config, out=path)
    pipeline.manifest = manifest
    return pipeline


def read_manifest(path: str | Path) -> dict[str, Any]:
    """``run.json`` checked and migrated to :data:`RUN_VERSION`; a one-line error when it cannot be."""
    path = Path(path)
    rerun = f"re-run `nolabel run ... --out {path.parent}` to rewrite it"
    try:
        manifest = read_json(path)
    except ValueError:
        raise NolabelError(f"{path} is damaged (not valid JSON); {rerun}") from None
    except OSError as exc:
        raise NolabelError(f"cannot read {path}: {exc.strerror}") from None
    if not isinstance(manifest, dict) or manifest.get("format", RUN_FORMAT) != RUN_FORMAT:
        raise NolabelError(f"{path} is not a nolabel run manifest; {rerun}")
    version = manifest.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise NolabelError(f"{path} has no valid format version (got {version!r}); {rerun}")
    if version > RUN_VERSION:
        raise NolabelError(
            f"{path} was written by a newer nolabel (run format {version}; this one reads up to {RUN_VERSION}); "
            "upgrade nolabel to read it"
        )
    missing = [key for key in ("config", "features", "results") if key not in manifest]
    if missing or not isinstance(manifest["results"], list) or not isinstance(manifest["config"], dict):
        raise NolabelError(f"{path} lacks {', '.join(missing) or 'a valid config or results'}; {rerun}")
    if version == 1:  # 1 -> 2: results carry their own K, seeds and parameters
        config = manifest["config"]
        for result in manifest["results"]:
            result.setdefault("k", manifest.get("k"))
            result.setdefault("seeds", config.get("seeds"))
            method = str(result.get("name", "")).partition("+")[0]
            result.setdefault("params", (config.get("params") or {}).get(method, {}))
        manifest["format"], manifest["version"] = RUN_FORMAT, RUN_VERSION
    return manifest


def check_backbone(spec: str) -> None:
    """Fail fast on an unknown backbone prefix or a missing ``local:`` checkpoint (before any data is read)."""
    from .backbones.spec import adapters, parse_spec, unknown_backbone

    parsed = parse_spec(spec)
    if parsed.prefix not in adapters:
        raise unknown_backbone(spec)
    if parsed.prefix == "pixels":  # cheap to build: checks its size and options
        from . import backbones

        backbones.get(spec, device="cpu")
    if parsed.prefix == "local":
        path = Path(parsed.body).expanduser()
        if not parsed.body or not path.is_file():
            raise NolabelError(f"no checkpoint file {parsed.body or '(empty)'} for --backbone {spec}; "
                               "give the .safetensors written by `nolabel pretext` (or another weights file)")


def data_identity(spec: str) -> dict[str, Any]:
    """The data spec with local paths resolved, and a fingerprint of what they hold.

    The path part is the argument of a registered format (``mnist:DIR``, ``csv:FILE``),
    or the whole spec; registered names without a path (``digits``) have no fingerprint.
    """
    from .data import registry
    from .fingerprint import fingerprint

    text = str(spec).strip()
    prefix, sep, rest = text.partition(":")
    if not sep and text in registry:  # e.g. digits
        prefix, rest = text, ""
    elif not (sep and prefix in registry):  # a path, as load_dataset reads it
        prefix, rest = "", text
    path = Path(rest).expanduser() if rest else None
    if path is None or not path.exists():
        return {"spec": text, "fingerprint": None}
    resolved = str(path.resolve())
    return {"spec": f"{prefix}:{resolved}" if prefix else resolved, "fingerprint": fingerprint(path)}


def backbone_identity(spec: str) -> dict[str, Any]:
    """The backbone spec and, when it names a local file or folder (``local:``, ``hf:DIR``,
    ``st:DIR``), a fingerprint of its weights."""
    from .backbones.spec import parse_spec
    from .fingerprint import fingerprint

    parsed = parse_spec(spec)
    weights = None
    if parsed.prefix in ("local", "hf", "st") and parsed.body:
        path = Path(parsed.body).expanduser()
        if path.exists():
            weights = fingerprint(path)
    return {"spec": spec, "fingerprint": weights}


def _features_problem(path: Path) -> str | None:
    """None when the features, their sidecar and item index load and agree, else what is wrong."""
    from .features import load_features, sidecar_path
    from .items import items_path, load_items

    for needed in (sidecar_path(path), items_path(path)):  # a stage's features always have both
        if not needed.is_file():
            return f"{needed.name} is missing"
    try:
        emb = load_features(path)
        items = load_items(path)
    except NolabelError as exc:
        return str(exc)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        return _first_line(exc)
    if len(items.ids) != len(emb):
        return f"{len(items.ids)} item ids for {len(emb)} feature rows"
    return None


def _method_problem(stage: Path, seeds: list[int]) -> str | None:
    """None when the summary and, per seed, the assignment, metrics and model files load."""
    from safetensors import SafetensorError, safe_open

    from .assignments import Assignment

    try:
        summary = read_json(stage / "summary.json")
        if not isinstance(summary, dict) or "metrics" not in summary:
            return "summary.json lacks metrics"
        for seed in seeds:
            folder = stage / f"seed{seed}"
            read_json(folder / "metrics.json")
            read_json(folder / "model" / "config.json")
            with safe_open(str(folder / "model" / "state.safetensors"), framework="pt"):
                pass
            Assignment.load(folder / "assignment.npz")
    except NolabelError as exc:
        return str(exc)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, SafetensorError) as exc:
        return _first_line(exc)
    return None


def _with_progress(method: str | None, params: dict[str, Any], progress: bool) -> dict[str, Any]:
    """``params`` plus ``progress=True`` for methods that train with a progress bar (not part of any key)."""
    if not progress or method is None or "progress" in params:
        return params
    from . import methods

    accepts = "progress" in inspect.signature(methods.get(method).__init__).parameters
    return {**params, "progress": True} if accepts else params


def _progress_note(stage: Path) -> str:
    """`` (256 of 1500 items were done)`` for an unfinished features stage, seeds for a method stage."""
    try:
        state = read_json(stage / "features.partial.json")
        return f" ({int(state['done'])} of {int(state['settings']['count'])} items were done)"
    except (OSError, ValueError, KeyError, TypeError):
        pass
    seeds = sorted(stage.glob("seed*/metrics.json"))
    return f" ({len(seeds)} seed(s) were done)" if seeds else ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _short(value: Any, width: int = 60) -> str:
    text = json.dumps(value, sort_keys=True, default=str) if not isinstance(value, str) else value
    return text if len(text) <= width else text[: width - 3] + "..."
