"""The HTML report: content, escaping, galleries, no-label runs, and a headless-browser render."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nolabel.assignments import Assignment
from nolabel.data.base import Dataset, array_to_pil
from nolabel.errors import NolabelError
from nolabel.io import save_npy, write_json
from nolabel.items import save_items
from nolabel.report import build_report, plots, summary_table
from nolabel.report.gallery import centrality, select_members, short_id, thumbnail_uri

HOSTILE = "<script>alert(1)</script>&\"'"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;&#x27;"
N_PER_CLASS = 40
COLORS = np.array([[220, 40, 40], [40, 160, 60], [40, 80, 220]], dtype=np.float64)


def _image_dataset(labels: np.ndarray, rng: np.random.Generator) -> Dataset:
    """Small coloured squares (one colour per class, a bright disc, some noise)."""
    n = len(labels)
    yy, xx = np.mgrid[:24, :24]
    disc = ((yy - 12) ** 2 + (xx - 12) ** 2 < 40)[..., None]
    images = COLORS[labels][:, None, None, :] * (0.6 + 0.4 * disc) + rng.normal(0, 12, (n, 24, 24, 3))
    images = np.clip(images, 0, 255).astype(np.uint8)
    ids = [f"img/{i:04d}.png" for i in range(n)]
    ids[0] = f"img/{HOSTILE}.png"
    return Dataset("squares", "image", images, ids, labels=labels, class_names=["red", "green", HOSTILE], loader=array_to_pil)


def _write_result(run: Path, name: str, clusters: np.ndarray, conf: np.ndarray, k: int, ids: list[str],
                  metrics: dict, seeds: list[int], histories: dict[int, list]) -> dict:
    """A method folder as the pipeline writes it; returns its run.json entry."""
    stage = run / "stages" / f"method-{name}-abc123"
    n = len(clusters)
    proba = np.repeat(((1 - conf) / (k - 1))[:, None], k, axis=1).astype(np.float32)
    proba[np.arange(n), clusters] = conf
    for seed in seeds:
        Assignment(clusters.astype(np.int64), conf.astype(np.float32), proba, np.asarray(ids, dtype=str)).save(
            stage / f"seed{seed}" / "assignment.npz")
        extra = {"history": histories[seed]} if seed in histories else {}
        write_json(stage / f"seed{seed}" / "model" / "config.json", {"method": name, "params": {}, "extra": extra})
        write_json(stage / f"seed{seed}" / "metrics.json", {m: v["mean"] for m, v in metrics.items()})
    per_seed = [{m: v["mean"] for m, v in metrics.items()} for _ in seeds]
    write_json(stage / "summary.json", {"method": name, "n_clusters": k, "params": {}, "seeds": seeds,
                                        "per_seed": per_seed, "metrics": metrics})
    return {"name": name, "dir": str(stage.relative_to(run)), "primary_seed": seeds[0], "metrics": metrics}


def _write_features(run: Path, x: np.ndarray, dataset: Dataset) -> str:
    path = run / "stages" / "features-0123456789ab" / "features.npy"
    save_npy(path, x.astype(np.float32))
    write_json(path.with_suffix(".json"), {"count": len(x), "dim": x.shape[1], "dtype": "float32", "backbone": "pixels",
                                          "dataset": dataset.describe()})
    save_items(path, dataset)
    return str(path.relative_to(run))


@pytest.fixture
def labelled_run(tmp_path):
    """3 classes x 40 images, K=5 (cluster 4 empty), two methods, two seeds, histories."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), N_PER_CLASS)
    dataset = _image_dataset(labels, rng)
    x = np.concatenate([np.eye(3)[labels] * 4, np.zeros((len(labels), 13))], axis=1) + rng.normal(0, 0.5, (len(labels), 16))
    clusters = labels.copy()
    clusters[5:9] = 1  # four reds in the green cluster
    clusters[100:110] = 3  # ten of the last class in a fourth cluster
    conf = rng.uniform(0.4, 0.95, len(labels))
    conf[0] = 0.999  # the hostile id is a prototype of cluster 0
    run = tmp_path / "run"
    features = _write_features(run, x, dataset)
    metrics = {"acc": {"mean": 0.8123, "std": 0.0045}, "nmi": {"mean": 0.7011, "std": 0.0}}
    results = [
        _write_result(run, "scan", clusters, conf, 5, dataset.ids, metrics, [0, 1],
                      {0: [2.0, 1.5, 1.2, 1.1], 1: [{"epoch": 1, "loss": 2.1, "entropy": 0.9}, {"epoch": 2, "loss": 1.4, "entropy": 1.0}]}),
        _write_result(run, "kmeans", labels, np.full(len(labels), 0.7), 5, dataset.ids,
                      {"acc": {"mean": 0.9917, "std": 0.0}, "nmi": {"mean": 0.95, "std": 0.0}}, [0], {}),
    ]
    write_json(run / "run.json", {
        "version": 1,
        "config": {"data": f"/data/{HOSTILE}", "split": "test", "backbone": "pixels", "methods": ["scan", "kmeans"],
                   "then": None, "k": 5, "seeds": [0, 1]},
        "dataset": dataset.describe(), "features": features, "neighbors": None, "k": 5,
        "k_estimate": {"method": "auto", "candidates": [2, 3, 4, 5, 6], "scores": [0.1, 0.8, 0.3, 0.2, 0.1], "k": 3,
                       "details": {"criteria": {"eigengap": {"scores": [0.2, 0.9, 0.1, 0.1, 0.0]},
                                                "silhouette": {"scores": [0.3, 0.5, 0.4, 0.35, 0.3]}}}},
        "results": results, "timings": {"features": 1.25, "scan": 3.5, "kmeans": 0.5},
    })
    return run, dataset, clusters


