"""HoloFusion (Karnewar et al. 2023): a 3D diffusion model trained from posed multi-view images.

The HoloDiffusion base (Sec. 3.2) is one file per part: ``unet3d`` (the denoiser D_theta),
``unproject`` (the frozen 2D encoder Phi and the feature volume Vbar), ``objective`` (the
bootstrapped double denoising and the photometric loss, Eq. 5-6), ``view_groups`` (source + target
views of one object: world renders or a data set), ``train`` (the config, the
data and the task of the shared network trainer, Eq. 5 + Eq. 7 with the 2D super-resolution model
of ``super_resolution``) and ``sample`` (grids from noise, written out). The batched renderer of
many grids is ``distill3d.render.voxel_batch``. Import the parts from their modules: this file
imports nothing, so that each part loads on its own.
"""
