"""Training of the world multi-view teacher (``distill3d teacher train multiview``).

Data: groups of one input view and K target views of a training object
(``sample_multiview_groups``), rendered on the fly into a ``RenderPool``. The K targets of a
group share one timestep and are denoised jointly. The input image is dropped (set to 0,
i.e. grey in [-1, 1]) with probability ``p_uncond`` for classifier-free guidance on the
image, as ImageDream does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from distill3d.diffusion.training_loss import diffusion_loss
from distill3d.optim import OptimConfig
from distill3d.random_streams import Generators
from distill3d.world_models.multiview_cameras import (CAMERA_FRAMES, MultiViewGroupCameras, multiview_rays,
                                                   sample_multiview_groups)
from distill3d.world_models.networks import MultiViewNetConfig, ScheduleConfig, UNetConfig, WorldMultiViewNet
from distill3d.world_models.render_pool import RenderPool, RenderPoolConfig

KIND = "world-multiview"


@dataclass
class MultiViewTrainConfig:
    """Everything that defines a multi-view teacher run (written to config.json)."""

    kind: str = KIND
    net: MultiViewNetConfig = field(default_factory=lambda: MultiViewNetConfig(camera_grid=4, camera_frame="level"))
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    cameras: MultiViewGroupCameras = field(default_factory=MultiViewGroupCameras)
    pool: RenderPoolConfig = field(default_factory=lambda: RenderPoolConfig(
        size=4096, entries_per_object=2, objects_per_block=48, refresh_every=50))
    steps: int = 16000  # may be raised when resuming, to extend a run
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(batch_size=48, lr=2e-4))
    p_uncond: float = 0.1  # input-image dropout for classifier-free guidance
    # None: the plain v-loss, as Stable Diffusion 2 and MVDream / ImageDream train; 5: Min-SNR-5
    # weights, which hardly train the steps near pure noise (``diffusion_loss``)
    min_snr_gamma: float | None = None
    default_guidance_scale: float = 1.0  # standard-form CFG scale of ``sample`` / ``eval``


def tiny_config() -> MultiViewTrainConfig:
    """A CPU-sized configuration (16x16 views, 2 targets)."""
    return MultiViewTrainConfig(
        net=MultiViewNetConfig(resolution=16, num_views=2, token_dim=32, token_stride=4, camera_grid=4,
                               camera_frame="level",
                               unet=UNetConfig(block_out_channels=(16, 32), attention_levels=(1,),
                                               attention_head_dim=16, norm_num_groups=8)),
        cameras=MultiViewGroupCameras(num_views=2),
        pool=RenderPoolConfig(size=8, entries_per_object=2, objects_per_block=2, refresh_every=2, resolution=16,
                              supersample=1),
        steps=4, optim=OptimConfig(batch_size=2, lr=1e-3, warmup_steps=1))


class MultiViewTask:
    """The ``TrainingTask`` of the multi-view teacher."""

    export_dtype = torch.float16

    def __init__(self, config: MultiViewTrainConfig):
        if config.pool.resolution != config.net.resolution:
            raise ValueError("pool.resolution must equal net.resolution")
        if config.cameras.num_views != config.net.num_views:
            raise ValueError("cameras.num_views must equal net.num_views")
        if config.net.camera_frame not in CAMERA_FRAMES:
            raise ValueError(f"net.camera_frame must be one of {CAMERA_FRAMES}, not {config.net.camera_frame!r}")
        self.config = config
        self.schedule = config.schedule.noise_schedule()

    def build_model(self) -> nn.Module:
        return WorldMultiViewNet(self.config.net)

    def build_source(self, device: torch.device) -> RenderPool:
        layout = self.config.cameras

        def sample(n: int, resolution: int, generator: torch.Generator):
            return sample_multiview_groups(n, resolution, layout, generator)

        return RenderPool(self.config.pool, layout.num_views + 1, sample, device)

    def batch(self, pool: RenderPool, batch_size: int, generators: Generators) -> dict[str, Tensor]:
        """One batch of groups: input image [B,3,R,R] (dropped to 0 at p_uncond), targets x0 [B*K,3,R,R], rays."""
        index = pool.sample_indices(batch_size, generators.data)
        images = pool.images_float(index)  # [B, 1+K, 3, R, R]
        B, V = images.shape[:2]
        input_rays, target_rays = multiview_rays(pool.cameras(index, 0), pool.cameras(index, slice(1, None)),
                                                 self.config.net.camera_frame)
        keep = torch.rand(B, generator=generators.noise, device=generators.noise.device).to(images.device)
        keep = (keep >= self.config.p_uncond).to(images.dtype)
        return {"input_image": images[:, 0] * keep[:, None, None, None], "input_rays": input_rays,
                "target_rays": target_rays, "x0": images[:, 1:].reshape(B * (V - 1), *images.shape[2:])}

    def loss(self, model: nn.Module, pool: RenderPool, batch_size: int, generators: Generators) -> Tensor:
        batch = self.batch(pool, batch_size, generators)
        x0 = batch["x0"]
        K = x0.shape[0] // batch_size
        gen, device = generators.noise, generators.noise.device
        t = torch.randint(0, self.schedule.num_train_timesteps, (batch_size,), generator=gen, device=device)
        t = t.to(x0.device).repeat_interleave(K)
        eps = torch.randn(x0.shape, generator=gen, device=device).to(x0.device)
        if self.schedule.alphas_cumprod.device != x0.device:
            self.schedule = self.schedule.to(x0.device)
        abar = self.schedule.alphas_cumprod[t]
        x_t = self.schedule.add_noise(x0, eps, t)
        prediction = model(x_t, t, batch["input_image"], batch["input_rays"], batch["target_rays"])
        return diffusion_loss(prediction, x0, eps, abar, self.config.schedule.prediction_type,
                              self.config.min_snr_gamma)
