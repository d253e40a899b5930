"""TEMI training throughput: H heads as one batched MultiHead against a Python loop over heads.

N = 50,000 random embeddings of d = 384; each step draws a batch of B anchors and one
random partner each, runs the student on both views, the EMA teacher (no gradient), the
TEMI loss of every head (:func:`nolabel.nn.losses.temi_loss`), backward, AdamW and the
EMA update: what ``methods.temi`` does per step. The reference holds the same heads as H
separate ``nn.Module`` MLPs (Linear-GELU-Linear-GELU-cosine prototypes) evaluated one by
one. Both are timed in the same process, after warm-up steps; the ratio is what to read.

    python benchmarks/heads.py                 # H = 16 and 50, CPU (CUDA when present)
    python benchmarks/heads.py --steps 10      # quicker
Writes benchmarks/results/heads.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nolabel.nn import EMA, MultiHead, temi_loss

RESULTS = Path(__file__).parent / "results"


class OneHead(nn.Module):
    """One TEMI head as a plain module: the reference the batched heads replace."""

    def __init__(self, d: int, hidden: int, k: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU())
        self.prototypes = nn.Parameter(torch.randn(hidden, k) / hidden**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(x), dim=-1) @ F.normalize(self.prototypes, dim=0)


class LoopHeads(nn.Module):
    def __init__(self, d: int, hidden: int, k: int, n_heads: int):
        super().__init__()
        self.heads = nn.ModuleList(OneHead(d, hidden, k) for _ in range(n_heads))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([head(x) for head in self.heads])


def throughput(student: nn.Module, x: torch.Tensor, batch: int, steps: int, warmup: int, k: int) -> float:
    """Anchor samples per second of full TEMI training steps."""
    teacher = EMA(student)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3, weight_decay=1e-4)
    n_heads = student(x[:2]).shape[0]
    prior = torch.full((n_heads, k), 1.0 / k, device=x.device)
    gen = torch.Generator().manual_seed(0)

    def step() -> None:
        idx = torch.randint(len(x), (batch,), generator=gen).to(x.device)
        partner = torch.randint(len(x), (batch,), generator=gen).to(x.device)
        both = torch.cat([x[idx], x[partner]])
        s = student(both)
        with torch.no_grad():
            t = teacher.module(both)
        loss = temi_loss(s[:, :batch], s[:, batch:], t[:, :batch], t[:, batch:], prior).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        teacher.update(student, 0.996)

    for _ in range(warmup):
        step()
    if x.is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if x.is_cuda:
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--heads", type=int, nargs="+", default=[16, 50])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    x = F.normalize(torch.randn(args.n, args.dim, generator=torch.Generator().manual_seed(0)), dim=1).to(device)
    rows = []
    for h in args.heads:
        torch.manual_seed(0)
        batched = MultiHead(args.dim, args.k, h, hidden=args.hidden, n_layers=3, cosine=True).to(device)
        loop = LoopHeads(args.dim, args.hidden, args.k, h).to(device)
        fast = throughput(batched, x, args.batch, args.steps, args.warmup, args.k)
        slow = throughput(loop, x, args.batch, args.steps, args.warmup, args.k)
        rows.append({"heads": h, "batched_samples_per_s": fast, "loop_samples_per_s": slow, "ratio": fast / slow})
        print(f"H={h}: batched {fast:.0f} samples/s, loop {slow:.0f} samples/s, ratio {fast / slow:.2f}x", flush=True)
    meta = {"n": args.n, "dim": args.dim, "k": args.k, "hidden": args.hidden, "batch": args.batch, "steps": args.steps,
            "device": str(device), "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "heads.json").write_text(json.dumps({"settings": meta, "rows": rows}, indent=1))
    lines = ["# TEMI heads: one batched MultiHead vs a Python loop over heads", "",
             f"Written by `benchmarks/heads.py`: N={args.n}, d={args.dim}, K={args.k}, hidden {args.hidden}, "
             f"batch {args.batch} anchors (+ partners), {args.steps} timed steps after {args.warmup} warm-up, "
             f"device {device}, {meta['threads']} threads. Full training steps (student, EMA teacher, loss, "
             "backward, AdamW, EMA update); measured in one process, read the ratio.", "",
             "| heads | batched samples/s | loop samples/s | ratio |", "|---|---|---|---|"]
    lines += [f"| {r['heads']} | {r['batched_samples_per_s']:.0f} | {r['loop_samples_per_s']:.0f} | {r['ratio']:.2f}x |"
              for r in rows]
    (RESULTS / "heads.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
