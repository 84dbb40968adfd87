"""Starting PEPD's Pattern Extraction and image encoder from the multi-view teacher's weights.

DD3G's Pattern Extraction is built from the teacher's own kinds of layers (ResBlocks, SpatialTransformer3D)
and its image tokens come from the teacher's image encoder (Sec. III-B), so the student can start where
the teacher is instead of from noise. ``teacher_shaped_student`` sizes the student's Pattern Extraction
like the world multi-view teacher's U-Net encoder, and ``init_from_teacher`` copies every layer whose role
and shape match, as far as the student's inputs allow:

    student                                 teacher (``WorldMultiViewNet``)
    image_encoder.patchify                  image_tokens.patchify; the first convolution's image channels
                                            only (the teacher also reads the input camera's rays, which
                                            the student is not given)
    image_encoder.position, .norm           image_tokens.position, .norm
    pattern_extraction.conv_in              unet.conv_in; the channels of the noisy view (N) and of the
                                            target rays (the input-image channels are dropped)
    pattern_extraction.down[0], [1]         unet.down_blocks[1].resnets[0], unet.down_blocks[2].resnets[0]
    pattern_extraction.down[2]              unet.mid_block.resnets[0]
    pattern_extraction.res_blocks[0]        unet.mid_block.resnets[1]
    pattern_extraction.transformers[0]      unet.mid_block.attentions[0] (3D self-attention over the views,
                                            cross-attention to the image tokens, GEGLU feed-forward;
                                            the 1x1 projections become linear ones)

A teacher ResBlock adds its time embedding as a scale and shift after its second GroupNorm; the student
has no timestep, so the embedding of t = T - 1 (where the teacher starts from N) is folded into that
GroupNorm's affine weights, exactly. The parts of the teacher's embedding that depend on its input (the
cameras' MLP, the pooled image tokens) are left out. The student's downsampling (average pooling inside
its ResBlocks) and its output layers (``norm_out``, ``conv_out``, Progressive Decoding) stay as built.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from diffusers.models.resnet import ResnetBlock2D
from torch import nn

from distill3d.errors import UserError
from distill3d.methods.dd3g.image_encoder import ImageEncoderConfig
from distill3d.methods.dd3g.pattern_extraction import PatternExtractionConfig
from distill3d.methods.dd3g.spatial_transformer_3d import SpatialTransformer3D
from distill3d.methods.dd3g.student import PEPDConfig, PEPDStudent
from distill3d.world_models.networks import MultiViewNetConfig, WorldMultiViewNet

NOISE_CHANNELS = [0, 1, 2]
"""Channels of a teacher view's input that hold the noisy view (``networks.VIEW_CHANNELS``: noisy view,
input image, rays)."""
RAY_CHANNELS = list(range(6, 12))
"""Channels of a teacher view's input that hold its Pluecker rays."""