@pytest.fixture
def text_run(tmp_path):
    """Texts without labels, one method, K=3."""
    rng = np.random.default_rng(1)
    topics = np.repeat(np.arange(3), 10)
    texts = [f"document {i} about topic {t} " + "word " * int(rng.integers(5, 80)) for i, t in enumerate(topics)]
    texts[3] = f"a hostile text {HOSTILE}"
    dataset = Dataset("notes", "text", texts, [f"line{i}" for i in range(len(texts))])
    x = np.eye(3)[topics] * 3 + rng.normal(0, 0.3, (len(texts), 3))
    run = tmp_path / "textrun"
    features = _write_features(run, x, dataset)
    conf = rng.uniform(0.5, 1.0, len(texts))
    conf[3] = 1.0
    results = [_write_result(run, "kmeans", topics, conf, 3, dataset.ids, {}, [0], {})]
    write_json(run / "run.json", {
        "version": 1, "config": {"data": "notes.txt", "split": "test", "backbone": "minilm", "methods": ["kmeans"], "seeds": [0]},
        "dataset": dataset.describe(), "features": features, "neighbors": None, "k": 3, "k_estimate": None,
        "results": results, "timings": {"features": 0.2, "kmeans": 0.1},
    })
    return run, dataset


def _method_sections(html: str) -> list[str]:
    starts = [m.start() for m in re.finditer('<section class="method"', html)]
    return [html[a:b] for a, b in zip(starts, starts[1:] + [html.index('id="timings"') if 'id="timings"' in html[starts[-1]:] else len(html)])]


