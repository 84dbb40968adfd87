"""Training HoloFusion's 3D diffusion model and its 2D super-resolution model jointly (Sec. 3.2, 3.3.1)
with the shared network trainer (``distill3d.training.network_trainer``: resumable, time-boxed, EMA,
``accelerate launch`` for several GPUs).

One step, for b groups of 15 source + 4 target views (``view_groups``):
1. Vbar = Phi(sbar): a random subset of each group's source views (possibly empty) through the frozen
   encoder, unprojected into the grid (``unproject``; no gradient); by default also the grid of all
   the source views, for the first pass (``objective.first_pass_views``);
2. double denoising V_T -> V_0 -> V_t -> D_theta(V_t, Vbar, t) (``objective``, Eq. 5-6);
3. that grid rendered at the 4 target cameras at S x S pixels by the shared decoder M_eta
   (``render.voxel_batch``), against the targets averaged down to S: the photometric loss (Eq. 5);
4. with ``super_resolution.enabled``: D_beta's DDPM loss on the targets at S * scale, conditioned on
   those renders (Eq. 7; not detached: the two models are trained end-to-end, Sec. 3.3.1).
The loss is Eq. 5 + Eq. 7 (Sec. 3.3.1, "Training details").

Optimiser: HoloFusion uses Adam at lr 5e-5, divided by 10 whenever the loss plateaus. The shared
trainer runs AdamW (weight decay 0: Adam) with a linear warm-up and an optional linear decay at the
end (``optim.anneal_steps``) in place of the plateau rule; lr stays the paper's 5e-5 by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from distill3d.methods.holofusion.objective import (
    DiffusionConfig,
    ObjectiveConfig,
    double_denoise,
    grid_schedule,
    photometric_loss,
)
from distill3d.methods.holofusion.super_resolution import (
    SuperResolutionConfig,
    SuperResolutionNet,
    sr_diffusion_loss,
    sr_schedule,
)
from distill3d.methods.holofusion.unet3d import UNet3D, UNet3DConfig
from distill3d.methods.holofusion.unproject import (
    ConditioningConfig,
    FrozenImageEncoder,
    conditioning_channels,
    sample_source_masks,
    unproject_features,
)
from distill3d.methods.holofusion.view_groups import (
    DatasetViewGroups,
    ViewGroupBatch,
    ViewsConfig,
    WorldDataConfig,
    WorldViewGroups,
)
from distill3d.optim import OptimConfig
from distill3d.random_streams import Generators
from distill3d.render.voxel_batch import render_voxel_batch
from distill3d.scene.voxel_grid import VoxelDecoder, VoxelGridConfig

__all__ = [
    "KIND",
    "HoloFusionModel",
    "HoloFusionTask",
    "HoloFusionTrainConfig",
    "conditioning_grids",
    "tiny_holofusion",
]

KIND = "holofusion"


@dataclass
class HoloFusionTrainConfig:
    """Settings of ``distill3d holofusion train`` (the run's identity: a resume must match them)."""

    kind: str = KIND
    data: str = ""                 # a multi-view data set (or CO3D) folder; empty: world renders made while training
    steps: int = 20000             # training steps (ours: the paper trains "until convergence")
    # The grid V of d x S^3 and the decoder M_eta. S = 32 as HoloDiffusion's code; d = 32, not 64: the
    # world's objects are Lambertian (view-independent colour), so a voxel needs density and albedo, and
    # half the features halve the renderer's memory and time (HoloDiffusion's configs use 64 for CO3D).
    grid: VoxelGridConfig = field(default_factory=lambda: VoxelGridConfig(resolution=32, feature_dim=32))
    unet: UNet3DConfig = field(default_factory=UNet3DConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)
    super_resolution: SuperResolutionConfig = field(default_factory=SuperResolutionConfig)
    views: ViewsConfig = field(default_factory=ViewsConfig)
    world: WorldDataConfig = field(default_factory=WorldDataConfig)
    # HoloFusion Sec. 3.3.1: Adam, lr 5e-5 (AdamW without decay here); batch 8 groups per process (ours:
    # the paper's batch is one scene's 19 views); EMA of the weights is what is exported and sampled.
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(batch_size=8, lr=5e-5, warmup_steps=500,
                                                                   grad_clip=1.0, ema_decay=0.999))

    def __post_init__(self) -> None:
        S = self.grid.resolution
        if S % self.unet.downsampling:
            raise ValueError(f"grid.resolution {S} must be a multiple of the U-Net's downsampling "
                             f"{self.unet.downsampling} (2 ^ (levels - 1))")

    @property
    def render_resolution(self) -> int:
        """Size of the renders of the photometric loss: S (HoloFusion Sec. 3.3.1: "rendering at S")."""
        return self.grid.resolution

    @property
    def target_resolution(self) -> int:
        """Size of the super-resolution targets (and of the stored training views): S * scale."""
        return self.grid.resolution * self.super_resolution.scale


