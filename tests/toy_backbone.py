"""A backbone for feature-extraction tests: rows ``x -> x @ W`` (``tanh(x @ W)`` with
``squash``) for a fixed ``W`` of shape (5, 3)."""
import torch

from nolabel.backbones.base import Backbone

D_IN, DIM = 5, 3


class LinearBackbone(Backbone):
    """Counts forward calls in ``calls``; raises on call number ``fail_on``; appends the
    first value of every batch to the file ``log`` (one line per batch)."""

    spec = "test:linear"
    modality = "vector"
    dim = DIM

    def __init__(self, fail_on=None, log=None, squash=False):
        super().__init__()
        self.weight = torch.arange(D_IN * DIM, dtype=torch.float32).reshape(D_IN, DIM) / 10 - 0.7
        self.calls, self.fail_on, self.log, self.squash = 0, fail_on, log, squash

    def preprocess(self, item):
        return torch.as_tensor(item)

    def forward_batch(self, batch):
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError("killed")
        if self.log is not None:
            with open(self.log, "a") as f:
                f.write(" ".join(str(int(v)) for v in batch[:, 0].tolist()) + "\n")
        out = batch @ self.weight
        return torch.tanh(out) if self.squash else out