def test_report_content_and_escaping(labelled_run):
    run, dataset, clusters = labelled_run
    path = build_report(run, dataset=dataset, max_per_cluster=6)
    assert path == run / "report.html"
    html = path.read_text()
    # one gallery section per method: scan (clusters 0-3; 4 is empty) and kmeans (the three classes)
    scan, kmeans = _method_sections(html)
    assert 'data-method="scan"' in scan and 'data-method="kmeans"' in kmeans
    assert scan.count('<section class="cluster"') == 4 and kmeans.count('<section class="cluster"') == 3
    for c in np.unique(clusters):
        assert f'id="m0-cluster-{c}"' in scan
    assert 'id="m0-cluster-4"' not in html  # the empty cluster has no gallery
    # metrics: mean +- std in %, seeds and split stated, both methods, comparison table
    assert "81.23 \u00b1 0.45" in html and "70.11 \u00b1 0.00" in html and "99.17 \u00b1 0.00" in html
    assert "<b>test</b> split" in html
    for section in ("health", "comparison", "confusion", "curves", "kestimate", "map"):
        assert f'id="{section}"' in html
    # hostile strings (a class name, an item id, the data path) are escaped everywhere; the only
    # scripts are the page's own and its JSON map data
    assert HOSTILE not in html and html.count("<script") == 2
    assert html.count(ESCAPED) >= 3
    # cluster 0 holds 36 reds and 0 others after the swaps: majority "red", purity 100%
    section0 = scan[scan.index('id="m0-cluster-0"'):scan.index('id="m0-cluster-1"')]
    assert "<b>red</b> (purity 100.0%)" in section0
    # cluster 1: 40 greens + 4 reds -> purity 40/44; the reds are framed as off-majority
    section1 = scan[scan.index('id="m0-cluster-1"'):scan.index('id="m0-cluster-2"')]
    assert f"(purity {100 * 40 / 44:.1f}%)" in section1
    # every cluster shows min(size, 6) prototypes + least-confident ones (max(2, 6 // 3) = 2)
    assert section0.count("<figure") == 6 + 2
    # captions show the relative path, not only the file name
    assert re.search(r'<span class="id">img/\d{4}\.png</span>', section0)
    # thumbnails embedded, nothing external; one hover target per item on the map (120 < 2000 points)
    assert html.count('<img src="data:image/') == 8 * (4 + 3)  # 6 prototypes + 2 least confident per cluster
    assert html.count('<circle class="pt"') == len(clusters)
    assert not re.search(r'src="(?!data:)', html) and "http://" not in html and "https://" not in html


def test_health_check_rendered_and_collapse_warned(labelled_run):
    run, dataset, _ = labelled_run
    html = build_report(run, dataset=dataset).read_text()
    health = html[html.index('id="health"'):html.index('id="metrics"')]
    rows = re.findall(r"<tr><td>(\w+)</td><td class=num>([^<]*)</td><td class=num>([^<]*)</td><td class=num>([^<]*)</td>", health)
    # scan: clusters of 36, 44, 30, 10 and an empty one of K=5; kmeans: 40, 40, 40 and two empty
    assert rows == [("scan", "4 / 5", f"{100 * 44 / 120:.1f}", "0.0"), ("kmeans", "3 / 5", f"{100 * 40 / 120:.1f}", "0.0")]
    warn = re.findall(r'<p class="warn">(.*?)</p>', html)
    assert len(warn) == 2 and "scan looks collapsed" in warn[0] and "clusters are empty" in warn[0]
    assert html.index('class="warn"') < html.index('id="metrics"')  # at the top of the page
    # a health dict stored by the run is shown as it is (agreement with k-means included)
    manifest = json.loads((run / "run.json").read_text())
    manifest["results"][1]["metrics"]["health"] = {
        "n_clusters": 5, "n_nonempty": 5, "largest_share": 0.25, "smallest_share": 0.125, "mean_confidence": 0.9,
        "agreement_kmeans": 0.875, "warnings": []}
    (run / "run.json").write_text(json.dumps(manifest))
    html = build_report(run, dataset=dataset).read_text()
    health = html[html.index('id="health"'):html.index('id="metrics"')]
    assert "<tr><td>kmeans</td><td class=num>5 / 5</td><td class=num>25.0</td><td class=num>12.5</td><td class=num>0.900</td><td class=num>87.5</td><td class=num>ok</td>" in health
    assert len(re.findall(r'<p class="warn">', html)) == 1