def tiny_holofusion(**fields) -> HoloFusionTrainConfig:
    """A CPU-sized config: S = 8, d = 4, a 2-level U-Net of 8 / 16 channels, 8 px renders and 16 px SR
    targets, 3 source + 2 target views, colours as Phi, 8 samples per ray, a pool of 4 groups; ``fields``
    replace top-level fields (steps, data, ...)."""
    values = {
        "steps": 4,
        "grid": VoxelGridConfig(resolution=8, feature_dim=4, hidden_dim=16, num_hidden_layers=1),
        "unet": UNet3DConfig(channels=(8, 16), norm_groups=4, attention_heads=2),
        "diffusion": DiffusionConfig(num_train_timesteps=100),
        "objective": ObjectiveConfig(num_samples=8),
        "conditioning": ConditioningConfig(encoder="rgb"),
        "super_resolution": SuperResolutionConfig(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                                               attention_head_dim=8, num_train_timesteps=100, sampling_steps=2),
        "views": ViewsConfig(source_views=3, target_views=2),
        "world": WorldDataConfig(size=4, objects_per_block=2, refresh_every=2, supersample=1),
        "optim": OptimConfig(batch_size=2, lr=1e-3, warmup_steps=1, grad_clip=1.0, ema_decay=0.5),
    }
    values.update(fields)
    return HoloFusionTrainConfig(**values)


class HoloFusionModel(nn.Module):
    """The trained parts: the denoiser D_theta, the decoder M_eta (shared by every grid) and D_beta.

    ``forward`` is one training loss (so that ``accelerate``'s DDP sees every parameter's use).
    """

    def __init__(self, config: HoloFusionTrainConfig):
        super().__init__()
        self.config = config
        g = config.grid
        self.denoiser = UNet3D(config.unet, g.feature_dim, conditioning_channels(config.conditioning))
        self.decoder = VoxelDecoder(g.feature_dim, g.hidden_dim, g.num_hidden_layers, g.density_bias)
        self.super_resolution = SuperResolutionNet(config.super_resolution) if config.super_resolution.enabled else None
        self.schedule = grid_schedule(config.diffusion)
        self.sr_schedule = sr_schedule(config.super_resolution)

    def render(self, grids: Tensor, cameras, *, stratified: bool = False, generator: torch.Generator | None = None,
               num_samples: int | None = None):
        """R_eta: grids [B, d, S, S, S] at cameras [B * V] -> RenderOutput ([B * V, H, W, 3] rgb)."""
        obj = self.config.objective
        return render_voxel_batch(grids, self.decoder, cameras, bound=self.config.grid.bound,
                                  num_samples=num_samples or obj.num_samples, background=obj.background,
                                  stratified=stratified, generator=generator)

    def forward(self, v_bar: Tensor, cameras, targets: Tensor, targets_high: Tensor | None,
                noise: torch.Generator, v_bar_first: Tensor | None = None) -> dict[str, Tensor]:
        """Loss terms for conditioning grids v_bar [B, c, S, S, S] (and v_bar_first, the first pass's with
        ``objective.first_pass_views = "all"``), target cameras [B * V] at S x S, targets [B * V, S, S, 3] and
        (for D_beta) targets_high [B * V, S * scale, S * scale, 3], images in [0, 1]."""
        obj = self.config.objective
        passes = double_denoise(self.denoiser, v_bar, self.schedule, noise, self.config.grid.feature_dim,
                                obj.detach_first_pass, v_bar_first)                       # HoloFusion Eq. 5-6
        render = self.render(passes["v_0_again"], cameras, stratified=obj.stratified, generator=noise)
        terms = {"photometric": photometric_loss(render.rgb, targets)}                     # HoloFusion Eq. 5
        if self.super_resolution is not None and targets_high is not None:
            terms["super_resolution"] = sr_diffusion_loss(self.super_resolution, self.sr_schedule, targets_high,
                                                          render.rgb, noise)               # HoloFusion Eq. 7
        terms["loss"] = sum(terms.values())                                                # Eq. 5 + Eq. 7
        return terms


