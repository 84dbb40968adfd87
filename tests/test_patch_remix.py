"""HoloFusion's top-k patch-remix loss (Eq. 8 per patch) against a direct loop over patches."""

import math

import pytest
import torch
import torch.nn.functional as F

from distill3d.guidance.patch_remix import patch_choice, patch_remix_loss


def _direct(render: torch.Tensor, bank: torch.Tensor, p: int) -> tuple[float, torch.Tensor]:
    """Loop over images and patches: per patch the closest sample's summed error; total / (B H W 3)."""
    B, K, H, W, C = bank.shape
    total, choices = 0.0, torch.zeros(B, math.ceil(H / p), math.ceil(W / p), dtype=torch.long)
    for b in range(B):
        for i, y in enumerate(range(0, H, p)):
            for j, x in enumerate(range(0, W, p)):
                errors = [float(((bank[b, k, y:y + p, x:x + p] - render[b, y:y + p, x:x + p]) ** 2).sum())
                          for k in range(K)]
                total += min(errors)
                choices[b, i, j] = min(range(K), key=errors.__getitem__)
    return total / (B * H * W * C), choices


@pytest.mark.parametrize("size,p", [((32, 32), 16), ((20, 27), 8), ((7, 5), 16)])
def test_matches_a_direct_loop_over_patches(size, p):
    g = torch.Generator().manual_seed(0)
    render = torch.rand(2, *size, 3, generator=g, dtype=torch.float64)
    bank = torch.rand(2, 4, *size, 3, generator=g, dtype=torch.float64)
    loss, stats = patch_remix_loss(render, bank, p)
    expected, choices = _direct(render, bank, p)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    assert torch.equal(patch_choice(render, bank, p), choices)
    shares = [stats[f"share_{k}"] for k in range(4)]
    assert sum(shares) == pytest.approx(1.0)
    assert shares == pytest.approx([float((choices == k).float().mean()) for k in range(4)])


@pytest.mark.parametrize("size,p", [((32, 32), 16), ((19, 13), 16)])
def test_one_sample_is_the_mean_squared_error(size, p):
    g = torch.Generator().manual_seed(1)
    render, target = torch.rand(3, *size, 3, generator=g), torch.rand(3, *size, 3, generator=g)
    loss, stats = patch_remix_loss(render, target[:, None], p)
    assert loss.item() == pytest.approx(F.mse_loss(render, target).item(), rel=1e-6)
    assert stats["share_0"] == 1.0 and stats["gap"] == pytest.approx(0.0, abs=1e-7)


def test_each_patch_follows_its_closest_sample():
    # two samples, each equal to the render on a different half: the loss is 0 and the patches split
    g = torch.Generator().manual_seed(2)
    render = torch.rand(1, 32, 32, 3, generator=g)
    a, b = torch.rand(2, 1, 32, 32, 3, generator=g)
    a[:, :, :16], b[:, :, 16:] = render[:, :, :16], render[:, :, 16:]
    bank = torch.stack([a, b], dim=1)
    loss, stats = patch_remix_loss(render, bank, 16)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    assert patch_choice(render, bank, 16).tolist() == [[[0, 1], [0, 1]]]
    assert stats["share_0"] == stats["share_1"] == 0.5
    # a whole-image minimum (Eq. 8 without the remix) cannot fit both halves
    whole = min(F.mse_loss(render, bank[:, k]).item() for k in range(2))
    assert whole > 0.05 and stats["gap"] > 0


def test_gradient_reaches_the_render_only():
    g = torch.Generator().manual_seed(3)
    render = torch.rand(2, 16, 16, 3, generator=g).requires_grad_(True)
    bank = torch.rand(2, 3, 16, 16, 3, generator=g).requires_grad_(True)
    loss, _ = patch_remix_loss(render, bank, 8)
    loss.backward()
    assert bank.grad is None
    # d loss / d render = 2 (render - chosen sample) / (B H W 3), the chosen sample per patch
    choice = patch_choice(render, bank, 8)                              # [2, 2, 2]
    chosen = choice.repeat_interleave(8, 1).repeat_interleave(8, 2)      # [2, 16, 16]
    target = torch.gather(bank.detach(), 1, chosen[:, None, :, :, None].expand(2, 1, 16, 16, 3))[:, 0]
    assert torch.allclose(render.grad, 2 * (render.detach() - target) / render.numel(), atol=1e-7)


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError):
        patch_remix_loss(torch.rand(1, 8, 8, 3), torch.rand(1, 2, 8, 9, 3))
    with pytest.raises(ValueError):
        patch_remix_loss(torch.rand(1, 8, 8, 3), torch.rand(1, 2, 8, 8, 3), patch_size=0)
