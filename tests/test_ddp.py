"""DistributedDataParallel on CPU (gloo): 2 processes x batch B == 1 process x batch 2B.

Run by pytest, this file launches itself under ``python -m torch.distributed.run
--nproc_per_node 2``; each rank trains the same tiny SCAN model (linear layer + 2 heads,
no BatchNorm, no augmentation) for 2 epochs with :func:`nolabel.train.fit`,
:class:`ShardedBatches` and :func:`scan_loss` with ``pbar`` the global-batch mean.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

from nolabel.nn.heads import MultiHead
from nolabel.train import distributed as D
from nolabel.nn.losses import scan_loss
from nolabel.train.loop import fit

N, K_NN, PER_RANK, EPOCHS = 40, 3, 5, 2


def train(world_batch: int, device: torch.device, rank_means: bool = False) -> nn.Module:
    """``rank_means``: one process computing the entropy on each half-batch separately (what
    per-rank means under DDP would give), to show the test tells the two apart."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, 6, generator=g)
    nbrs = torch.randint(0, N, (N, K_NN), generator=g)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), MultiHead(8, 3, 2))
    wrapped = D.wrap_ddp(model, device)
    opt = torch.optim.SGD(wrapped.parameters(), lr=0.5)
    sampler = D.ShardedBatches(N, world_batch, seed=7)

    def step(idx, epoch):
        nb = nbrs[idx, (idx + epoch) % K_NN]
        p = torch.softmax(wrapped(torch.cat([x[idx], x[nb]])), -1)
        pa, pn = p[:, :len(idx)], p[:, len(idx):]
        total, consistency, _ = scan_loss(pa, pn, 5.0, pbar=D.global_mean(pa, dim=-2))
        if rank_means:
            halves = [scan_loss(pa[:, s], pn[:, s], 5.0)[2] for s in (slice(0, PER_RANK), slice(PER_RANK, None))]
            total = consistency - 5.0 * (halves[0] + halves[1]) / 2
        return {"loss": total.sum()}

    fit(wrapped, step, sampler.batches, EPOCHS, opt, device=device)
    return model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_match_one_with_double_batch(tmp_path):
    out = tmp_path / "ddp.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), __file__, str(out)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    ddp = torch.load(out, weights_only=True)
    single = train(2 * PER_RANK, torch.device("cpu")).state_dict()
    per_rank = train(2 * PER_RANK, torch.device("cpu"), rank_means=True).state_dict()
    torch.manual_seed(1)
    initial = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), MultiHead(8, 3, 2)).state_dict()
    assert set(ddp) == set(single)
    trained = {name for name, _ in nn.Sequential(nn.Linear(6, 8), nn.Tanh(), MultiHead(8, 3, 2)).named_parameters()}
    for key in single:
        assert torch.allclose(ddp[key], single[key], atol=1e-5), key
        if key in trained:  # buffers such as the heads' fixed output scale are not meant to move
            assert not torch.allclose(ddp[key], initial[key], atol=1e-3), f"{key} did not move"
    assert any(not torch.allclose(ddp[k], per_rank[k], atol=1e-4) for k in single), "per-rank means differ"


if __name__ == "__main__":
    torch.set_num_threads(1)
    device = D.init_distributed("cpu")
    assert D.world_size() == 2, "launch with torchrun --nproc_per_node 2"
    trained = train(PER_RANK, device)
    if D.is_main():
        torch.save(trained.state_dict(), Path(sys.argv[1]))
    D.barrier()
    D.cleanup()
