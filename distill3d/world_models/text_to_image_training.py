"""Training of the world text-to-image teacher (``distill3d teacher train text-to-image``).

Data: random views of training objects rendered on the fly (``RenderPool``), each with its
view-dependent prompt ("a red striped torus, front view"). Prompt dropout for
classifier-free guidance: the whole prompt is replaced by the null tokens with probability
``p_uncond`` (0.1, as GLIDE / Imagen / Stable Diffusion), and only the view suffix is left
out with probability ``p_no_view`` so that prompts without a view work too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from distill3d.diffusion.training_loss import diffusion_loss
from distill3d.optim import OptimConfig
from distill3d.random_streams import Generators
from distill3d.world_models.networks import (ScheduleConfig, TextToImageNetConfig, UNetConfig,
                                                WorldTextToImageNet)
from distill3d.world_models.render_pool import RenderPool, RenderPoolConfig, ViewCameras
from distill3d.world_models.text_encoder import NO_VIEW_TOKEN, NULL_TOKEN, TOKEN_ID, TextEncoderConfig, tokens_from_labels

KIND = "world-text-to-image"


@dataclass
class TextToImageTrainConfig:
    """Everything that defines a text-to-image teacher run (written to config.json)."""

    kind: str = KIND
    net: TextToImageNetConfig = field(default_factory=TextToImageNetConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    cameras: ViewCameras = field(default_factory=ViewCameras)
    pool: RenderPoolConfig = field(default_factory=RenderPoolConfig)
    steps: int = 16000  # may be raised when resuming, to extend a run
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(batch_size=256, lr=2e-4))
    p_uncond: float = 0.1  # prompt dropout for classifier-free guidance (Ho & Salimans 2022)
    p_no_view: float = 0.1  # prompt without its view suffix
    # None: the plain v-loss, as Stable Diffusion 2 and MVDream / ImageDream train; 5: Min-SNR-5
    # weights, which hardly train the steps near pure noise (``diffusion_loss``)
    min_snr_gamma: float | None = None
    default_guidance_scale: float = 3.0  # standard-form CFG scale used by ``sample`` / ``eval``


def tiny_config() -> TextToImageTrainConfig:
    """A CPU-sized configuration (16x16 images, a few thousand parameters' worth of U-Net)."""
    return TextToImageTrainConfig(
        net=TextToImageNetConfig(resolution=16, unet=UNetConfig(block_out_channels=(16, 32), attention_levels=(1,),
                                                                 attention_head_dim=16, norm_num_groups=8),
                                 text=TextEncoderConfig(dim=32, num_layers=1, num_heads=2)),
        pool=RenderPoolConfig(size=16, entries_per_object=4, objects_per_block=2, refresh_every=2, resolution=16,
                              supersample=1),
        steps=4, optim=OptimConfig(batch_size=4, lr=1e-3, warmup_steps=1))


class TextToImageTask:
    """The ``TrainingTask`` of the text-to-image teacher."""

    export_dtype = torch.float16

    def __init__(self, config: TextToImageTrainConfig):
        if config.pool.resolution != config.net.resolution:
            raise ValueError("pool.resolution must equal net.resolution")
        self.config = config
        self.schedule = config.schedule.noise_schedule()

    def build_model(self) -> nn.Module:
        return WorldTextToImageNet(self.config.net)

    def build_source(self, device: torch.device) -> RenderPool:
        return RenderPool(self.config.pool, 1, self.config.cameras.sample, device)

    def batch(self, pool: RenderPool, batch_size: int, generators: Generators) -> tuple[Tensor, Tensor]:
        """Clean images x0 [B, 3, R, R] in [-1, 1] and prompt tokens [B, 4] (with dropout)."""
        index = pool.sample_indices(batch_size, generators.data)
        x0 = pool.images_float(index)[:, 0]
        tokens = tokens_from_labels(pool.object_index[index], pool.bucket[index][:, 0])
        u = torch.rand(batch_size, generator=generators.noise, device=generators.noise.device).to(x0.device)
        no_view = (u >= self.config.p_uncond) & (u < self.config.p_uncond + self.config.p_no_view)
        tokens[:, 3] = torch.where(no_view, TOKEN_ID[NO_VIEW_TOKEN], tokens[:, 3])
        tokens = torch.where((u < self.config.p_uncond)[:, None], TOKEN_ID[NULL_TOKEN], tokens)
        return x0, tokens

    def loss(self, model: nn.Module, pool: RenderPool, batch_size: int, generators: Generators) -> Tensor:
        x0, tokens = self.batch(pool, batch_size, generators)
        gen, device = generators.noise, generators.noise.device
        t = torch.randint(0, self.schedule.num_train_timesteps, (batch_size,), generator=gen, device=device)
        eps = torch.randn(x0.shape, generator=gen, device=device)
        if self.schedule.alphas_cumprod.device != x0.device:
            self.schedule = self.schedule.to(x0.device)
        abar = self.schedule.alphas_cumprod[t]
        x_t = self.schedule.add_noise(x0, eps, t)
        prediction = model(x_t, t, tokens)
        return diffusion_loss(prediction, x0, eps, abar, self.config.schedule.prediction_type,
                              self.config.min_snr_gamma)
