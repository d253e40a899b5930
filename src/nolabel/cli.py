"""The ``nolabel`` command line: embed -> neighbors -> cluster -> evaluate.

Every user error prints one line (``error: ...``) and exits with status 2, usage
errors (an unknown option, a value of the wrong type) included. Hyper-parameters use
one syntax everywhere: ``-p METHOD.NAME=VALUE`` (:mod:`nolabel.params`). Progress bars
show on a terminal; in a log file each stage writes one line. Torch, OpenMP and BLAS
use as many threads as the cores this process may run on, or ``OMP_NUM_THREADS``.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from dataclasses import MISSING, fields
from types import SimpleNamespace
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape as escape_markup
from rich.table import Table

from .errors import NolabelError, check_choice
from .pipeline import RunConfig

app = typer.Typer(
    name="nolabel",
    help="Classify images and texts without labels: features first, clustering second.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
list_app = typer.Typer(help="List what is registered: backbones, methods, datasets.", no_args_is_help=True)
app.add_typer(list_app, name="list")

#: the defaults of `nolabel run` (RunConfig's), shared by the commands that run one of its stages
RUN_DEFAULTS = SimpleNamespace(**{f.name: f.default for f in fields(RunConfig) if f.default is not MISSING})

console = Console(soft_wrap=True)  # log lines are never wrapped at 80 columns
err_console = Console(stderr=True, soft_wrap=True)


# ---- embed ---------------------------------------------------------------------------
@app.command()
def embed(
    data: str = typer.Argument(..., help="Data: a folder of images, a .txt/.csv of texts, a .mat/.npy file, 'digits', or FORMAT:DIR such as mnist:DIR."),
    backbone: Optional[str] = typer.Option(None, "--backbone", "-b", help="Feature extractor spec, e.g. timm:vit_small_patch16_224.dino, tv:resnet50, st:all-MiniLM-L6-v2, local:PATH, pixels (default: as for `nolabel run`, efficientnet-lite0 for images)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output .npy file (a .json sidecar and .items.npz are written beside it)."),
    split: str = typer.Option(RUN_DEFAULTS.split, help="Split for benchmark formats (mnist:, cifar10:, stl10: ...)."),
    batch_size: int = typer.Option(RUN_DEFAULTS.batch_size, help="Items per forward pass."),
    normalize: bool = typer.Option(RUN_DEFAULTS.normalize, "--normalize/--no-normalize", help="L2-normalise each embedding (as `nolabel run` does, so embed + cluster reproduces run)."),
    fp16: bool = typer.Option(False, "--fp16", help="Store embeddings as float16."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: cuda when available)."),
    workers: Optional[int] = typer.Option(None, help="DataLoader worker processes for image decoding (default: from the CPUs)."),
    text_column: Optional[str] = typer.Option(None, "--text-column", help="CSV/TSV/JSONL: the column or key (name or index) holding the text."),
) -> None:
    """Extract features of DATA with a frozen backbone (resumes a killed run)."""
    from . import backbones
    from .data import load_dataset
    from .features import extract_features
    from .items import save_items
    from .pipeline import check_backbone

    if backbone is not None:
        check_backbone(backbone)
    if out.is_dir():
        raise NolabelError(f"--out {out} is a folder; give the .npy file to write")
    options = {"text_columns": int(text_column) if text_column.lstrip("-").isdigit() else text_column} if text_column else {}
    dataset = load_dataset(data, split=split, **options)
    if backbone is None:
        backbone, note = backbones.default_for_data(dataset)
        console.print(note)
    from .features_sharded import join_torchrun

    join_torchrun(device)  # under torchrun: each process embeds its shards of the rows
    model = backbones.get(backbone, device=device, modality=dataset.modality)
    emb = extract_features(
        dataset, model, out, batch_size=batch_size, normalize=normalize,
        dtype="float16" if fp16 else "float32", num_workers=workers, progress=_show_progress(),
    )
    save_items(out, dataset)
    console.print(f"embeddings {emb.array.shape[0]} x {emb.array.shape[1]} ({emb.array.dtype}) -> {out}")


# ---- pretext -------------------------------------------------------------------------
@app.command()
def pretext(
    data: str = typer.Argument(..., help="Images to learn from (as for `nolabel embed`); labels are never read."),
    out: Path = typer.Option(..., "--out", "-o", help="Backbone checkpoint to write (.safetensors + .json); load it with --backbone local:OUT."),
    task: str = typer.Option("simclr", help="simclr (NT-Xent on two augmented views) or rotnet (4-way rotation)."),
    arch: str = typer.Option("resnet18_cifar", help="Backbone architecture: resnet18_cifar, small_cnn, resnet20_cifar ... or timm:NAME."),
    width: Optional[int] = typer.Option(None, help="Width of small_cnn (default 32)."),
    epochs: Optional[int] = typer.Option(None, help="Training epochs (default: the paper's, SimCLR 500, RotNet 100)."),
    batch_size: Optional[int] = typer.Option(None, help="Images per step (default: the paper's, SimCLR 512, RotNet 128)."),
    optimizer: str = typer.Option("sgd", help="sgd (paper) or adam (small CPU runs)."),
    lr: Optional[float] = typer.Option(None, help="Learning rate (default: 0.4 SGD for SimCLR, 0.1 for RotNet, 1e-3 Adam)."),
    temperature: float = typer.Option(0.1, help="NT-Xent temperature (SimCLR)."),
    image_size: Optional[int] = typer.Option(None, help="Side the images are resized to (default: their own)."),
    hflip: bool = typer.Option(True, "--hflip/--no-hflip", help="Random horizontal flips (turn off for digits and text)."),
    split: str = typer.Option("train", help="Split for benchmark formats."),
    seed: int = typer.Option(0, help="Seed of the initialisation, the order and the augmentations."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda ... (default: cuda when available)."),
) -> None:
    """Train a backbone without labels (SimCLR or RotNet); resumes a killed run from its last epoch."""
    from .data import load_dataset
    from .pretext import pretext_tasks, train_pretext

    pretext_tasks.get(task)  # an unknown name fails here, before the data are read
    dataset = load_dataset(data, split=split)
    arch_kwargs = {"width": width} if width else {}
    if arch.startswith("timm:"):
        arch, arch_kwargs = "timm", {**arch_kwargs, "name": arch.removeprefix("timm:")}
    options = {"temperature": temperature} if task == "simclr" else {}
    path = train_pretext(task, dataset, out, options=options, arch=arch, arch_kwargs=arch_kwargs, epochs=epochs,
                         batch_size=batch_size, optimizer=optimizer, lr=lr, image_size=image_size, device=device,
                         seed=seed, augment={"hflip": hflip})
    console.print(f"backbone -> {path} (use --backbone local:{path})")


# ---- train (end to end) ---------------------------------------------------------------
TRAIN_FIXED = ("self", "n_clusters", "seed", "device", "progress", "base")


@app.command()
def train(
    data: str = typer.Argument(..., help="Images (as for `nolabel embed`); labels, when present, only score the result."),
    method: str = typer.Option(..., "--method", "-m", help="scan, selflabel, sela or lsdc: the whole network is trained."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (checkpoint, model, assignment, metrics, run.json): `nolabel report/predict/export` read it."),
    backbone: Optional[Path] = typer.Option(None, "--backbone", "-b", help="Pretext checkpoint (.safetensors from `nolabel pretext`) to start from."),
    start: Optional[Path] = typer.Option(None, "--from", help="selflabel: the run folder of a whole-network run (e.g. of `nolabel train --method scan`)."),
    k: Optional[int] = typer.Option(None, "--k", "-k", help="Number of clusters (not needed with --from)."),
    epochs: Optional[int] = typer.Option(None, help="Training epochs (default: the method's whole-network default, 50)."),
    batch_size: Optional[int] = typer.Option(None, help="Images per step, per process under torchrun (default: the method's)."),
    lr: Optional[float] = typer.Option(None, help="Learning rate (default: the method's, 1e-4)."),
    param: list[str] = typer.Option([], "--param", "-p", help="Other parameter METHOD.NAME=VALUE (or NAME=VALUE), e.g. -p scan.n_heads=5."),
    split: str = typer.Option("train", help="Split for benchmark formats."),
    seed: int = typer.Option(0, help="Seed."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda ... (default: cuda when available; cuda:LOCAL_RANK under torchrun)."),
    resume: bool = typer.Option(True, "--resume/--restart", help="Go on from OUT/checkpoint.pt when its settings match."),
) -> None:
    """Train backbone + clustering heads end to end on images (SCAN, self-labelling, SeLa, LSD-C).

    Works under `torchrun --nproc_per_node N -m nolabel train ...` (DistributedDataParallel).
    """
    from . import methods
    from .network_run import TRAINERS, train_network
    from .train import distributed as D

    check_choice("end-to-end method", method, TRAINERS)
    given = {key: value for key, value in (("epochs", epochs), ("batch_size", batch_size), ("lr", lr)) if value is not None}
    extra = method_params(param, methods.get(method), method, allowed=(method,), fixed=tuple(given) + TRAIN_FIXED)
    run = train_network(data, method, out, backbone=backbone, start=start, k=k, params={**given, **extra.get(method, {})},
                        seed=seed, split=split, device=device, resume=resume, progress=D.is_main() and _show_progress())
    if run is None:
        return
    metrics = run.results[0]["metrics"]
    if metrics:
        console.print(f"{method}: " + "  ".join(f"{name.upper()} {100 * metrics[name]['mean']:.2f}"
                                               for name in ("acc", "nmi", "ari") if name in metrics))
    console.print(f"run -> {out} (nolabel report / predict / export read it)")


# ---- neighbors -----------------------------------------------------------------------
@app.command()
def neighbors(
    features: Path = typer.Argument(..., help="Embeddings .npy written by `nolabel embed`."),
    k: int = typer.Option(20, "--k", "-k", help="Neighbours per sample (SCAN: 20 for CIFAR, TEMI: 50)."),
    backend: str = typer.Option("auto", help="auto, torch (exact, chunked), faiss (exact), faiss-ivf or faiss-hnsw (approximate, recall measured)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output .npz (default: FEATURES stem + .knn<k>.npz)."),
    device: Optional[str] = typer.Option(None, help="Device for the torch backend."),
) -> None:
    """Mine the cosine k nearest neighbours of every sample (self excluded)."""
    from .features import load_features
    from .items import load_items
    from .neighbors import knn, neighbor_purity

    emb = load_features(features)
    nb = knn(emb.array, k, backend=backend, device=device)
    out = out or default_neighbors_path(features, k)
    nb.save(out)
    console.print(f"{nb.indices.shape[0]} x {k} neighbours -> {out}"
                  + (f" ({nb.backend}, recall@{k} {nb.recall:.3f} on a sample)" if nb.backend in ("faiss-ivf", "faiss-hnsw") else ""))
    labels = load_items(features).labels
    if labels is not None:
        table = Table("k", "neighbour purity (labels used only to score)")
        for kk in sorted({1, 5, 10, 20, 50, k} & set(range(1, k + 1))):
            table.add_row(str(kk), f"{100 * neighbor_purity(nb.indices[:, :kk], labels):.2f}%")
        console.print(table)


def default_neighbors_path(features: Path, k: int) -> Path:
    return features.with_name(features.name.removesuffix(".npy") + f".knn{k}.npz")


# ---- cluster ---------------------------------------------------------------------------
@app.command()
def cluster(
    features: Path = typer.Argument(..., help="Embeddings .npy written by `nolabel embed`."),
    method: str = typer.Option("kmeans", "--method", "-m", help="Clustering method (see `nolabel list methods`)."),
    k: str = typer.Option(..., "--k", "-k", help="Number of clusters, or 'auto' to estimate it without labels (as `nolabel run` does)."),
    k_max: Optional[int] = typer.Option(None, "--k-max", help="--k auto: the largest K tried (default min(N/10, max(50, 2 sqrt N), 1000))."),
    neighbors_file: Optional[Path] = typer.Option(None, "--neighbors", help="k-NN .npz from `nolabel neighbors` (otherwise methods that need neighbours mine them in memory)."),
    param: list[str] = typer.Option([], "--param", "-p", help="Hyper-parameter METHOD.NAME=VALUE (repeatable; NAME=VALUE means --method), e.g. -p scan.epochs=50."),
    seeds: str = typer.Option("0", help="Comma-separated seeds; with several, metrics are reported as mean +- std."),
    then: Optional[str] = typer.Option(None, "--then", help="A second stage on top of the fitted method, e.g. selflabel."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default: FEATURES stem + .<method>/)."),
) -> None:
    """Cluster precomputed embeddings; score against labels when the data has them."""
    from . import methods
    from .clustering import fit_seeds
    from .io import write_json

    owners = (method, then) if then else (method,)
    params: dict = {}
    for name in owners:
        params.update(method_params(param, methods.get(name), method, allowed=owners, only=name))
    seed_list = parse_seeds(seeds)
    out = out or features.with_name(features.name.removesuffix(".npy") + f".{method}{'+' + then if then else ''}")
    if out.exists() and not out.is_dir():
        raise NolabelError(f"--out {out} is a file; give a folder for the results")
    x, estimate = None, None
    if k.strip().lower() == "auto":
        x, estimate = _estimate_k(features, k_max, seed_list[0])
        n_clusters = estimate["k"]
    elif k.strip().isdigit():
        n_clusters = int(k)
    else:
        raise NolabelError(f"--k must be an integer >= 2 or 'auto', got {k!r}")
    summary = fit_seeds(features, method, n_clusters, params.get(method, {}), seed_list, then=then,
                        neighbors_path=neighbors_file, out_dir=out, then_params=params.get(then, {}) if then else None, x=x)
    if estimate is not None:
        write_json(out / "k_estimate.json", estimate)
    print_summary(summary)
    console.print(f"results -> {out}")


def _estimate_k(features: Path, k_max: int | None, seed: int) -> tuple:
    """``--k auto`` for ``cluster``: the embeddings (float32) and :func:`~nolabel.kestimate.estimate_k`
    as a dict, its pick and any range-edge warning printed."""
    import warnings
    from dataclasses import asdict

    from .features import load_features
    from .kestimate import estimate_k, estimate_lines
    from .memory import as_float32

    x = as_float32(load_features(features).array)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the edge warning is printed below, once
        estimate = asdict(estimate_k(x, k_max=k_max, seed=seed))
    for line in estimate_lines(estimate):
        console.print(line)
    return x, estimate


def method_params(pairs: list[str], target, default: str | None, allowed: tuple[str, ...],
                  only: str | None = None, fixed: tuple[str, ...] | None = None) -> dict[str, dict]:
    """``-p`` pairs typed against ``target``'s signature: ``{method: {name: value}}`` for the
    method ``only`` (default: all), refusing methods outside ``allowed``."""
    from .params import FIXED, coerce_params, parse_assignments

    parsed = parse_assignments(pairs, default_method=default)
    stray = sorted(set(parsed) - set(allowed))
    if stray:
        raise NolabelError(f"-p names method {stray[0]!r}, which this command does not run (it runs {', '.join(allowed)})")
    return {name: coerce_params(target, values, name, fixed=fixed or FIXED)
            for name, values in parsed.items() if only is None or name == only}


def parse_seeds(text: str) -> list[int]:
    from .pipeline import check_seeds

    return check_seeds([s for s in text.split(",") if s.strip()])


def print_summary(summary: dict) -> None:
    if not summary.get("metrics"):
        console.print(f"{summary['method']}: fitted {len(summary['seeds'])} seed(s); no labels, nothing to score")
        return
    table = Table(title=f"{summary['method']} on {summary['features']} ({len(summary['seeds'])} seed(s))")
    table.add_column("metric")
    table.add_column("mean +- std", justify="right")
    for name, stats in summary["metrics"].items():
        table.add_row(name, f"{100 * stats['mean']:.2f} +- {100 * stats['std']:.2f}")
    console.print(table)


# ---- evaluate --------------------------------------------------------------------------
@app.command()
def evaluate(
    assignment: Path = typer.Argument(..., help="Assignment .npz or .csv written by `nolabel cluster`."),
    features: Path = typer.Option(..., "--features", "-f", help="The embeddings .npy whose item index holds the labels."),
) -> None:
    """Score an assignment against the labels stored with the features."""
    from .assignments import Assignment
    from .items import load_items

    a = Assignment.load(assignment)
    labels = load_items(features).labels
    if labels is None:
        raise NolabelError(f"{features} has no labels to score against")
    metrics = a.score(labels)
    table = Table("metric", "value")
    for name, value in metrics.items():
        if isinstance(value, float):
            table.add_row(name, f"{100 * value:.2f}")
    console.print(table)


# ---- run / report / predict / export ------------------------------------------------------
@app.command()
def run(
    data: Optional[str] = typer.Argument(None, help="Data (as for `nolabel embed`); optional when the preset names it."),
    backbone: Optional[str] = typer.Option(None, "--backbone", "-b", help="Feature extractor spec (default: efficientnet-lite0 for images, pixels otherwise)."),
    method: Optional[str] = typer.Option(None, "--method", "-m", help="One clustering method."),
    methods_: Optional[str] = typer.Option(None, "--methods", help="Several methods, comma-separated, compared on the same cached features."),
    k: Optional[str] = typer.Option(None, "--k", "-k", help="Number of clusters, or 'auto' to estimate it without labels."),
    k_max: Optional[int] = typer.Option(None, "--k-max", help="--k auto: the largest K tried (default min(N/10, max(50, 2 sqrt N), 1000))."),
    then: Optional[str] = typer.Option(None, "--then", help="Second stage on top of each method, e.g. selflabel."),
    seeds: Optional[str] = typer.Option(None, help="Comma-separated seeds (default 0)."),
    split: Optional[str] = typer.Option(None, help="Split for benchmark formats such as mnist:DIR (default test)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="A preset YAML (see `nolabel list presets`); flags override it."),
    param: list[str] = typer.Option([], "--param", "-p", help="METHOD.NAME=VALUE hyper-parameter (repeatable), e.g. -p scan.epochs=50."),
    out: Path = typer.Option(Path("runs/run"), "--out", "-o", help="Run folder: every stage is cached here, keyed by its settings."),
    no_report: bool = typer.Option(False, "--no-report", help="Skip writing report.html."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, ... (default: cuda when available)."),
    text_column: Optional[str] = typer.Option(None, "--text-column", help="CSV/TSV/JSONL: the column or key (name or index) holding the text."),
) -> None:
    """Run the whole chain: features -> neighbours -> methods -> evaluation -> report."""
    from .pipeline import Pipeline, RunConfig

    overrides = {
        "data": data, "backbone": backbone, "then": then, "device": device, "split": split, "text_column": text_column,
        "methods": methods_ or method, "k": k, "k_max": k_max, "seeds": parse_seeds(seeds) if seeds else None,
    }
    if param:
        from .params import parse_assignments

        named = (methods_ or method or "").split(",")
        single = named[0].strip().partition("+")[0] if len(named) == 1 and "+" not in named[0] and not then else None
        overrides["params"] = parse_assignments(param, default_method=single or None)
    if config is not None:
        cfg = RunConfig.from_yaml(resolve_preset(config), **overrides)
    else:
        if data is None:
            raise NolabelError("no data given: nolabel run DATA ... (or --config PRESET naming it)")
        cfg = RunConfig(**{key: value for key, value in overrides.items() if value is not None})
    t0 = time.perf_counter()
    pipeline = Pipeline(cfg, out=out).fit(progress=_show_progress(), log=lambda msg: console.print(f"[dim]>[/] {msg}", highlight=False))
    print_comparison(pipeline)
    report_s = None
    if not no_report:
        t1 = time.perf_counter()
        path = pipeline.report()
        report_s = time.perf_counter() - t1
        console.print(f"report: {path} ({report_s:.1f} s)")
    console.print(timings_line(pipeline.manifest.get("timings") or {}, report_s, time.perf_counter() - t0),
                  highlight=False, markup=False)


def timings_line(timings: dict, report_s: float | None, total_s: float) -> str:
    """Wall seconds of every stage of a run, then this command's own, wrapped at 80 columns:
    a stage served from the cache shows the seconds it took when it was computed, marked so."""
    names = {"neighbors": "neighbours"}
    parts = [f"{names.get(name, name)} {float(s):.1f}" for name, s in timings.items() if isinstance(s, (int, float))]
    if report_s is not None:
        parts.append(f"report {report_s:.1f}")
    import textwrap

    return textwrap.fill(f"wall seconds per stage (cached ones as first computed): {', '.join(parts)}; "
                         f"this command {total_s:.1f} s", width=80, break_on_hyphens=False)


def resolve_preset(config: Path) -> Path:
    """A preset name (``scan_cifar10``) or a path to a YAML file."""
    from .presets import preset_path

    return config if config.exists() else preset_path(str(config))


COMPARISON_COLUMNS = (("acc", "ACC"), ("many_to_one_acc", "M2O-ACC"), ("nmi", "NMI"), ("ari", "ARI"))


def comparison_lines(pipeline) -> list[str]:
    """The result table of a run as plain lines that fit in 80 columns (for terminals and logs).

    Metrics are percentages, ``mean+-std`` over seeds (the std omitted for one seed);
    M2O-ACC is the many-to-one accuracy; long method names are shortened with "~".
    """
    cfg = pipeline.config
    dataset = pipeline.manifest.get("dataset", {})
    lines = [f"{dataset.get('name', cfg.data)}: {dataset.get('count', '?')} items, K={pipeline.manifest['k']}, "
             f"seeds {','.join(map(str, cfg.seeds))}", f"backbone {cfg.backbone}"]
    several = any(len(r.get("seeds") or cfg.seeds) > 1 for r in pipeline.results)
    rows = []
    for result in pipeline.results:
        m = result["metrics"]
        cells = []
        for key, _ in COMPARISON_COLUMNS:
            if key not in m:
                cells.append("-")
            elif several:
                cells.append(f"{100 * m[key]['mean']:.2f}+-{100 * m[key]['std']:.2f}")
            else:
                cells.append(f"{100 * m[key]['mean']:.2f}")
        rows.append((result["name"], cells, pipeline.manifest["timings"].get(result["name"], 0)))
    width = max([7] + [len(c) for _, cells, _ in rows for c in cells])
    room = 80 - 9 - len(COMPARISON_COLUMNS) * (width + 1)  # what the method column may take
    name_width = max(6, min(room, max([6] + [len(name) for name, _, _ in rows])))
    header = f"{'method':<{name_width}}" + "".join(f" {title:>{width}}" for _, title in COMPARISON_COLUMNS) + f" {'seconds':>8}"
    lines += [header, "-" * len(header)]
    for name, cells, seconds in rows:
        name = name if len(name) <= name_width else name[: name_width - 1] + "~"
        lines.append(f"{name:<{name_width}}" + "".join(f" {c:>{width}}" for c in cells) + f" {seconds:>8.1f}")
    return lines


def print_comparison(pipeline) -> None:
    for line in comparison_lines(pipeline):
        console.print(line, highlight=False, markup=False)
    if not any(r["metrics"] for r in pipeline.results):
        console.print("no labels: nothing to score (see the report for the clusters)")


@app.command()
def report(run_dir: Path = typer.Argument(..., help="A run folder made by `nolabel run`.")) -> None:
    """Write RUN_DIR/report.html: metrics, cluster galleries, confusion matrix, maps, curves."""
    from .pipeline import load_run

    console.print(f"report: {load_run(run_dir).report()}")


@app.command()
def predict(
    run_dir: Path = typer.Argument(..., help="A run folder made by `nolabel run`."),
    new_data: str = typer.Argument(..., help="New items: a folder of images, a text file, ... (as for `nolabel embed`)."),
    out: Path = typer.Option(Path("predictions.csv"), "--out", "-o", help="Output .csv or .json."),
    result: Optional[str] = typer.Option(None, "--result", help="Which method of the run (default: the first)."),
) -> None:
    """Assign new items with the run's backbone and fitted method (cluster, confidence)."""
    from .io import atomic_path
    from .pipeline import load_run

    assignment = load_run(run_dir).predict(new_data, name=result)
    if out.suffix == ".json":
        rows = [{"item_id": i, "cluster": int(c), "confidence": float(p)} for i, c, p in zip(assignment.ids, assignment.clusters, assignment.confidences)]
        with atomic_path(out) as tmp:
            tmp.write_text(json.dumps(rows, indent=1))
    else:
        assignment.save(out.with_suffix(".npz"))
    console.print(f"{len(assignment.clusters)} items assigned -> {out}")


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="A run folder made by `nolabel run`."),
    to: Path = typer.Option(..., "--to", help="Destination folder (one sub-folder per cluster)."),
    copy: bool = typer.Option(False, "--copy", help="Copy files instead of linking them."),
    result: Optional[str] = typer.Option(None, "--result", help="Which method of the run (default: the first)."),
) -> None:
    """One folder per cluster holding its members, plus clusters.csv (item, cluster, confidence)."""
    from .export import export_clusters
    from .pipeline import load_run

    n = export_clusters(load_run(run_dir), to, copy=copy, name=result)
    console.print(f"{n} items exported into {to}")


