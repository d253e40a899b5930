"""MultiHead: the one-product first layer equals H separate heads (outputs and gradients)."""
import pytest
import torch

from nolabel.nn.heads import MultiHead


def per_head_reference(head: MultiHead, x: torch.Tensor) -> torch.Tensor:
    """Each head on its own, as H separate ``nn.Linear`` stacks would compute it."""
    outs = []
    n_affine = len(head.biases)
    for h in range(head.n_heads):
        z = x if x.dim() == 2 else x[h]
        for layer in range(n_affine):
            if layer:
                z = torch.nn.functional.gelu(z)
            z = z @ head.weights[layer][h] + head.biases[layer][h]
        if head.cosine:
            if n_affine:
                z = torch.nn.functional.gelu(z)
            z = torch.nn.functional.normalize(z, dim=-1) @ torch.nn.functional.normalize(head.weights[-1][h], dim=0)
        outs.append(z * head.scale)
    return torch.stack(outs)


@pytest.mark.parametrize("n_layers, cosine", [(1, False), (2, False), (3, False), (1, True), (3, True)])
@pytest.mark.parametrize("shared", [True, False])
def test_equals_separate_heads(n_layers, cosine, shared):
    g = torch.Generator().manual_seed(0)
    head = MultiHead(12, 5, n_heads=4, hidden=16, n_layers=n_layers, cosine=cosine, generator=g)
    x = torch.randn(7, 12, generator=g) if shared else torch.randn(4, 7, 12, generator=g)
    out = head(x)
    ref = per_head_reference(head, x)
    assert out.shape == (4, 7, 5) and out.is_contiguous()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    grads = torch.autograd.grad(out.square().sum(), list(head.parameters()))
    ref_grads = torch.autograd.grad(ref.square().sum(), list(head.parameters()))
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_selected_heads_keep_their_outputs():
    g = torch.Generator().manual_seed(1)
    head = MultiHead(6, 3, n_heads=5, generator=g)
    x = torch.randn(4, 6, generator=g)
    torch.testing.assert_close(head.select([3, 1])(x), head(x)[[3, 1]])
