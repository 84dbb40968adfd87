"""Cross-view self-attention: it mixes the views of one object, and only those."""

import math

import pytest
import torch
from diffusers.models.attention_processor import Attention

from distill3d.diffusion.multiview_attention import (MultiViewAttnProcessor, multiview_attention_views,
                                                     remove_multiview_attention, set_multiview_attention)
from distill3d.world_models.networks import UNetConfig, build_unet

TINY = UNetConfig(block_out_channels=(16, 32), attention_levels=(1,), attention_head_dim=16, norm_num_groups=8)


def _unet():
    torch.manual_seed(0)
    return build_unet(TINY, in_channels=3, out_channels=3, sample_size=8, cross_attention_dim=16).eval()


def _inputs(batch):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(batch, 3, 8, 8, generator=g), torch.full((batch,), 300),
            torch.randn(batch, 2, 16, generator=g))


@torch.no_grad()
def test_processor_is_joint_attention_over_the_views_of_each_object():
    torch.manual_seed(0)
    attn = Attention(query_dim=8, heads=2, dim_head=4)
    views, n = 3, 5
    x = torch.randn(2 * views, n, 8)
    out = MultiViewAttnProcessor(views)(attn, x)
    # by hand: every token of object b attends to all views * n tokens of object b
    joined = x.reshape(2, views * n, 8)
    q, k, v = (f(joined).reshape(2, views * n, 2, 4).transpose(1, 2) for f in (attn.to_q, attn.to_k, attn.to_v))
    weights = (q @ k.transpose(-1, -2) / math.sqrt(4)).softmax(-1)
    expected = attn.to_out[0]((weights @ v).transpose(1, 2).reshape(2, views * n, 8)).reshape(2 * views, n, 8)
    assert torch.allclose(out, expected, atol=1e-5)


@torch.no_grad()
def test_changing_one_view_changes_the_others_only_with_the_processor():
    unet = _unet()
    assert set_multiview_attention(unet, 2) > 0 and multiview_attention_views(unet) == 2
    x, t, emb = _inputs(4)  # 2 objects x 2 views
    x2 = x.clone()
    x2[1] += 1.0  # view 2 of object 0
    out, out2 = unet(x, t, emb).sample, unet(x2, t, emb).sample
    assert (out[0] - out2[0]).abs().max() > 1e-4  # view 1 of the same object sees it
    assert torch.allclose(out[2:], out2[2:], atol=1e-6)  # the other object does not
    remove_multiview_attention(unet)
    assert multiview_attention_views(unet) is None
    out, out2 = unet(x, t, emb).sample, unet(x2, t, emb).sample
    assert torch.allclose(out[0], out2[0], atol=1e-6)


@torch.no_grad()
def test_one_view_is_ordinary_attention():
    unet = _unet()
    x, t, emb = _inputs(3)
    plain = unet(x, t, emb).sample
    set_multiview_attention(unet, 1)
    assert torch.allclose(unet(x, t, emb).sample, plain, atol=1e-6)


def test_batch_must_hold_whole_objects():
    attn = Attention(query_dim=8, heads=2, dim_head=4)
    with pytest.raises(ValueError):
        MultiViewAttnProcessor(2)(attn, torch.randn(3, 4, 8))
