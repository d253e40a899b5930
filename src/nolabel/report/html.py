"""``build_report(run_dir)``: one self-contained HTML page for a run folder.

The page embeds everything (figures and thumbnails as data URIs, inline CSS and
script, no network), so it can be mailed or archived as one file. Sections: header
(data, backbone, N, K, date), the health check of every result (a warning line at the
top when one looks collapsed), metrics (mean +- std over seeds, in %), a label-free
comparison when there are several results, cluster sizes, the confusion matrix (only
with labels), the interactive embedding map (:mod:`.embedding_map`), training curves,
the K estimate, timings and, for every result (its primary seed), a gallery per
cluster, one method at a time through a selector (all shown without script). Every
string that comes from the user (paths, ids, class names, texts, method names) is
HTML-escaped (JSON data is put in the page with ``<``, ``>`` and ``&`` as ``\\u`` escapes).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..assignments import Assignment
from ..data.base import Dataset
from ..errors import NolabelError
from ..io import atomic_path, read_json
from . import gallery as gal
from . import plots
from .embedding_map import map_html

#: scored metrics in display order, with their column titles (all shown in %)
METRICS = {"acc": "ACC", "many_to_one_acc": "many-to-one ACC", "nmi": "NMI", "ami": "AMI", "ari": "ARI", "top5": "top-5 ACC"}
#: at most this many training-curve panels
MAX_CURVE_PANELS = 9


def summary_table(results: Sequence[dict[str, Any]]) -> list[dict[str, str | None]]:
    """One row per result of ``run.json``: ``{"method": name, <metric>: "mean ± std" in %}``
    for every metric in ``METRICS`` that some result has (None where this one lacks it)."""
    present = [m for m in METRICS if any(m in (r.get("metrics") or {}) for r in results)]
    rows = []
    for result in results:
        metrics = result.get("metrics") or {}
        row: dict[str, str | None] = {"method": str(result["name"])}
        for name in present:
            value = metrics.get(name)
            row[name] = f"{100 * value['mean']:.2f} \u00b1 {100 * value['std']:.2f}" if value else None
        rows.append(row)
    return rows


@dataclass
class _Result:
    name: str
    dir: Path
    primary_seed: int
    metrics: dict[str, Any]
    seeds: list[int] = field(default_factory=list)
    per_seed: list[dict[str, Any]] = field(default_factory=list)
    assignment: Assignment | None = None


def build_report(
    run_dir: str | Path,
    out: str | Path | None = None,
    max_per_cluster: int = 12,
    max_clusters: int = 100,
    dataset: Dataset | None = None,
) -> Path:
    """Write the report of the run in ``run_dir`` to ``out`` (default ``run_dir/report.html``)
    atomically and return its path.

    Galleries show per cluster the ``max_per_cluster`` most confident members and
    ``max(2, max_per_cluster // 3)`` least confident ones, for at most ``max_clusters``
    clusters (the largest). Items are drawn from ``dataset`` when given, else from
    ``load_dataset(config["data"], split=config["split"])``; when that fails or does not
    match the run's item ids, galleries list ids only and the page says why.
    """
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    if max_per_cluster < 1 or max_clusters < 1:
        raise NolabelError(f"max_per_cluster and max_clusters must be >= 1, got {max_per_cluster} and {max_clusters}")
    manifest = _read_manifest(run_dir)
    from ..features import load_features
    from ..items import load_items

    features_path = run_dir / manifest["features"]
    x = load_features(features_path).array
    items = load_items(features_path)
    n = len(x)
    results = [_load_result(run_dir, r, n) for r in manifest["results"]]
    primary = results[0]
    clusters = primary.assignment.clusters
    n_clusters = _n_clusters(manifest, primary.assignment)
    labels = items.labels
    class_names = None
    if labels is not None:
        class_names = list(items.class_names or [])
        class_names += [str(c) for c in range(len(class_names), int(labels.max()) + 1)]
    dataset, data_note = _gallery_dataset(manifest, items.ids, dataset)
    config = manifest.get("config", {})

    healths = [(r, health_of(r, n_clusters)) for r in results]
    sections = [
        _section("health", "Health check", _health_html(healths)),
        _section("metrics", "Metrics", _metrics_html(results, config, n)),
    ]
    if len(results) > 1:
        sections.append(_section("comparison", "Comparison of methods", _comparison_html(results, manifest, n_clusters)))
    sizes = np.bincount(clusters, minlength=n_clusters)
    majority = _majority_names(labels, clusters, n_clusters, class_names) if labels is not None else None
    sections.append(_section(
        "sizes", f"Cluster sizes ({escape(primary.name)}, seed {primary.primary_seed})",
        f"<p>{int((sizes > 0).sum())} of {n_clusters} clusters non-empty; largest {int(sizes.max())}, "
        f"smallest non-empty {int(sizes[sizes > 0].min())}, {n / n_clusters:.1f} per cluster if uniform.</p>"
        + _img(plots.cluster_sizes_plot(sizes, majority), "cluster sizes"),
    ))
    if labels is not None:
        sections.append(_section(
            "confusion", f"Confusion matrix ({escape(primary.name)}, seed {primary.primary_seed})",
            "<p>Rows: true classes; columns: clusters, ordered by the class the Hungarian (one-to-one) "
            "map assigns them, unmatched clusters last; colour: share of the class.</p>"
            + _img(plots.confusion_plot(labels, clusters, class_names, n_clusters), "confusion matrix"),
        ))
    if n >= plots.MAP_MIN_POINTS:
        colourings = [(f"clusters of {r.name}", r.assignment.clusters, n_clusters, None) for r in results]
        if labels is not None:
            colourings.append(("true class", labels, len(class_names), class_names))
        sections.append(_section("map", "Embedding map", map_html(x, [str(i) for i in items.ids], colourings, dataset)))
    curves = _training_curves(results)
    if curves:
        sections.append(_section("curves", "Training curves", _img(plots.training_curves_plot(curves), "training curves")))
    if manifest.get("k_estimate"):
        est = manifest["k_estimate"]
        sections.append(_section(
            "kestimate", "Number of clusters",
            f"<p>K estimated without labels by <b>{escape(str(est.get('method')))}</b>: K = {int(est['k'])}.</p>"
            + _img(plots.k_estimate_plot(est), "K estimate"),
        ))
    galleries_html = _all_galleries_html(results, n_clusters, x, items.ids, dataset, labels, class_names,
                                         max_per_cluster, max_clusters, data_note)
    timings = dict(manifest.get("timings") or {})
    timings["report"] = time.perf_counter() - t0
    sections.append(_section("timings", "Timings", _timings_html(timings)))
    sections.append(_section("clusters", "Clusters of every method", galleries_html))

    page = _page(manifest, config, n, n_clusters, labels is not None, sections, _warnings_html(healths))
    out = Path(out) if out is not None else run_dir / "report.html"
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out


# ---- reading the run -------------------------------------------------------------------
def _read_manifest(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "run.json"
    if not path.exists():
        raise NolabelError(f"{run_dir} is not a nolabel run folder (no run.json); create one with `nolabel run`")
    try:
        manifest = read_json(path)
    except ValueError:
        raise NolabelError(f"{path} is not valid JSON; re-run `nolabel run`") from None
    if not manifest.get("results"):
        raise NolabelError(f"{run_dir} holds no fitted method: run `nolabel run` first")
    if not manifest.get("features"):
        raise NolabelError(f"{path} names no features file; re-run `nolabel run`")
    return manifest


def _load_result(run_dir: Path, entry: dict[str, Any], n: int) -> _Result:
    result = _Result(str(entry["name"]), run_dir / entry["dir"], int(entry.get("primary_seed", 0)), entry.get("metrics") or {})
    summary_path = result.dir / "summary.json"
    if summary_path.exists():
        summary = read_json(summary_path)
        result.seeds = [int(s) for s in summary.get("seeds", [])]
        result.per_seed = list(summary.get("per_seed", []))
    if not result.seeds:
        result.seeds = [result.primary_seed]
    result.assignment = Assignment.load(result.dir / f"seed{result.primary_seed}" / "assignment.npz")
    if len(result.assignment.clusters) != n:
        raise NolabelError(
            f"{result.name}: the assignment has {len(result.assignment.clusters)} items but the features {n}; "
            "the run folder is inconsistent, re-run `nolabel run`"
        )
    return result


def _n_clusters(manifest: dict[str, Any], assignment: Assignment) -> int:
    k = max(int(assignment.clusters.max()) + 1, assignment.n_clusters or 0)
    return max(k, int(manifest.get("k") or 0))


def _gallery_dataset(manifest: dict[str, Any], ids: np.ndarray, dataset: Dataset | None) -> tuple[Dataset | None, str]:
    """The dataset the galleries draw items from, or (None, why not)."""
    if dataset is None:
        from ..data import load_dataset

        config = manifest.get("config", {})
        try:
            dataset = load_dataset(config["data"], split=config.get("split", "test"))
        except NolabelError as exc:
            return None, f"The items could not be loaded ({exc}); the galleries list ids only."
    if len(dataset) != len(ids) or list(dataset.ids) != [str(i) for i in ids]:
        return None, "The data set no longer matches the run (its item ids differ); the galleries list ids only."
    if dataset.modality == "vector":
        return None, "The items are vectors; the galleries list ids only."
    return dataset, ""


def _majority_names(labels: np.ndarray, clusters: np.ndarray, n_clusters: int, class_names: Sequence[str]) -> list[str]:
    counts = plots.class_cluster_counts(labels, clusters, len(class_names), n_clusters)
    return [str(class_names[int(c)]) if counts[:, k].any() else "empty" for k, c in enumerate(counts.argmax(axis=0))]


def _histories(extra: Any, prefix: str = "", depth: int = 0):
    """(path, history) for every ``history`` list in ``extra`` and its nested dicts."""
    if not isinstance(extra, dict) or depth > 3:
        return
    for key, value in extra.items():
        if key == "history" and isinstance(value, list) and value:
            yield prefix, value
        elif isinstance(value, dict):
            yield from _histories(value, f"{prefix}{key}: ", depth + 1)


def _training_curves(results: list[_Result]) -> dict[str, dict[str, list[float]]]:
    """``curves[quantity][f"{method} seed {s}"]``: per-epoch values from each seed's
    ``model/config.json`` ``extra.history`` (numbers, or dicts of numbers per epoch)."""
    curves: dict[str, dict[str, list[float]]] = {}
    for result in results:
        for seed in result.seeds:
            config_path = result.dir / f"seed{seed}" / "model" / "config.json"
            if not config_path.exists():
                continue
            source = f"{result.name} seed {seed}"
            for prefix, history in _histories(read_json(config_path).get("extra")):
                if all(isinstance(v, (int, float)) for v in history):
                    curves.setdefault(f"{prefix}loss", {})[source] = [float(v) for v in history]
                elif all(isinstance(v, dict) for v in history):
                    keys = [k for k in history[0] if k not in ("epoch", "step") and isinstance(history[0][k], (int, float))]
                    for key in keys:
                        values = [v.get(key) for v in history]
                        if all(isinstance(v, (int, float)) for v in values):
                            curves.setdefault(f"{prefix}{key}", {})[source] = [float(v) for v in values]
    return dict(list(curves.items())[:MAX_CURVE_PANELS])


# ---- HTML pieces -----------------------------------------------------------------------
def _section(anchor: str, title: str, body: str) -> tuple[str, str, str]:
    return anchor, title, body


def _img(uri: str, alt: str) -> str:
    return f'<img class="plot" src="{uri}" alt="{escape(alt)}">'


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int = 1) -> str:
    """A table from already-escaped cells; columns from ``numeric_from`` are right-aligned."""
    head = "".join(f'<th{" class=num" if i >= numeric_from else ""}>{h}</th>' for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(f'<td{" class=num" if i >= numeric_from else ""}>{c}</td>' for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _metrics_html(results: list[_Result], config: dict[str, Any], n: int) -> str:
    split = escape(str(config.get("split", "?")))
    rows = summary_table([{"name": r.name, "metrics": r.metrics} for r in results])
    present = [m for m in METRICS if any(m in row for row in rows)]
    if not present:
        table = _table(["method", "seeds", "split", "metrics"],
                       [[escape(r.name), str(len(r.seeds)), split, "no labels"] for r in results], numeric_from=1)
        return table + "<p>The data set has no labels: nothing to score. The clusters below are the result.</p>"
    header = ["method", "seeds", "split"] + [METRICS[m] for m in present]
    body = []
    for r, row in zip(results, rows):
        cells = [escape(r.name), str(len(r.seeds)), split]
        cells += [escape(row[m]) if row[m] is not None else "no labels" for m in present]
        body.append(cells)
    text = (f"<p>Mean \u00b1 std over seeds, in %, on the <b>{split}</b> split ({n} items). "
            "Labels are used only to score, after fitting.</p>")
    per_seed = []
    for r in results:
        for seed, metrics in zip(r.seeds, r.per_seed):
            if metrics:
                per_seed.append([escape(r.name), str(seed)] + [f"{100 * metrics[m]:.2f}" if isinstance(metrics.get(m), float) else "-" for m in present])
    details = ""
    if per_seed and any(len(r.seeds) > 1 for r in results):
        details = ("<details><summary>Per seed</summary>"
                   + _table(["method", "seed"] + [METRICS[m] for m in present], per_seed, numeric_from=1) + "</details>")
    return text + _table(header, body, numeric_from=1) + details


def _comparison_html(results: list[_Result], manifest: dict[str, Any], n_clusters: int) -> str:
    from sklearn.metrics import adjusted_rand_score

    primary = results[0].assignment.clusters
    timings = manifest.get("timings") or {}
    rows = []
    for r in results:
        sizes = np.bincount(r.assignment.clusters, minlength=n_clusters)
        nonempty = sizes[sizes > 0]
        rows.append([
            escape(r.name), f"{len(nonempty)} / {len(sizes)}", str(int(nonempty.min())), str(int(nonempty.max())),
            f"{float(np.mean(r.assignment.confidences)):.3f}",
            f"{100 * adjusted_rand_score(primary, r.assignment.clusters):.1f}",
            f"{float(timings[r.name]):.1f}" if r.name in timings else "-",
        ])
    header = ["method", "non-empty clusters", "smallest", "largest", "mean confidence",
              f"agreement with {escape(results[0].name)} (ARI, %)", "seconds"]
    return ("<p>Label-free comparison of each method's primary seed: how it uses the clusters, how sure it is, "
            "and how much it agrees with the first method.</p>" + _table(header, rows))


def _timings_html(timings: dict[str, Any]) -> str:
    rows = [[escape(str(name)), f"{float(seconds):.1f}"] for name, seconds in timings.items() if isinstance(seconds, (int, float))]
    return _table(["stage", "seconds"], rows)


def health_of(result: _Result, n_clusters: int) -> dict[str, Any]:
    """The health the run stored for the result's primary seed (``health`` of that seed's row in
    ``summary.json``, where ``nolabel run`` and ``nolabel cluster`` put it, with the agreement
    with k-means; or ``metrics["health"]`` of its ``run.json`` entry), else computed here from
    the primary seed's assignment (:func:`nolabel.health.health_check` without k-means agreement)."""
    candidates = [result.metrics.get("health") if isinstance(result.metrics, dict) else None]
    if result.primary_seed in result.seeds and len(result.per_seed) == len(result.seeds):
        row = result.per_seed[result.seeds.index(result.primary_seed)]
        candidates.insert(0, row.get("health") if isinstance(row, dict) else None)
    for stored in candidates:
        if isinstance(stored, dict) and "n_nonempty" in stored:
            return stored
    try:
        from ..health import health_check
    except ImportError:  # the same first five fields, and the empty/dominant-cluster warnings
        sizes = np.bincount(result.assignment.clusters, minlength=n_clusters)
        shares = sizes / max(len(result.assignment.clusters), 1)
        warnings = [f"{int((sizes == 0).sum())} of {n_clusters} clusters are empty"] if (sizes == 0).any() else []
        if shares.max() > 3.0 / n_clusters:
            warnings.append(f"the largest cluster holds {100 * shares.max():.1f}% of the items, more than 3x the uniform share")
        return {"n_clusters": n_clusters, "n_nonempty": int((sizes > 0).sum()), "largest_share": float(shares.max()),
                "smallest_share": float(shares.min()), "mean_confidence": float(np.mean(result.assignment.confidences)),
                "agreement_kmeans": None, "warnings": warnings}
    return health_check(result.assignment.clusters, result.assignment.confidences, n_clusters)


