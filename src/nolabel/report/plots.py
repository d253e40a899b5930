"""Figures of a run as self-contained ``data:image/png;base64,...`` URIs (matplotlib, Agg).

Every function returns the URI of one PNG. Text drawn by matplotlib (class names,
method names) has ``$`` escaped so user strings never switch on mathtext.
"""
from __future__ import annotations

import base64
import io
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen first)
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ..metrics import hungarian_map  # noqa: E402

#: t-SNE runs on at most this many points (a seeded random subsample beyond)
MAP_MAX_POINTS = 3000
#: embeddings wider than this are reduced by PCA before t-SNE
MAP_PCA_DIM = 50
#: fewer items than this get no map (t-SNE needs a perplexity below the number of points)
MAP_MIN_POINTS = 10
#: t-SNE gradient-descent iterations (scikit-learn's minimum is 250, its default 1000)
MAP_ITERATIONS = 500
#: confusion matrices up to this many cells get their counts written in the cells
ANNOTATE_CELLS = 400
DPI = 100


def png_uri(fig) -> str:
    """Render ``fig`` to PNG and return it as a base64 data URI (the figure is closed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def plain(text: Any) -> str:
    """``text`` safe for matplotlib: no mathtext (``$`` escaped)."""
    return str(text).replace("$", r"\$")


def _cluster_colors(n: int) -> np.ndarray:
    """``n`` distinct RGBA colours: tab10/tab20 when they suffice, evenly spaced hues beyond."""
    if n <= 10:
        return plt.get_cmap("tab10")(np.arange(n))
    if n <= 20:
        return plt.get_cmap("tab20")(np.arange(n))
    return plt.get_cmap("hsv")(np.arange(n) / n)


def cluster_sizes_plot(sizes: np.ndarray, majority: Sequence[str] | None = None) -> str:
    """Bar chart of items per cluster (cluster ids on the x axis, sorted by size)."""
    sizes = np.asarray(sizes)
    order = np.argsort(-sizes, kind="stable")
    k = len(sizes)
    fig, ax = plt.subplots(figsize=(min(12.0, 3.0 + 0.25 * k), 3.2))
    ax.bar(np.arange(k), sizes[order], color="#4C72B0", width=0.8)
    ax.axhline(sizes.sum() / max(k, 1), color="#C44E52", lw=1, ls="--", label="uniform")
    if k <= 40:
        ticks = [str(c) if majority is None else f"{c}: {plain(majority[c])[:14]}" for c in order]
        ax.set_xticks(np.arange(k), ticks, rotation=90 if majority is not None or k > 20 else 0, fontsize=8)
    ax.set_xlabel("cluster (largest first)")
    ax.set_ylabel("items")
    ax.set_xlim(-0.6, k - 0.4)
    ax.legend(frameon=False, fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return png_uri(fig)


def class_cluster_counts(labels: np.ndarray, clusters: np.ndarray, n_classes: int, n_clusters: int) -> np.ndarray:
    """(C, K) int64 counts: ``counts[c, k] = #{n : label_n = c, cluster_n = k}``."""
    return np.bincount(labels * n_clusters + clusters, minlength=n_classes * n_clusters).reshape(n_classes, n_clusters)


def hungarian_column_order(labels: np.ndarray, clusters: np.ndarray, n_clusters: int) -> list[int]:
    """Clusters ordered by the class the Hungarian map gives them (class 0 first);
    clusters it leaves unmatched (or empty ones) follow in id order."""
    mapping = hungarian_map(labels, clusters)
    matched = sorted(mapping, key=lambda cluster: mapping[cluster])
    return [int(c) for c in matched] + [c for c in range(n_clusters) if c not in mapping]


def confusion_plot(labels: np.ndarray, clusters: np.ndarray, class_names: Sequence[str], n_clusters: int) -> str:
    """Heatmap of true class (rows) against cluster (columns, in Hungarian order).

    Colour is the row-normalised fraction (share of the class in each cluster), so a
    perfect clustering with K = C is a bright diagonal; counts are printed on small ones.
    """
    n_classes = len(class_names)
    counts = class_cluster_counts(labels, clusters, n_classes, n_clusters)
    order = hungarian_column_order(labels, clusters, n_clusters)
    counts = counts[:, order]
    frac = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    width = min(14.0, 2.5 + 0.42 * n_clusters)
    height = min(14.0, 1.5 + 0.36 * n_classes)
    fig, ax = plt.subplots(figsize=(width, height))
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    if n_classes * n_clusters <= ANNOTATE_CELLS:
        for (r, c), value in np.ndenumerate(counts):
            if value:
                ax.text(c, r, str(value), ha="center", va="center", fontsize=7, color="white" if frac[r, c] > 0.5 else "#222")
    if n_clusters <= 60:
        ax.set_xticks(np.arange(n_clusters), [str(c) for c in order], fontsize=7, rotation=90 if n_clusters > 20 else 0)
    if n_classes <= 60:
        ax.set_yticks(np.arange(n_classes), [plain(name)[:24] for name in class_names], fontsize=8)
    ax.set_xlabel("cluster (ordered by the class the Hungarian map gives it)")
    ax.set_ylabel("true class")
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02, label="share of the class")
    return png_uri(fig)


