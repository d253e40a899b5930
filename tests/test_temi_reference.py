"""TEMI after a few epochs on blobs, against a reference written step by step from the
formulas (``methods/temi.py`` docstring, METHODS.md): the same seeded batches and partner
draws, then for every step the warm-up/cosine learning rate, the prior update before the
loss, the weighted PMI loss summed by hand over clusters, AdamW without decay on biases,
the prototype layer frozen in the first epoch, the EMA teacher on its cosine momentum, and
at the end the head of lowest last-epoch loss. Only the head's architecture (``DINOHead``)
is shared with the library."""
import copy
import math

import numpy as np
import torch

from nolabel import methods
from nolabel.nn.heads import DINOHead

N, D, K, H = 96, 8, 3, 2  # batch 12: 8 batches a pass, the fewest steps an epoch takes (one pass = one epoch)
SETTINGS = dict(n_clusters=K, n_heads=H, epochs=3, batch_size=12, hidden=16, bottleneck=8, n_layers=3,
                n_neighbors=4, lr=5e-2, min_lr=1e-4, weight_decay=1e-2, warmup_epochs=1,
                freeze_prototypes_epochs=1, teacher_momentum=0.9, prior_momentum=0.9, tau=0.1, beta=0.6,
                size_prior="uniform", init="random", seed=5)


def _blobs():
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(K, D)) * 3
    x = (centers[np.arange(N) % K] + rng.normal(size=(N, D))).astype(np.float32)
    z = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = z @ z.T
    np.fill_diagonal(sim, -np.inf)
    return x, np.argsort(-sim, axis=1)[:, : SETTINGS["n_neighbors"]]


def _pmi(student, teacher, prior, beta, tau):
    """log sum_c (q_s(c|x) q_t(c|x'))^beta / prior(c), cluster by cluster: (H, B)."""
    qs, qt = torch.softmax(student / tau, -1), torch.softmax(teacher / tau, -1)
    total = torch.zeros(qs.shape[:2], dtype=qs.dtype)
    for c in range(qs.shape[-1]):
        total = total + (qs[..., c] * qt[..., c]) ** beta / prior[:, c : c + 1]
    return total.log()


def _reference(x, nb, s):
    X = torch.nn.functional.normalize(torch.from_numpy(x), dim=1)
    nbt = torch.from_numpy(nb).long()
    gen = torch.Generator().manual_seed(s["seed"])
    student = DINOHead(D, K, H, s["hidden"], s["bottleneck"], s["n_layers"],
                       generator=torch.Generator().manual_seed(s["seed"] + 1))
    teacher = copy.deepcopy(student)
    named = dict(student.named_parameters())
    opt = torch.optim.AdamW([{"params": [p for n, p in named.items() if not n.startswith("biases")],
                              "weight_decay": s["weight_decay"]},
                             {"params": [p for n, p in named.items() if n.startswith("biases")], "weight_decay": 0.0}])
    prior = torch.full((H, K), 1.0 / K)
    steps = N // s["batch_size"]
    total, warm = steps * s["epochs"], steps * s["warmup_epochs"]
    base = s["lr"] * s["batch_size"] / 256
    t = 0
    for epoch in range(s["epochs"]):
        order = torch.randperm(N, generator=gen)
        last_epoch = torch.zeros(H, dtype=torch.float64)
        for b in range(steps):
            idx = order[b * s["batch_size"] : (b + 1) * s["batch_size"]]
            partner = nbt[idx, torch.randint(nbt.shape[1], (len(idx),), generator=gen)]
            lr = base * t / warm if t < warm else \
                s["min_lr"] + (base - s["min_lr"]) * (1 + math.cos(math.pi * (t - warm) / (total - warm))) / 2
            for group in opt.param_groups:
                group["lr"] = lr
            sa, sb = student(X[idx]), student(X[partner])
            with torch.no_grad():
                ta, tb = teacher(X[idx]), teacher(X[partner])
                q_both = torch.softmax(torch.cat([ta, tb], 1) / s["tau"], -1)
                prior = s["prior_momentum"] * prior + (1 - s["prior_momentum"]) * q_both.mean(1)
                qa, qb = torch.softmax(ta / s["tau"], -1), torch.softmax(tb / s["tau"], -1)
                weight = (qa * qb).sum(-1).mean(0)  # the teacher ensemble's agreement, per pair
            per_head = (weight * -(_pmi(sa, tb, prior, s["beta"], s["tau"]) +
                                   _pmi(sb, ta, prior, s["beta"], s["tau"])) / 2).mean(-1)
            opt.zero_grad()
            per_head.mean().backward()
            if epoch < s["freeze_prototypes_epochs"]:
                named["proto_v"].grad = None
                named["proto_g"].grad = None
            opt.step()
            m = 1 - (1 - s["teacher_momentum"]) * (math.cos(math.pi * t / total) + 1) / 2
            with torch.no_grad():
                for pt, ps in zip(teacher.parameters(), student.parameters()):
                    pt.copy_(m * pt + (1 - m) * ps)
            last_epoch += per_head.detach().double()
            t += 1
    best = int(last_epoch.argmin())
    with torch.no_grad():
        return torch.softmax(teacher(X)[best].double() / s["tau"], -1).float().numpy(), best


def test_temi_matches_a_step_by_step_reference():
    x, nb = _blobs()
    expected, best = _reference(x, nb, SETTINGS)
    est = methods.get("temi")(**SETTINGS).fit(x, nb)
    assert int(np.argmin(est.head_losses_)) == best
    np.testing.assert_allclose(est.predict_proba(x), expected, atol=1e-4)
    assert len(est.history_) == SETTINGS["epochs"]  # (that TEMI separates blobs: test_methods.py)
