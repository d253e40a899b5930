"""Fit on the train split's features, report on the test split's: the protocol of the papers'
CIFAR-10 tables (SCAN and TEMI train on train and score on test).

For each method with its DEFAULT parameters and each seed: ``fit(train, train k-NN)`` (the
cosine neighbours of the train rows among themselves, mined once, as ``nolabel neighbors``),
then ``predict(test)`` and Hungarian ACC / NMI on the test labels; the ACC of the train
assignment is stored too. Labels only score. Ceilings, with labels and never a method: the
20-NN purity of each split within itself, and a linear probe fitted on the train labels and
scored on test (the linear evaluation of self-supervised papers, :data:`PROBE_TRAIN_TEST`).

Runs accumulate seed by seed in ``benchmarks/results/<name>.json`` (a (method, seed) there
is skipped) and the table is rewritten to ``<name>.md``.

    nolabel embed ../shared/datasets/cifar10-jpeg/train -b "efficientnet-lite0?size=160" -o TRAIN.npy
    nolabel embed ../shared/datasets/cifar10-jpeg/test -b "efficientnet-lite0?size=160" -o TEST.npy
    python benchmarks/train_test.py --name c10_lite0_160_train_test --train TRAIN.npy --test TEST.npy --k 10
"""
from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from nolabel.clustering import make_method, neighbors_needed
from nolabel.health import health_check
from nolabel.items import load_items
from nolabel.metrics import hungarian_acc, nmi
from nolabel.neighbors import knn

RESULTS = Path(__file__).parent / "results"
#: table label -> (method, parameters other than the defaults, follow-up method)
METHODS = {"kmeans": ("kmeans", {}, None), "spectral": ("spectral", {}, None), "scan": ("scan", {}, None),
           "scan+selflabel": ("scan", {}, "selflabel"), "sela": ("sela", {}, None), "lsdc": ("lsdc", {}, None),
           "temi": ("temi", {}, None)}
PROBE_TRAIN_TEST = "LogisticRegression(C=10, max_iter=300) on L2-normalised rows, fitted on train, scored on test"


def purity(x: np.ndarray, y: np.ndarray, k: int = 20) -> float:
    """Share of each row's ``k`` cosine neighbours (self excluded) that carry its label (labels: a ceiling)."""
    return float((y[knn(x, k).indices] == y[:, None]).mean())


def probe(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression

    def unit(z):
        return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)

    return float(LogisticRegression(C=10, max_iter=300).fit(unit(xtr), ytr).score(unit(xte), yte))


def run_method(label: str, k: int, seed: int, xtr, ytr, nbtr, xte, yte) -> dict:
    name, params, then = METHODS[label]
    t0 = time.perf_counter()
    est = make_method(name, k, dict(params), seed, then)
    need = neighbors_needed(est)
    est.fit(xtr, nbtr[:, :need] if need else None)
    fit_s = time.perf_counter() - t0
    p = est.predict_proba(xte)
    lab = p.argmax(1)
    return {"seed": seed, "test_acc": hungarian_acc(yte, lab), "test_nmi": nmi(yte, lab),
            "train_acc": hungarian_acc(ytr, est.predict(xtr)), "fit_s": fit_s,
            "test_health": health_check(lab, p.max(1), k)}


def table(store: dict, name: str) -> str:
    meta = store["meta"]
    lines = [f"# {name}: fit on train, scored on test", "",
             f"Written by `benchmarks/train_test.py`; train {meta['n_train']} x {meta['d']} "
             f"(`{meta['train']}`), test {meta['n_test']} (`{meta['test']}`), K {meta['k']}; every method with its "
             "default parameters, fitted on the train features and their cosine k-NN (mined once; each method reads "
             "the first `n_neighbors` it asks for), then "
             "`predict` on test. Labels only score. Mean ± std over the seeds listed; fit seconds per seed on "
             "this machine (2 shared CPU cores, one thread).", "",
             "| method | seeds | test ACC | test NMI | train ACC | test: non-empty | test: largest share | fit s/seed |",
             "|---|---|---|---|---|---|---|---|"]

    def ms(v):
        return f"{100 * np.mean(v):.1f} ± {100 * np.std(v):.1f}"

    for label, runs in store["methods"].items():
        h = [r["test_health"] for r in runs]
        lines.append(f"| {label} | {','.join(str(r['seed']) for r in runs)} | {ms([r['test_acc'] for r in runs])} | "
                     f"{ms([r['test_nmi'] for r in runs])} | {ms([r['train_acc'] for r in runs])} | "
                     f"{min(x['n_nonempty'] for x in h)}/{meta['k']} | {max(x['largest_share'] for x in h):.1%} | "
                     f"{np.mean([r['fit_s'] for r in runs]):.0f} |")
    c = store.get("ceilings", {})
    if c:
        lines += ["", f"Ceilings (labels used; not methods): 20-NN purity {100 * c['purity_train']:.1f} % within "
                  f"train, {100 * c['purity_test']:.1f} % within test; linear probe {100 * c['probe']:.1f} % "
                  f"({PROBE_TRAIN_TEST})."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True, help="results file stem")
    ap.add_argument("--train", type=Path, required=True, help="train features (nolabel embed output, with labels)")
    ap.add_argument("--test", type=Path, required=True, help="test features from the same backbone")
    ap.add_argument("--k", type=int, required=True)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--neighbors", type=int, default=50, help="neighbours mined per train row (>= any method's need)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ceilings", action="store_true", help="also store the 20-NN purities and the linear probe")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    xtr, xte = np.load(args.train).astype(np.float32), np.load(args.test).astype(np.float32)
    ytr, yte = load_items(args.train).labels, load_items(args.test).labels
    path = RESULTS / f"{args.name}.json"
    store = json.loads(path.read_text()) if path.exists() else {"methods": {}}
    store["meta"] = {"train": str(args.train), "test": str(args.test), "n_train": len(xtr), "n_test": len(xte),
                     "d": xtr.shape[1], "k": args.k}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()

    def save(label: str | None = None, run: dict | None = None):
        """Re-read the file and add this process's run, so that two processes (other methods)
        can fill one table side by side."""
        if run is not None:
            found = json.loads(path.read_text())["methods"] if path.exists() else {}
            found[label] = [r for r in found.get(label, []) if r["seed"] != run["seed"]] + [run]
            store["methods"] = found
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(store, indent=1))
        tmp.replace(path)
        (RESULTS / f"{args.name}.md").write_text(table(store, args.name))

    if args.ceilings and "ceilings" not in store:
        store["ceilings"] = {"purity_train": purity(xtr, ytr), "purity_test": purity(xte, yte),
                             "probe": probe(xtr, ytr, xte, yte)}
        print("ceilings", store["ceilings"], flush=True)
        save()
    nbtr = knn(xtr, args.neighbors).indices
    for seed in [int(s) for s in args.seeds.split(",")]:
        for label in args.methods.split(","):
            if any(r["seed"] == seed for r in store["methods"].get(label, [])):
                continue
            run = run_method(label, args.k, seed, xtr, ytr, nbtr, xte, yte)
            run["commit"] = commit
            print(label, seed, f"test {100 * run['test_acc']:.1f} train {100 * run['train_acc']:.1f} "
                  f"{run['fit_s']:.0f}s", flush=True)
            save(label, run)
    print(table(store, args.name))


if __name__ == "__main__":
    main()
