"""The building blocks' fused kernels compute the formula they replace (golden tests cover the whole networks)."""

import torch
import torch.nn.functional as F

from diamond_pl.nets.blocks import GN_EPS, AdaGroupNorm


def _reference_ada_group_norm(norm: AdaGroupNorm, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """Spec §4: GroupNorm without affine, then x * (1 + scale) + shift with (scale, shift) = linear(cond)."""
    scale, shift = norm.linear(cond)[:, :, None, None].chunk(2, dim=1)
    return F.group_norm(x, norm.num_groups, eps=GN_EPS) * (1 + scale) + shift


def test_ada_group_norm_matches_formula_in_both_layouts():
    torch.manual_seed(0)
    norm = AdaGroupNorm(64, 16)  # 64 channels -> 2 groups, so groups must not mix across samples or each other
    x = torch.randn(5, 64, 6, 7) * 3 + 1
    cond = torch.randn(5, 16)
    g = torch.randn(5, 64, 6, 7)

    results = []
    for fn, layout in [(_reference_ada_group_norm, torch.contiguous_format), (norm.forward, torch.contiguous_format),
                       (norm.forward, torch.channels_last)]:
        xi = x.clone().to(memory_format=layout).requires_grad_(True)
        norm.zero_grad()
        y = fn(norm, xi, cond) if fn is _reference_ada_group_norm else fn(xi, cond)
        (y * g).sum().backward()
        results.append((y.detach(), xi.grad, norm.linear.weight.grad.clone(), norm.linear.bias.grad.clone()))

    ref = results[0]
    for res in results[1:]:
        for a, b in zip(ref, res):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    # the two samples' statistics are independent: changing one sample leaves the other's output unchanged
    x2 = x.clone()
    x2[0] *= 10
    torch.testing.assert_close(norm(x2, cond)[1:], results[1][0][1:])