def _health_html(healths: list[tuple[_Result, dict[str, Any]]]) -> str:
    rows = []
    for r, h in healths:
        agreement = h.get("agreement_kmeans")
        warnings = h.get("warnings") or []
        rows.append([
            escape(r.name), f"{int(h['n_nonempty'])} / {int(h['n_clusters'])}", f"{100 * float(h['largest_share']):.1f}",
            f"{100 * float(h['smallest_share']):.1f}", f"{float(h['mean_confidence']):.3f}",
            "-" if agreement is None else f"{100 * float(agreement):.1f}",
            '<span class="bad">' + escape("; ".join(str(w) for w in warnings)) + "</span>" if warnings else "ok",
        ])
    header = ["method", "non-empty clusters", "largest share %", "smallest share %", "mean confidence",
              "agreement with k-means (NMI %)", "warnings"]
    return ("<p>Label-free checks of each result's primary seed: a result with empty clusters, one dominant "
            "cluster or near-uniform confidences has collapsed, whatever its scores.</p>" + _table(header, rows))


def _warnings_html(healths: list[tuple[_Result, dict[str, Any]]]) -> str:
    lines = [f'<p class="warn">Warning: {escape(r.name)} looks collapsed: {escape("; ".join(str(w) for w in h["warnings"]))}</p>'
             for r, h in healths if h.get("warnings")]
    return "".join(lines)


