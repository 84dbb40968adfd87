"""Progressive Decoding p2: tokens -> 3D Gaussians through one branch of blocks (DD3G Sec. III-B).

"we construct the backbone of the decoding process by stacking PointTransformer blocks, and then
decode features from different levels of the network using several simple MLP decoders".

    tokens   [B, P + T, D]   P pattern tokens (or learned queries, "PD only") then T image tokens
    returns  {means [B, N, 3], quats [B, N, 4], scales [B, N, 3], opacities [B, N], colours [B, N, 3]}
             N = P * G (G Gaussians per token; + T * G with ``gaussians_from_image_tokens``)

Blocks: the paper's "PointTransformer blocks" are here K diffusers ``BasicTransformerBlock``s
(LayerNorm, self-attention over the whole token set, LayerNorm, GELU feed-forward), i.e. global
attention over an unordered set of tokens rather than Point Transformer's local vector attention
on a point cloud: our tokens have no 3D positions to take neighbourhoods in. The heads read
weighted sums of adjacent block outputs (``gaussian_heads``, where our reading of the wiring is).

Which tokens make Gaussians: Eq. 2 decodes p2(II (+) p1(...)), and Sec. IV-A says "each token is
decoded into 512 3D Gaussians", 157,184 in all, i.e. 307 tokens. 307 is prime, so it is not V
views times a grid of pattern tokens alone: the paper's decoded tokens likely include image (or
other) tokens as well. We decode only the pattern tokens by default (the image tokens are
context), so that N = V * h' * w' * G is fixed by the views and grid, and each Gaussian comes from a
token that saw the teacher's noise; ``gaussians_from_image_tokens`` decodes all tokens instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from diffusers.models.attention import BasicTransformerBlock
from torch import Tensor, nn

from distill3d.methods.dd3g.gaussian_heads import GaussianHeads, GaussianHeadsConfig


@dataclass
class ProgressiveDecodingConfig:
    """The single branch of K blocks and its attribute heads (the token width D is ``PEPDConfig.token_dim``)."""

    num_blocks: int = 6  # K blocks ("PointTransformer blocks"); the heads' taps index their outputs
    head_dim: int = 32  # attention head width of the blocks
    gaussians_from_image_tokens: bool = False  # also decode Gaussians from the image tokens (see module docstring)
    heads: GaussianHeadsConfig = field(default_factory=GaussianHeadsConfig)


class ProgressiveDecoding(nn.Module):
    """``forward(tokens [B, P+T, D], num_pattern_tokens=P) -> activated attributes`` (module docstring)."""

    def __init__(self, config: ProgressiveDecodingConfig, *, token_dim: int):
        super().__init__()
        if config.num_blocks < 1 or token_dim % config.head_dim:
            raise ValueError(f"decoder: need num_blocks >= 1 and token_dim {token_dim} a multiple of head_dim")
        self.config = config
        self.blocks = nn.ModuleList(  # DD3G Sec. III-B: a single branch of stacked blocks
            BasicTransformerBlock(token_dim, token_dim // config.head_dim, config.head_dim, activation_fn="gelu")
            for _ in range(config.num_blocks))
        self.heads = GaussianHeads(config.heads, token_dim=token_dim, num_blocks=config.num_blocks)

    def forward(self, tokens: Tensor, num_pattern_tokens: int) -> dict[str, Tensor]:
        decoded = tokens.shape[1] if self.config.gaussians_from_image_tokens else num_pattern_tokens
        outputs = []
        x = tokens
        for block in self.blocks:
            x = block(x)
            outputs.append(x[:, :decoded])  # DD3G Sec. III-B: every level is kept for the heads
        return self.heads(outputs)  # DD3G Sec. III-B: mu, then s and q, then c and alpha