def teacher_shaped_student(student: PEPDConfig, teacher: MultiViewNetConfig) -> PEPDConfig:
    """``student`` with its Pattern Extraction and image encoder sized like the teacher's (module docstring):
    channels (c0, c1, c2, c2), one ResBlock + transformer pair, the teacher's head width, GroupNorm groups
    and GEGLU; image tokens of the teacher's width and stride."""
    c = teacher.unet.block_out_channels
    if len(c) != 3 or c[1] != c[2]:
        raise UserError(f"starting from the teacher needs a 3-level U-Net with equal last levels, got {tuple(c)}")
    pattern = replace(student.pattern, channels=(c[0], c[1], c[2], c[2]), layers=1,
                      head_dim=teacher.unet.attention_head_dim, norm_groups=teacher.unet.norm_num_groups,
                      activation="geglu")
    image_encoder = ImageEncoderConfig(stride=teacher.token_stride, hidden=teacher.token_dim // 2)
    return replace(student, token_dim=teacher.token_dim, image_size=teacher.resolution, noise_channels=3,
                   noise_size=teacher.resolution, pattern=pattern, image_encoder=image_encoder)


@torch.no_grad()
def fold_time_embedding(student_block: ResnetBlock2D, teacher_block: ResnetBlock2D, temb: torch.Tensor) -> None:
    """Copy a teacher ResBlock into a student one without time embedding, its scale and shift at ``temb``
    [1, E] folded into norm2: norm2(h) (1 + scale) + shift."""
    state = {k: v for k, v in teacher_block.state_dict().items() if not k.startswith("time_emb_proj.")}
    student_block.load_state_dict(state)
    scale, shift = teacher_block.time_emb_proj(teacher_block.nonlinearity(temb))[0].chunk(2)
    norm = student_block.norm2
    norm.weight.copy_(norm.weight * (1 + scale))
    norm.bias.copy_(norm.bias * (1 + scale) + shift)


@torch.no_grad()
def copy_transformer(student: SpatialTransformer3D, teacher: nn.Module) -> None:
    """A diffusers ``Transformer2DModel`` (1x1-conv projections, one block) into a ``SpatialTransformer3D``."""
    student.norm.load_state_dict(teacher.norm.state_dict())
    for name in ("proj_in", "proj_out"):
        conv = getattr(teacher, name)
        getattr(student, name).weight.copy_(conv.weight.reshape(conv.weight.shape[:2]))
        getattr(student, name).bias.copy_(conv.bias)
    student.block.load_state_dict(teacher.transformer_blocks[0].state_dict())


@torch.no_grad()
def init_from_teacher(student: PEPDStudent, teacher: WorldMultiViewNet, start_timestep: int) -> list[str]:
    """Copy the teacher's matching layers into ``student`` (built from ``teacher_shaped_student``); returns
    the names of the student's modules that were set. ``start_timestep``: T - 1 of the teacher's schedule."""
    pattern, unet = student.pattern_extraction, teacher.unet
    if pattern is None:
        raise UserError("starting from the teacher needs Pattern Extraction (student.pattern_extraction_enabled)")
    try:
        encoder, ours = teacher.image_tokens, student.image_encoder
        ours.patchify[0].weight.copy_(encoder.patchify[0].weight[:, :3])  # the image channels, not the rays
        ours.patchify[0].bias.copy_(encoder.patchify[0].bias)
        ours.patchify[2].load_state_dict(encoder.patchify[2].state_dict())
        ours.position.copy_(encoder.position)
        ours.norm.load_state_dict(encoder.norm.state_dict())
        pattern.conv_in.weight.copy_(unet.conv_in.weight[:, NOISE_CHANNELS + RAY_CHANNELS])
        pattern.conv_in.bias.copy_(unet.conv_in.bias)
        t = torch.tensor([start_timestep], device=unet.conv_in.weight.device)
        temb = unet.time_embedding(unet.time_proj(t).to(unet.conv_in.weight.dtype))
        teacher_blocks = [unet.down_blocks[1].resnets[0], unet.down_blocks[2].resnets[0], unet.mid_block.resnets[0]]
        for ours_block, theirs in zip(pattern.down, teacher_blocks, strict=True):
            fold_time_embedding(ours_block, theirs, temb)
        fold_time_embedding(pattern.res_blocks[0], unet.mid_block.resnets[1], temb)
        copy_transformer(pattern.transformers[0], unet.mid_block.attentions[0])
    except (RuntimeError, ValueError, IndexError) as error:  # shapes that do not match
        raise UserError(f"the student is not shaped like the teacher ({error}); build its config with "
                        "teacher_shaped_student") from None
    return ["image_encoder", "pattern_extraction.conv_in", "pattern_extraction.down",
            "pattern_extraction.res_blocks.0", "pattern_extraction.transformers.0"]


__all__ = ["init_from_teacher", "teacher_shaped_student", "fold_time_embedding", "copy_transformer"]