# ---- list -------------------------------------------------------------------------------
def _print_listing(title: str, rows: list[tuple[str, str]]) -> None:
    table = Table(title=title)
    table.add_column("name")
    table.add_column("what it is")
    for name, doc in rows:
        table.add_row(name, doc)
    console.print(table)


@list_app.command("backbones")
def list_backbones() -> None:
    """Backbone specs and local architectures."""
    from . import backbones

    _print_listing("backbones", backbones.describe())


@list_app.command("methods")
def list_methods() -> None:
    """Clustering methods."""
    from . import methods

    _print_listing("methods", methods.describe())


@list_app.command("presets")
def list_presets() -> None:
    """Presets for `nolabel run --config NAME`."""
    from .presets import describe

    _print_listing("presets", describe())


@list_app.command("datasets")
def list_datasets() -> None:
    """Data formats nolabel reads."""
    from . import data

    _print_listing("datasets", data.describe())


# ---- demo -------------------------------------------------------------------------------
@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Run folder."),
) -> None:
    """The whole chain on scikit-learn's digits (embedded, no download)."""
    from .demo import run_demo

    run_demo(out, console)


def _show_progress() -> bool:
    """Progress bars only on a terminal; a log file gets one line per stage instead."""
    return sys.stderr.isatty()


def limit_threads() -> int:
    """Threads for torch, OpenMP and BLAS: ``OMP_NUM_THREADS`` when set, else the cores this
    process may run on (its CPU affinity, which containers and ``taskset`` restrict)."""
    given = os.environ.get("OMP_NUM_THREADS", "").strip()
    if given.isdigit() and int(given) > 0:
        threads = int(given)
    else:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        os.environ["OMP_NUM_THREADS"] = str(threads)
    for name in ("MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(name, str(threads))
    if "torch" in sys.modules:  # already imported: set it directly
        sys.modules["torch"].set_num_threads(threads)
    return threads


def _error(message: str) -> None:
    """``error: MESSAGE`` on one line of stderr (a newline in the message becomes a space)."""
    err_console.print("[bold red]error:[/] " + escape_markup(str(message).replace("\r", " ").replace("\n", " ")), highlight=False)


def _click_errors():
    """The click exception classes typer raises (typer >= 0.20 vendors its own click)."""
    try:
        from typer._click import exceptions
    except ImportError:
        from click import exceptions
    return exceptions


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    err_console.print(f"[yellow]warning:[/] {escape_markup(str(message))}", highlight=False)


def main() -> None:
    import warnings

    clicks = _click_errors()
    limit_threads()
    warnings.showwarning = _one_line_warning
    try:
        code = app(standalone_mode=False)
    except NolabelError as exc:
        _error(str(exc))
        sys.exit(2)
    except clicks.NoArgsIsHelpError as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except clicks.UsageError as exc:
        where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        _error(exc.format_message() + where)
        sys.exit(2)
    except clicks.ClickException as exc:
        _error(exc.format_message())
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        err_console.print("interrupted; finished stages are kept and a re-run resumes")
        sys.exit(130)
    except BrokenPipeError:  # the reader went away (`nolabel ... | head`): stop quietly, as shell tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