def _all_galleries_html(results: list[_Result], n_clusters: int, x: np.ndarray, ids: np.ndarray, dataset: Dataset | None,
                        labels: np.ndarray | None, class_names: Sequence[str] | None, max_per_cluster: int,
                        max_clusters: int, data_note: str) -> str:
    """A selector and one ``<section class="method">`` of galleries per result (the first shown)."""
    buttons = "".join(f'<button type="button" data-m="{i}"{" class=on" if i == 0 else ""}>{escape(r.name)}</button>'
                      for i, r in enumerate(results))
    parts = [f'<nav class="methods">Method: {buttons}</nav>']
    for i, r in enumerate(results):
        sizes = np.bincount(r.assignment.clusters, minlength=n_clusters)
        body = _galleries_html(r, sizes, x, ids, dataset, labels, class_names, max_per_cluster, max_clusters, data_note, i)
        parts.append(f'<section class="method" id="gallery-{i}" data-method="{escape(r.name)}">'
                     f"<h3>{escape(r.name)} <span class=\"facts\">seed {r.primary_seed}</span></h3>{body}</section>")
    return "\n".join(parts)


def _galleries_html(primary: _Result, sizes: np.ndarray, x: np.ndarray, ids: np.ndarray, dataset: Dataset | None, labels: np.ndarray | None,
                    class_names: Sequence[str] | None, max_per_cluster: int, max_clusters: int, data_note: str,
                    which: int = 0) -> str:
    nonempty = np.flatnonzero(sizes)
    shown = np.sort(nonempty[np.argsort(-sizes[nonempty], kind="stable")][:max_clusters])
    galleries = gal.build_galleries(
        primary.assignment.clusters, primary.assignment.confidences, [str(i) for i in ids], dataset, labels, class_names,
        cluster_ids=shown.tolist(), n_prototypes=max_per_cluster, n_least=max(2, max_per_cluster // 3), embeddings=x,
    )
    intro = (f"<p>Per cluster its {max_per_cluster} most confident members (prototypes; equal confidences ranked by "
             "closeness to the cluster's mean embedding) and its least confident ones")
    intro += ("; a red frame marks a member whose true class is not the cluster's majority class.</p>" if labels is not None else ".</p>")
    if len(shown) < len(nonempty):
        intro += f"<p>The {len(shown)} largest of {len(nonempty)} non-empty clusters are shown.</p>"
    if data_note:
        intro += f'<p class="note">{escape(data_note)}</p>'
    index = "".join(
        f'<a href="#m{which}-cluster-{g.cluster}">{g.cluster}'
        + (f" {escape(gal.truncate(g.majority, 16))}" if g.majority is not None else "")
        + f" <small>({g.size})</small></a>"
        for g in galleries
    )
    return intro + f'<nav class="index">{index}</nav>' + "\n".join(gal.render_gallery(g, f"m{which}-") for g in galleries)


CSS = """
:root { --fg:#1d2430; --muted:#5b6676; --line:#d9dee5; --bg:#ffffff; --panel:#f5f7fa; --accent:#2f5d9e; --bad:#c0392b; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color:var(--fg); background:var(--bg); }
main { max-width:1240px; margin:0 auto; padding:20px 28px 60px; }
header.top { background:var(--panel); border-bottom:1px solid var(--line); }
header.top > div { max-width:1240px; margin:0 auto; padding:18px 28px 12px; }
h1 { font-size:22px; margin:0 0 8px; }
h2 { font-size:18px; margin:34px 0 10px; padding-bottom:4px; border-bottom:2px solid var(--line); }
h3 { font-size:15px; margin:0 0 6px; }
h4 { font-size:12px; margin:8px 0 4px; color:var(--muted); text-transform:uppercase; letter-spacing:.04em; }
.facts, .hint { font-weight:normal; color:var(--muted); font-size:13px; text-transform:none; letter-spacing:0; }
dl.meta { display:grid; grid-template-columns:repeat(auto-fill, minmax(220px, 1fr)); gap:4px 24px; margin:0; }
dl.meta div { display:flex; gap:8px; min-width:0; }
dl.meta dt { color:var(--muted); flex:none; }
dl.meta dd { margin:0; font-weight:600; overflow-wrap:anywhere; }
nav.toc { margin-top:10px; display:flex; flex-wrap:wrap; gap:6px 14px; font-size:13px; }
a { color:var(--accent); text-decoration:none; }
a:hover { text-decoration:underline; }
table { border-collapse:collapse; margin:8px 0; font-size:13px; }
th, td { border:1px solid var(--line); padding:5px 10px; text-align:left; vertical-align:top; }
th { background:var(--panel); font-weight:600; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
tbody tr:nth-child(even) { background:#fafbfc; }
details { margin:6px 0; }
summary { cursor:pointer; color:var(--accent); }
img.plot { max-width:100%; height:auto; display:block; margin:6px 0; }
p.note { background:#fff6e0; border:1px solid #f0d590; padding:6px 10px; border-radius:4px; }
nav.index { display:flex; flex-wrap:wrap; gap:4px; margin:10px 0 16px; }
nav.index a { background:var(--panel); border:1px solid var(--line); border-radius:3px; padding:1px 6px; font-size:12px; }
section.cluster { border:1px solid var(--line); border-radius:6px; padding:10px 12px; margin:12px 0; break-inside:avoid; }
.grid { display:grid; grid-template-columns:repeat(auto-fill, 122px); gap:6px; }
.texts { display:grid; grid-template-columns:repeat(auto-fill, minmax(270px, 1fr)); gap:6px; }
figure.item { margin:0; padding:3px; border:2px solid transparent; border-radius:4px; background:var(--panel); text-align:center; min-width:0; }
figure.item.off { border-color:var(--bad); }
figure.item img { display:block; margin:0 auto; width:96px; height:96px; object-fit:contain; image-rendering:pixelated; background:#fff; cursor:zoom-in; }
figure.item p.text { margin:0 0 3px; text-align:left; font-size:12px; overflow-wrap:anywhere; }
figcaption { font-size:10px; line-height:1.25; color:var(--muted); display:flex; flex-direction:column; overflow:hidden; }
figcaption span { white-space:nowrap; overflow:hidden; text-overflow:ellipsis; }
.texts figcaption { flex-direction:row; gap:8px; }
figcaption .cls { color:var(--fg); }
p.warn { background:#fdecea; border:1px solid #e6a29b; color:#8a1f14; padding:6px 10px; border-radius:4px; font-weight:600; }
span.bad { color:var(--bad); white-space:normal; display:inline-block; min-width:260px; text-align:left; }
nav.methods { display:flex; flex-wrap:wrap; gap:6px; align-items:center; margin:8px 0; }
nav.methods button { font:inherit; border:1px solid var(--line); background:var(--panel); border-radius:3px; padding:2px 10px; cursor:pointer; }
nav.methods button.on { background:var(--accent); color:#fff; border-color:var(--accent); }
section.method > h3 { font-size:17px; margin:18px 0 6px; }
div.map { position:relative; display:inline-block; border:1px solid var(--line); border-radius:4px; }
div.map circle.pt { stroke:#fff; stroke-width:0.5; cursor:crosshair; }
div.map circle.pt:hover { stroke:#000; stroke-width:1.5; }
div.tip { position:absolute; pointer-events:none; background:#fff; border:1px solid var(--line); border-radius:4px; padding:4px;
          box-shadow:0 2px 8px rgba(0,0,0,.2); max-width:240px; font-size:11px; }
div.tip img { display:block; width:96px; height:96px; object-fit:contain; image-rendering:pixelated; }
div.tip img:not([src]) { display:none; }
div.tip .text { margin:0 0 3px; }
div.lightbox { position:fixed; inset:0; background:rgba(0,0,0,.8); display:flex; flex-direction:column; align-items:center;
               justify-content:center; z-index:10; color:#fff; cursor:zoom-out; }
div.lightbox img { width:min(70vw, 70vh); height:min(70vw, 70vh); object-fit:contain; image-rendering:pixelated; background:#fff; }
div.lightbox a { color:#9cc3ff; }
"""

#: the page's only script: method selector for the galleries, map hover and recolouring, click-to-enlarge
SCRIPT = r"""
(function () {
  var sections = document.querySelectorAll("section.method");
  var buttons = document.querySelectorAll("nav.methods button");
  function show(m) {
    sections.forEach(function (s, i) { s.hidden = i !== m; });
    buttons.forEach(function (b, i) { b.className = i === m ? "on" : ""; });
  }
  buttons.forEach(function (b, i) { b.addEventListener("click", function () { show(i); }); });
  if (sections.length) show(0);

  var blob = document.getElementById("map-data");
  if (blob) {
    var data = JSON.parse(blob.textContent);
    var tip = document.getElementById("map-tip"), box = tip.parentNode;
    var points = document.querySelectorAll("#map-svg circle.pt");
    var select = document.getElementById("map-colour");
    function colour(c) {
      var spec = data.colourings[c];
      points.forEach(function (p) {
        var v = spec.values[+p.getAttribute("data-i")];
        p.setAttribute("fill", spec.palette[v]);
        p.setAttribute("data-v", spec.names[v]);
      });
    }
    select.addEventListener("change", function () { colour(+select.value); });
    colour(0);
    points.forEach(function (p) {
      p.addEventListener("mouseenter", function (e) {
        var i = +p.getAttribute("data-i"), prev = data.previews[i];
        var img = tip.querySelector("img"), text = tip.querySelector(".text");
        if (prev.indexOf("data:") === 0) { img.src = prev; text.textContent = ""; }
        else { img.removeAttribute("src"); text.textContent = prev.replace(/^text:/, ""); }
        tip.querySelector(".id").textContent = data.ids[i] + " (" + select.options[select.selectedIndex].text + ": " + p.getAttribute("data-v") + ")";
        var r = box.getBoundingClientRect();
        tip.style.left = (e.clientX - r.left + 12) + "px";
        tip.style.top = (e.clientY - r.top + 12) + "px";
        tip.hidden = false;
      });
      p.addEventListener("mouseleave", function () { tip.hidden = true; });
    });
  }

  document.querySelectorAll("a.open").forEach(function (a) {
    a.addEventListener("click", function (e) {
      e.preventDefault();
      var over = document.createElement("div");
      over.className = "lightbox";
      var img = document.createElement("img");
      img.src = a.querySelector("img").src;
      var cap = document.createElement("p");
      cap.textContent = a.getAttribute("data-id") + " ";
      if (a.getAttribute("href") !== "#") {
        var link = document.createElement("a");
        link.href = a.href; link.textContent = "open the original file"; link.target = "_blank";
        cap.appendChild(link);
      }
      over.appendChild(img); over.appendChild(cap);
      over.addEventListener("click", function (ev) { if (ev.target.tagName !== "A") over.remove(); });
      document.body.appendChild(over);
    });
  });
})();
"""


def _page(manifest: dict[str, Any], config: dict[str, Any], n: int, n_clusters: int, has_labels: bool,
          sections: list[tuple[str, str, str]], warnings: str = "") -> str:
    dataset = manifest.get("dataset") or {}
    k_note = " (estimated)" if manifest.get("k_estimate") else ""
    meta = [
        ("data", str(config.get("data", dataset.get("name", "?")))),
        ("data set", str(dataset.get("name", "?"))),
        ("split", str(config.get("split", "?"))),
        ("backbone", str(config.get("backbone", "?"))),
        ("items (N)", str(n)),
        ("clusters (K)", f"{n_clusters}{k_note}"),
        ("labels", "yes (used only to score)" if has_labels else "no"),
        ("methods", ", ".join(str(m) for m in config.get("methods", [])) + (f" then {config['then']}" if config.get("then") else "")),
        ("seeds", ", ".join(str(s) for s in config.get("seeds", []))),
        ("report date", datetime.now().strftime("%Y-%m-%d %H:%M")),
    ]
    meta_html = "".join(f"<div><dt>{escape(k)}</dt><dd>{escape(v)}</dd></div>" for k, v in meta)
    toc = "".join(f'<a href="#{a}">{t.split(" (")[0]}</a>' for a, t, _ in sections)
    body = "\n".join(f'<section id="{a}"><h2>{t}</h2>\n{b}\n</section>' for a, t, b in sections)
    title = escape(f"nolabel report: {dataset.get('name', config.get('data', ''))}")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{CSS}</style></head><body>\n"
        f'<header class="top"><div><h1>{title}</h1><dl class="meta">{meta_html}</dl><nav class="toc">{toc}</nav></div></header>\n'
        f"<main>\n{warnings}{body}\n</main><script>{SCRIPT}</script></body></html>\n"
    )