def embed_2d(x: np.ndarray, seed: int = 0, max_points: int = MAP_MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """(indices of the subsample, its (n, 2) t-SNE map): at most ``max_points`` rows drawn
    with ``seed``, PCA to ``MAP_PCA_DIM`` dimensions first when wider; perplexity
    ``min(30, (n - 1) / 3)``, ``MAP_ITERATIONS`` iterations (about 10 s for 3000 points).
    It runs on one thread: the same map on every machine, and no OpenMP spinning on a
    busy one (which made it several times slower)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    n = len(x)
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(n, size=max_points, replace=False)) if n > max_points else np.arange(n)
    sub = np.asarray(x[idx], dtype=np.float32)
    if sub.shape[1] > MAP_PCA_DIM and len(sub) > MAP_PCA_DIM:
        sub = PCA(n_components=MAP_PCA_DIM, random_state=seed).fit_transform(sub)
    perplexity = float(min(30.0, max(2.0, (len(sub) - 1) / 3.0)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", max_iter=MAP_ITERATIONS, random_state=seed, n_jobs=1)
    with threadpool_limits(limits=1):
        return idx, tsne.fit_transform(sub)


def embedding_map_plot(xy: np.ndarray, clusters: np.ndarray, n_clusters: int, labels: np.ndarray | None = None,
                       class_names: Sequence[str] | None = None) -> str:
    """Scatter of the 2-D map coloured by cluster, and beside it by true class when known."""
    panels = [("coloured by cluster", clusters, n_clusters, None)]
    if labels is not None:
        n_classes = len(class_names) if class_names is not None else int(labels.max()) + 1
        panels.append(("coloured by true class", labels, n_classes, class_names))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 6.0), squeeze=False)
    size = 6 if len(xy) > 1000 else 14
    for ax, (title, values, count, names) in zip(axes[0], panels):
        colors = _cluster_colors(count)
        ax.scatter(xy[:, 0], xy[:, 1], c=colors[values], s=size, linewidths=0, alpha=0.85)
        if names is not None and count <= 20:
            for c in range(count):
                ax.scatter([], [], color=colors[c], s=20, label=plain(names[c])[:20])
            ax.legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=1.2)
        elif names is None and count <= 20:
            for c in range(count):
                ax.scatter([], [], color=colors[c], s=20, label=f"cluster {c}")
            ax.legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=1.2)
        ax.set_title(f"t-SNE, {len(xy)} points, {title}", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    return png_uri(fig)


def training_curves_plot(curves: dict[str, dict[str, list[float]]]) -> str:
    """One panel per quantity, one line per source: ``curves[quantity][source] = values per epoch``."""
    names = list(curves)
    cols = min(3, len(names))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.ravel(), names):
        for source, values in curves[name].items():
            epochs = np.arange(1, len(values) + 1)
            ax.plot(epochs, values, marker="o" if len(values) <= 30 else None, ms=3, lw=1.4, label=plain(source))
        ax.set_title(plain(name), fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.spines[["top", "right"]].set_visible(False)
        ax.legend(fontsize=7, frameon=False)
    for ax in axes.ravel()[len(names):]:
        ax.set_visible(False)
    fig.tight_layout()
    return png_uri(fig)


def k_estimate_plot(estimate: dict[str, Any]) -> str:
    """Score of every candidate K (higher is better) with the chosen K marked; one more
    panel per criterion curve kept in ``details["criteria"]`` (the ``auto`` consensus)."""
    candidates = list(estimate["candidates"])
    panels = [(f"{estimate.get('method', 'k estimate')} score", estimate["scores"])]
    for name, info in ((estimate.get("details") or {}).get("criteria") or {}).items():
        scores = info.get("scores") if isinstance(info, dict) else None
        if isinstance(scores, list) and len(scores) == len(candidates):
            panels.append((f"{name} score", scores))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.2), squeeze=False)
    for ax, (title, scores) in zip(axes[0], panels):
        ax.plot(candidates, scores, marker="o", ms=3, lw=1.6, color="#4C72B0")
        ax.axvline(estimate["k"], color="#C44E52", lw=1.2, ls="--", label=f"chosen K = {estimate['k']}")
        ax.set_title(plain(title), fontsize=10)
        ax.set_xlabel("K")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8, frameon=False)
        ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return png_uri(fig)