def test_health_shows_the_agreement_the_run_stored_per_seed(labelled_run):
    """`nolabel run` stores each seed's health (agreement with k-means included) in its row of
    summary.json, not in run.json: the report shows that one, for the primary seed."""
    run, dataset, _ = labelled_run
    manifest = json.loads((run / "run.json").read_text())
    summary_path = run / manifest["results"][0]["dir"] / "summary.json"  # scan, seeds 0 and 1
    summary = json.loads(summary_path.read_text())
    for seed, row in zip(summary["seeds"], summary["per_seed"]):
        row["health"] = {"n_clusters": 5, "n_nonempty": 5, "largest_share": 0.3, "smallest_share": 0.05,
                         "mean_confidence": 0.8, "agreement_kmeans": 0.61 + 0.1 * seed, "warnings": []}
    summary_path.write_text(json.dumps(summary))
    html = build_report(run, dataset=dataset).read_text()
    health = html[html.index('id="health"'):html.index('id="metrics"')]
    assert ("<tr><td>scan</td><td class=num>5 / 5</td><td class=num>30.0</td><td class=num>5.0</td>"
            "<td class=num>0.800</td><td class=num>61.0</td><td class=num>ok</td>") in health
    assert "<tr><td>kmeans</td><td class=num>3 / 5</td>" in health  # no stored health: computed, no agreement
    assert "scan looks collapsed" not in html and "kmeans looks collapsed" in html


def test_report_without_labels_has_no_confusion_matrix(text_run):
    run, dataset = text_run
    html = build_report(run, dataset=dataset).read_text()
    assert 'id="confusion"' not in html and "Confusion matrix" not in html
    assert "no labels" in html
    assert html.count('<section class="cluster"') == 3
    assert 'id="comparison"' not in html  # one method only
    assert 'class="texts"' in html and "a hostile text " + ESCAPED in html and HOSTILE not in html
    assert "majority class" not in html


def test_report_limits_clusters_and_writes_elsewhere(labelled_run, tmp_path):
    run, dataset, clusters = labelled_run
    out = build_report(run, out=tmp_path / "elsewhere" / "r.html", dataset=dataset, max_per_cluster=3, max_clusters=2)
    html = out.read_text()
    assert not (run / "report.html").exists()
    scan, kmeans = _method_sections(html)
    assert scan.count('<section class="cluster"') == 2 and kmeans.count('<section class="cluster"') == 2
    # the two largest clusters of scan: 1 (44 items) and 0 (36)
    assert 'id="m0-cluster-1"' in scan and 'id="m0-cluster-0"' in scan and 'id="m0-cluster-3"' not in scan
    assert "The 2 largest of 4 non-empty clusters are shown." in scan


def test_report_without_matching_dataset_lists_ids(labelled_run):
    run, dataset, _ = labelled_run
    other = dataset.subset(np.arange(10))
    html = build_report(run, dataset=other).read_text()
    assert "item ids differ" in html
    scan, kmeans = _method_sections(html)
    assert scan.count('<section class="cluster"') == 4
    figures = re.findall(r"<figure.*?</figure>", scan)
    assert len(figures) == 4 * (12 + 4) - (12 + 4 - 10)  # cluster 3 holds only 10 items
    assert all("<img" not in f and re.search(r'<span class="id">img/\d{4}\.png</span>', f) for f in figures[1:])


