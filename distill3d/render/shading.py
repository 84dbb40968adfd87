"""Lambertian shading of rendered albedo under a random light (DreamFusion / Magic3D's shading
augmentation): albedo * (ambient + (1 - ambient) max(0, n . l))."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from distill3d.cameras import Cameras
from distill3d.errors import UserError
from distill3d.render.backgrounds import background_image
from distill3d.render_output import RenderOutput
from distill3d.world.reference_render import AMBIENT


@dataclass
class ShadingConfig:
    """How often renders are shaded (density fields only: Gaussians carry no normals), and on what background."""

    shaded_share: float = 0.8      # share of views shaded under a random light (Consistent3D Sec. B.1 ablation: 80%)
    light_ambient: float = AMBIENT  # ambient term of the shading (the world's own, world/reference_render.py)
    # share of views composited on a random grey instead of white (DreamGaussian: black or white, half each)
    random_background_share: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.shaded_share <= 1.0 or not 0.0 <= self.random_background_share <= 1.0:
            raise UserError("--shaded-share and --random-background-share must lie in [0, 1]")


def sample_backgrounds(config: ShadingConfig, batch: int, generator: torch.Generator) -> Tensor:
    """[batch, 3] background colours: white, or for a share of views a grey level uniform in [0, 1]
    (nothing is drawn from ``generator`` when the share is 0)."""
    if config.random_background_share == 0.0:
        return torch.ones(batch, 3)
    grey = torch.rand(batch, 1, generator=generator).expand(batch, 3)
    random = torch.rand(batch, 1, generator=generator) < config.random_background_share
    return torch.where(random, grey, torch.ones(batch, 3))


def sample_light_directions(cameras: Cameras, generator: torch.Generator) -> Tensor:
    """[B, 3] unit light directions, uniform on the hemisphere on the camera's side of the object."""
    d = F.normalize(torch.randn(len(cameras), 3, generator=generator), dim=-1).to(cameras.c2w)
    towards_camera = F.normalize(cameras.centers, dim=-1)
    flip = (d * towards_camera).sum(-1, keepdim=True) < 0
    return torch.where(flip, -d, d)


def lambertian(albedo_premultiplied: Tensor, normal: Tensor, light: Tensor, ambient: float) -> Tensor:
    """albedo [B, H, W, 3] (times alpha) shaded by ambient + (1 - ambient) max(0, n . l).

    normal [B, H, W, 3], light [B, 3]."""
    cos = (normal * light[:, None, None, :]).sum(-1, keepdim=True).clamp_min(0.0)
    return albedo_premultiplied * (ambient + (1.0 - ambient) * cos)


def shade_and_composite(out: RenderOutput, cameras: Cameras, config: ShadingConfig, generator: torch.Generator,
                        background: float | Tensor = 1.0) -> Tensor:
    """Images [B, H, W, 3] for a teacher from a render over black (``out.rgb`` premultiplied by ``out.alpha``,
    with normals): a share ``shaded_share`` of the views Lambertian-shaded under a random light (drawn from
    ``generator``: the lights, then which views are shaded), then composited over ``background`` (a number,
    [3] or [B, 3])."""
    light = sample_light_directions(cameras, generator)
    shaded = (torch.rand(len(cameras), generator=generator) < config.shaded_share).to(out.rgb)
    lit = lambertian(out.rgb, out.normal, light, config.light_ambient)
    shaded = shaded[:, None, None, None]
    behind = background_image(background, len(cameras), out.rgb)
    return shaded * lit + (1 - shaded) * out.rgb + (1.0 - out.alpha) * behind
