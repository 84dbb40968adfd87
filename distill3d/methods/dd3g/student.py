"""PEPD, DD3G's student: input image, per-view noise and cameras -> 3D Gaussians (DD3G Sec. III-B, Eq. 2).

    G = p2(II (+) p1(II, N, C))

    images   II  [B, H, W, 3] in [0, 1]      the input image (on white, as the teacher saw it)
    noise    N   [B, V, C, h, w]             the teacher's initial noise of each output view
    cameras  C   Cameras of B * V            the output views' cameras, view v of object b in
                                             row b * V + v; the Gaussians come out in their frame
    returns  GaussianBatch (activated), N_g = V * h' * w' * G Gaussians per object;
                                             token p's Gaussians are rows p * G .. p * G + G - 1, view-major

Parts: ``ImageEncoder`` (II -> image tokens [B, T, D]), ``noise_with_rays`` (N, C -> NC),
``PatternExtraction`` p1 (NC, image tokens -> pattern tokens [B, V*h'*w', D]),
``ProgressiveDecoding`` p2 (pattern (+) image tokens -> Gaussians).

"PD only" (the paper's ablation, Fig. 6c): ``pattern_extraction_enabled = False`` drops p1; the
decoder then starts from V * h' * w' learned query tokens instead of pattern tokens, and the
noise and cameras are ignored (the generator no longer sees the teacher's probabilistic flow).

Defaults, sized for the world: 64 x 64 input, V = 4 views of the world multi-view teacher, whose
noise is in pixel space (``WorldMultiViewTeacher.latent_size(64) = 64``, 3 channels), token grid
8 x 8 per view (64 / 2^3), D = 128, so 256 pattern tokens + 64 image tokens, 6 decoder blocks and
32 Gaussians per pattern token: 8192 Gaussians. 2,536,416 parameters (9.7 MiB as float32
safetensors; Pattern Extraction 1.16 M, Progressive Decoding 1.33 M, image encoder 0.04 M), under
``PARAMETER_BUDGET``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from distill3d.cameras import Cameras
from distill3d.methods.dd3g.image_encoder import ImageEncoder, ImageEncoderConfig
from distill3d.methods.dd3g.noise_cameras import PLUCKER_CHANNELS, noise_with_rays
from distill3d.methods.dd3g.pattern_extraction import PatternExtraction, PatternExtractionConfig
from distill3d.methods.dd3g.progressive_decoding import ProgressiveDecoding, ProgressiveDecodingConfig
from distill3d.scene.gaussian_batch import GaussianBatch

PARAMETER_BUDGET = 4_000_000
"""Upper bound on the default student's parameters: float32 safetensors of 16 MB at most."""


@dataclass
class PEPDConfig:
    """The PEPD student (module docstring); the parts' own sizes sit in their nested configs."""

    image_size: int = 64  # H = W of the input image II
    num_views: int = 4  # V output views (ImageDream / the world multi-view teacher: 4)
    noise_channels: int = 3  # C of the teacher's noise (the world teacher is in pixel space)
    noise_size: int = 64  # h = w of the teacher's noise (WorldMultiViewTeacher.latent_size(64))
    token_dim: int = 128  # D, width of image, pattern and decoder tokens
    pattern_extraction_enabled: bool = True  # False = the paper's "PD only" ablation (learned queries)
    image_encoder: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    pattern: PatternExtractionConfig = field(default_factory=PatternExtractionConfig)
    decoder: ProgressiveDecodingConfig = field(default_factory=ProgressiveDecodingConfig)

    @property
    def token_grid(self) -> int:
        """h' = w', the pattern tokens per side of one view."""
        if self.noise_size % self.pattern.downsampling:
            raise ValueError(f"noise_size {self.noise_size} is not a multiple of the pattern downsampling "
                             f"{self.pattern.downsampling}")
        return self.noise_size // self.pattern.downsampling

    @property
    def num_pattern_tokens(self) -> int:
        """P = V * h' * w'."""
        return self.num_views * self.token_grid ** 2

    @property
    def num_image_tokens(self) -> int:
        """T = (H / stride) ** 2."""
        return (self.image_size // self.image_encoder.stride) ** 2

    @property
    def num_gaussians(self) -> int:
        """Gaussians per object: decoded tokens times G."""
        tokens = self.num_pattern_tokens + (self.num_image_tokens if self.decoder.gaussians_from_image_tokens else 0)
        return tokens * self.decoder.heads.gaussians_per_token


class PEPDStudent(nn.Module):
    """``forward(images [B,H,W,3], noise [B,V,C,h,w], cameras [B*V]) -> GaussianBatch`` (module docstring)."""

    def __init__(self, config: PEPDConfig):
        super().__init__()
        self.config = config
        D = config.token_dim
        self.image_encoder = ImageEncoder(config.image_encoder, image_size=config.image_size, token_dim=D)
        self.pattern_extraction: PatternExtraction | None = None
        self.queries: nn.Parameter | None = None
        if config.pattern_extraction_enabled:
            self.pattern_extraction = PatternExtraction(config.pattern, in_channels=config.noise_channels + PLUCKER_CHANNELS,
                                                        token_dim=D)
        else:  # DD3G Sec. IV-C, "PD only": learned tokens in place of p1's pattern tokens
            self.queries = nn.Parameter(torch.randn(config.num_pattern_tokens, D) * 0.02)
        self.decoding = ProgressiveDecoding(config.decoder, token_dim=D)

    def forward(self, images: Tensor, noise: Tensor | None = None, cameras: Cameras | None = None) -> GaussianBatch:
        image_tokens = self.image_encoder(images)  # [B, T, D]
        B = image_tokens.shape[0]
        if self.pattern_extraction is not None:
            if noise is None or cameras is None:
                raise ValueError("PEPD with Pattern Extraction needs the noise and the cameras")
            c = self.config
            if noise.shape[0] != B or noise.shape[2:] != (c.noise_channels, c.noise_size, c.noise_size):
                raise ValueError(f"noise must be [{B}, V, {c.noise_channels}, {c.noise_size}, {c.noise_size}], "
                                 f"got {tuple(noise.shape)}")
            nc = noise_with_rays(noise.to(image_tokens.dtype), cameras)  # DD3G Sec. III-B: NC
            pattern = self.pattern_extraction(nc, image_tokens)  # DD3G Eq. 2: p1(II, N, C)
        else:
            pattern = self.queries.expand(B, -1, -1)
        tokens = torch.cat([pattern, image_tokens], dim=1)  # DD3G Eq. 2: II (+) p1(II, N, C)
        return GaussianBatch(**self.decoding(tokens, pattern.shape[1]))  # DD3G Eq. 2: p2(...)