def test_report_of_a_pipeline_run_reloads_its_data(tmp_path):
    """End to end: `Pipeline.fit` on an image folder, then the report finds the images by
    itself (thumbnails); with the folder gone it lists ids and says why."""
    from nolabel.pipeline import Pipeline

    rng = np.random.default_rng(0)
    for name, color in (("red", (220, 40, 40)), ("blue", (40, 60, 220))):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(12):
            pixels = np.clip(np.array(color)[None, None] + rng.normal(0, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "data" / name / f"{i:02d}.png")
    pipeline = Pipeline(out=tmp_path / "run", data=str(tmp_path / "data"), backbone="pixels", methods=["kmeans"], k=2,
                        seeds=[0, 1], device="cpu").fit(progress=False, log=lambda msg: None)
    html = pipeline.report().read_text()
    assert html.count('<section class="cluster"') == 2
    assert html.count("<figure") == html.count('<img src="data:image/') == 24
    assert "100.00 \u00b1 0.00" in html  # two well separated colours: k-means is perfect with both seeds
    assert 'class="note"' not in html
    # a click opens the original file: each thumbnail links to it; captions give the class folder
    links = re.findall(r'<a class="open" href="(file://[^"]+)" data-id="([^"]+)"', html)
    assert len(links) == 24 and all(Path(href[7:]).is_file() and href.endswith(rel) for href, rel in links)
    assert {rel.split("/")[0] for _, rel in links} == {"red", "blue"}
    shutil.move(tmp_path / "data", tmp_path / "moved")
    html = build_report(tmp_path / "run").read_text()
    assert 'class="note"' in html and "could not be loaded" in html
    assert html.count("<figure") == 24 and '<img src="data:image/' not in html


def test_build_report_errors(tmp_path, labelled_run):
    with pytest.raises(NolabelError, match="not a nolabel run folder"):
        build_report(tmp_path / "nothing")
    run, dataset, _ = labelled_run
    with pytest.raises(NolabelError, match="max_per_cluster"):
        build_report(run, dataset=dataset, max_per_cluster=0)


def test_summary_table():
    rows = summary_table([
        {"name": "scan", "metrics": {"acc": {"mean": 0.5, "std": 0.01}, "ari": {"mean": 0.25, "std": 0.0}}},
        {"name": "plain", "metrics": {}},
    ])
    assert rows == [
        {"method": "scan", "acc": "50.00 \u00b1 1.00", "ari": "25.00 \u00b1 0.00"},
        {"method": "plain", "acc": None, "ari": None},
    ]


def test_select_members_by_confidence():
    conf = np.array([0.9, 0.1, 0.5, 0.7, 0.3, 0.5, 0.2])
    members = np.array([0, 2, 3, 4, 5, 6])
    proto, least = select_members(conf, members, 2, 3)
    assert proto.tolist() == [0, 3]
    assert least.tolist() == [6, 4, 5]  # lowest first; of the tied 0.5s the later index is the less confident
    proto, least = select_members(conf, members, 10, 3)
    assert proto.tolist() == [0, 3, 2, 5, 4, 6] and least.tolist() == []


def test_confidence_ties_broken_by_closeness_to_cluster_mean():
    # saturated confidences (all 1.0 up to rounding): the member nearest the mean direction comes first
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.2], [5.0, 0.0]])
    members = np.array([0, 1, 2, 3])
    sim = centrality(x, members)
    mean = (x[:4] / np.linalg.norm(x[:4], axis=1, keepdims=True)).mean(axis=0)
    assert np.allclose(sim, x[:4] @ mean / np.linalg.norm(x[:4], axis=1) / np.linalg.norm(mean))
    conf = np.array([1.0, 0.99996, 0.99999, 1.0, 0.2])
    proto, least = select_members(conf, members, 1, 1, sim)
    assert proto.tolist() == [2] and least.tolist() == [1]  # (1, 1) is the mean direction; (0, 1) the farthest
    assert short_id("cat/0012.jpg") == "0012.jpg" and short_id("line7") == "line7"


def test_thumbnail_size_and_grey():
    uri, size = thumbnail_uri(Image.new("RGB", (200, 100), (10, 200, 30)))
    assert size == (128, 64) and uri.startswith("data:image/")
    uri, size = thumbnail_uri(np.full((28, 28), 128, dtype=np.uint8))
    assert size == (28, 28)  # never enlarged
    import base64
    import io

    img = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert img.mode == "L"


def test_plots_take_user_strings_literally():
    # an unbalanced mathtext string in a class name would make matplotlib raise while drawing
    uri = plots.confusion_plot(np.array([0, 1, 1]), np.array([0, 1, 0]), [r"$\frac{$ x", HOSTILE], 2)
    assert uri.startswith("data:image/png;base64,")
    assert plots.plain("a $b$") == r"a \$b\$"


def test_hungarian_column_order():
    labels = np.array([0, 0, 1, 1, 2, 2])
    clusters = np.array([2, 2, 0, 0, 3, 3])  # cluster 2 -> class 0, 0 -> 1, 3 -> 2, 1 empty
    assert plots.hungarian_column_order(labels, clusters, 4) == [2, 0, 3, 1]
    counts = plots.class_cluster_counts(labels, clusters, 3, 4)
    assert counts.tolist() == [[0, 0, 2, 0], [2, 0, 0, 0], [0, 0, 0, 2]]