def conditioning_grids(encoder: FrozenImageEncoder, images: Tensor, cameras, masks: Sequence[Tensor],
                       resolution: int, bound: float) -> list[Tensor]:
    """Vbar [B, c, S, S, S] for each subsets mask [B, V] of source images [B, V, R, R, 3] with their cameras
    [B * V] (the images encoded once)."""
    B, V = masks[0].shape
    if V == 0:
        features = images.new_zeros(B, 0, encoder.channels, 1, 1)
    else:
        features = encoder(images.reshape(B * V, *images.shape[2:]))
        features = features.reshape(B, V, *features.shape[1:])
    return [unproject_features(features, cameras, mask.to(features.device), resolution, bound) for mask in masks]


class HoloFusionTask:
    """The model, its data and its loss for ``run_training`` (module docstring)."""

    export_dtype = torch.float16

    def __init__(self, config: HoloFusionTrainConfig, progress: bool = True):
        self.config, self.progress = config, progress
        self.encoder: FrozenImageEncoder | None = None

    def build_model(self) -> nn.Module:
        return HoloFusionModel(self.config)

    def build_source(self, device: torch.device) -> WorldViewGroups | DatasetViewGroups:
        cfg = self.config
        self.encoder = FrozenImageEncoder(cfg.conditioning, device)
        if cfg.data:
            return DatasetViewGroups(cfg.data, cfg.views, cfg.target_resolution, device, progress=self.progress)
        return WorldViewGroups(cfg.views, cfg.world, cfg.target_resolution, device)

    def loss(self, model: nn.Module, source, batch_size: int, generators: Generators) -> Tensor:
        cfg = self.config
        batch: ViewGroupBatch = source.sample(batch_size, generators.data)
        n_targets = cfg.views.target_views
        n_sources = batch.images.shape[1] - n_targets
        sources, targets = slice(0, n_sources), slice(n_sources, None)
        masks = [sample_source_masks(batch_size, n_sources, cfg.conditioning.empty_probability, generators.data)]
        if cfg.objective.first_pass_views == "all":
            masks.append(torch.ones_like(masks[0]))
        with torch.no_grad():
            v_bars = conditioning_grids(self.encoder, batch.views(sources), batch.cameras(sources), masks,
                                        cfg.grid.resolution, cfg.grid.bound)
        S = cfg.render_resolution
        high = batch.views(targets).reshape(-1, *batch.images.shape[2:]) if cfg.super_resolution.enabled else None
        terms = model(v_bars[0], batch.cameras(targets, S), batch.low_res(targets, S), high, generators.noise,
                      v_bars[1] if len(v_bars) > 1 else None)
        return terms["loss"]