def _chromium() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def _run_chromium(browser: str, args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def test_report_renders_in_headless_chromium(labelled_run, tmp_path):
    """What a person sees after the page's script ran: both methods' galleries (the first
    shown, the second behind its selector button), one hover target per map point, captions
    with relative paths, the collapse warning; and a screenshot that is not blank."""
    browser = _chromium()
    if browser is None:
        pytest.skip("needs Debian's chromium (/usr/bin/chromium or `chromium` on PATH): apt-get install -y chromium")
    run, dataset, _ = labelled_run
    report = build_report(run, dataset=dataset)
    dom = _run_chromium(browser, ["--virtual-time-budget=5000", "--dump-dom", report.resolve().as_uri()], tmp_path).stdout
    assert dom.rstrip().endswith("</html>"), "chromium returned no DOM"
    methods = re.findall(r'<section class="method" id="gallery-(\d)" data-method="(\w+)"( hidden="")?>', dom)
    assert methods == [("0", "scan", ""), ("1", "kmeans", ' hidden=""')]  # the script shows one method at a time
    assert re.findall(r'<button type="button" data-m="\d"[^>]*>(\w+)</button>', dom) == ["scan", "kmeans"]
    # the script coloured every point and gave it its value (class or cluster) for the hover text
    points = re.findall(r'<circle class="pt" data-i="(\d+)"[^>]* data-v="([^"]*)"', dom)
    assert len(points) == len(dataset) and sorted(int(i) for i, _ in points) == list(range(len(dataset)))
    assert len(re.findall(r'<span class="id">img/\d{4}\.png</span>', dom)) >= 50
    assert "scan looks collapsed" in dom
    shot = tmp_path / "report.png"
    _run_chromium(browser, ["--window-size=1280,2000", f"--screenshot={shot}", report.resolve().as_uri()], tmp_path)
    assert shot.exists(), "chromium wrote no screenshot"
    img = Image.open(shot).convert("RGB")
    assert img.size == (1280, 2000)
    pixels = np.asarray(img)
    assert (pixels < 250).any(axis=2).mean() > 0.02  # not a blank page
    # the red collapse warning is drawn near the top of the page
    top = pixels[:700].reshape(-1, 3).astype(int)
    assert ((np.abs(top - [0xfd, 0xec, 0xea]).sum(axis=1) < 6).sum()) > 5000


def test_health_shares_of_a_report_without_empty_clusters():
    from nolabel.health import health_check

    h = health_check(np.array([0, 0, 1, 1, 1, 2]), np.ones(6), 3)
    assert (h["n_nonempty"], h["largest_share"], h["smallest_share"]) == (3, 0.5, 1 / 6)


@pytest.mark.parametrize("method", ["UMAP", "t-SNE"])
def test_embedding_map_layout_keeps_blobs_apart(method, monkeypatch):
    """Both layouts (UMAP when umap-learn is installed, t-SNE otherwise) keep three separated
    blobs apart: every point's nearest 2-D neighbour is from its own blob."""
    import builtins

    from nolabel.report.embedding_map import layout_2d

    if method == "UMAP":
        pytest.importorskip("umap", reason="needs pip install 'nolabel[umap]'")
    else:
        real_import = builtins.__import__

        def no_umap(name, *args, **kwargs):
            if name == "umap":
                raise ImportError(name)
            return real_import(name, *args, **kwargs)

        monkeypatch.setattr(builtins, "__import__", no_umap)
    rng = np.random.default_rng(0)
    centres = np.eye(3, 16) * 10
    x = np.concatenate([c + rng.normal(size=(60, 16)) for c in centres]).astype(np.float32)
    blob = np.repeat(np.arange(3), 60)
    idx, xy, how = layout_2d(x, max_points=150)
    assert how == method and len(idx) == 150 == len(np.unique(idx)) and xy.shape == (150, 2)
    d = ((xy[:, None] - xy[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert (blob[idx][d.argmin(1)] == blob[idx]).mean() == 1.0
