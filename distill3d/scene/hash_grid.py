"""Hash-grid NeRF: multi-resolution hash encoding (Instant-NGP) and small MLPs, pure torch.

The coarse-stage field of Consistent3D / Magic3D (density and diffuse colour, no view
dependence). Written for clarity and CPU use; no compiled extension needed.

Encoding (Mueller et al. 2022, Sec. 3): level l of L has resolution
``N_l = floor(N_min * g^l)`` with growth ``g = exp((ln N_max - ln N_min) / (L - 1))``, i.e.
``N_l + 1`` vertices per axis over the box. A level whose ``(N_l + 1)^3`` vertices fit in
the table of T entries indexes them densely (``i = x + R y + R^2 z``, R = N_l + 1); finer
levels use the spatial hash ``(x * 1) xor (y * 2654435761) xor (z * 805459861) mod T``. Each
point gathers the F-dim entries of its 8 cell corners per level and blends them trilinearly;
the L x F features are concatenated.

Density uses the Magic3D blob initialisation as threestudio implements it: before the
softplus, ``density_blob_scale * (1 - |x| / density_blob_radius)`` is added (|x| in world
units), so training starts from a soft ball of radius ~``density_blob_radius``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from distill3d.scene.field import cube_aabb, inside_aabb, make_mlp, normalize_to_aabb, seeded

__all__ = ["HashGridConfig", "HashEncoding", "HashGridNeRF", "HASH_PRIMES"]

HASH_PRIMES = (1, 2654435761, 805459861)  # Instant-NGP, Eq. 4


@dataclass
class HashGridConfig:
    """Hash encoding, MLPs and density initialisation of a ``HashGridNeRF``.

    The defaults are threestudio's ImplicitVolume (its Magic3D / DreamFusion coarse NeRF),
    which follow Instant-NGP (L = 16, F = 2, N_min = 16); threestudio's growth factor
    1.447269 makes N_max = 16 * 1.447269^15 = 4096 (Instant-NGP's NeRF used 2048 per unit of
    scene scale). Far too heavy for CPU: use ``HashGridConfig.small()`` there.
    """

    num_levels: int = 16              # hash-grid levels L (threestudio, Instant-NGP)
    features_per_level: int = 2       # features per level F (threestudio, Instant-NGP)
    log2_table_size: int = 19         # log2 of the entries T per level (threestudio; Instant-NGP uses 14..24)
    base_resolution: int = 16         # grid size of the coarsest level N_min (threestudio, Instant-NGP)
    max_resolution: int = 4096        # grid size of the finest level N_max (threestudio: growth 1.4473 over 16 levels)
    hidden_dim: int = 64              # MLP width (threestudio VanillaMLP)
    num_hidden_layers: int = 1        # hidden layers of the MLPs (threestudio VanillaMLP)
    bound: float = 1.0                # the field lives in [-b, b]^3
    density_blob_scale: float = 10.0  # peak of the initial density blob (threestudio blob_magic3d)
    density_blob_radius: float = 0.5  # radius of the blob (threestudio's density_blob_std, used as a radius)
    init_range: float = 1e-4          # table entries start ~ U(-r, r) (Instant-NGP)

    def __post_init__(self) -> None:
        if self.num_levels < 1 or self.features_per_level < 1:
            raise ValueError("num_levels and features_per_level must be >= 1")
        if not 1 <= self.base_resolution <= self.max_resolution:
            raise ValueError("need 1 <= base_resolution <= max_resolution")
        if self.bound <= 0 or self.density_blob_radius <= 0:
            raise ValueError("bound and density_blob_radius must be positive")

    @classmethod
    def small(cls, **overrides) -> "HashGridConfig":
        """A CPU-sized grid: 8 levels, 2^14 entries, resolutions 16..256, 32-wide MLPs."""
        values = dict(num_levels=8, log2_table_size=14, base_resolution=16,
                      max_resolution=256, hidden_dim=32)
        values.update(overrides)
        return cls(**values)


class HashEncoding(nn.Module):
    """Multi-resolution hash encoding: points [N, 3] in [0, 1]^3 -> features [N, L * F].

    All levels share one table ``table`` [rows, F]; level l occupies rows
    ``offsets[l] : offsets[l] + sizes[l]``. A dense level stores vertex (x, y, z) at local row
    ``x + R y + R^2 z`` (R = resolution + 1); a hashed level at the Instant-NGP hash. The dense
    block is padded to a multiple of T so that every hashed level starts at a multiple of T.
    """

    def __init__(self, num_levels: int, features_per_level: int, log2_table_size: int,
                 base_resolution: int, max_resolution: int, init_range: float = 1e-4) -> None:
        super().__init__()
        self.num_levels, self.features_per_level = int(num_levels), int(features_per_level)
        T = self.table_size = 2 ** int(log2_table_size)
        growth = 1.0
        if num_levels > 1:
            growth = math.exp(math.log(max_resolution / base_resolution) / (num_levels - 1))
        resolutions = [int(math.floor(base_resolution * growth ** l + 1e-6))
                       for l in range(num_levels)]
        verts = [r + 1 for r in resolutions]
        dense = [v ** 3 <= T for v in verts]  # resolution grows with l: dense levels come first
        self.num_dense_levels = k = sum(dense)
        self.sizes = [v ** 3 if d else T for v, d in zip(verts, dense)]
        dense_rows = -(-sum(self.sizes[:k]) // T) * T
        offsets = ([sum(self.sizes[:l]) for l in range(k)]
                   + [dense_rows + j * T for j in range(num_levels - k)])
        total = dense_rows + (num_levels - k) * T
        if total >= 2 ** 31:
            raise ValueError(f"hash table of {total} rows is too large (limit 2^31)")
        self.register_buffer("resolutions", torch.tensor(resolutions, dtype=torch.float32),
                             persistent=False)
        self.register_buffer("vertices_per_axis", torch.tensor(verts), persistent=False)
        self.register_buffer("offsets", torch.tensor(offsets), persistent=False)
        table = torch.empty(total, features_per_level).uniform_(-init_range, init_range)
        self.table = nn.Parameter(table)

    @property
    def output_dim(self) -> int:
        return self.num_levels * self.features_per_level

    def _rows(self, start: torch.Tensor) -> torch.Tensor:
        """Cell start vertices [N, L, 3] (int64) -> table rows [N, L, 2, 2, 2] of the 8 corners.

        Corner [bx, by, bz] is vertex start + (bx, by, bz). Each axis term is computed for the
        two vertex coordinates (start, start + 1) and then combined: by sum for dense levels,
        by xor for hashed ones (the offset, a multiple of T, rides on the z term).
        """
        k, L = self.num_dense_levels, self.num_levels
        v = torch.stack([start, start + 1], dim=-1)                     # [N, L, 3, 2]
        rows = torch.empty(*v.shape[:2], 2, 2, 2, dtype=torch.long, device=v.device)
        if k > 0:
            R = self.vertices_per_axis[:k, None]                         # [k, 1]
            d = v[:, :k]
            az = d[:, :, 2] * (R * R) + self.offsets[:k, None]           # [N, k, 2]
            xy = d[:, :, 0, :, None] + (d[:, :, 1] * R)[..., None, :]    # [N, k, 2, 2]
            torch.add(xy[..., None], az[..., None, None, :], out=rows[:, :k])
        if k < L:
            mask = self.table_size - 1
            h = v[:, k:]
            ax = (h[:, :, 0] * HASH_PRIMES[0]) & mask
            ay = (h[:, :, 1] * HASH_PRIMES[1]) & mask
            az = ((h[:, :, 2] * HASH_PRIMES[2]) & mask) + self.offsets[k:, None]
            xy = ax[..., :, None] ^ ay[..., None, :]
            torch.bitwise_xor(xy[..., None], az[..., None, None, :], out=rows[:, k:])
        return rows

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        """x01 [N, 3] in [0, 1]^3 (clamped) -> [N, L * F].

        Trilinear blending as three nested lerps (x, then y, then z): fewer and smaller
        intermediate tensors than forming the 8 corner weights, which matters most for the
        double backward of the NeRF's normals.
        """
        N, L, C = x01.shape[0], self.num_levels, self.features_per_level
        x01 = x01.clamp(0.0, 1.0)
        res = self.resolutions.to(x01.dtype)[:, None]                  # [L, 1]
        pos = x01[:, None, :] * res                                    # [N, L, 3]
        cell = torch.minimum(pos.detach().floor(), res - 1)
        frac = pos - cell                                              # [N, L, 3] in [0, 1]
        rows = self._rows(cell.long())                                 # [N, L, 2, 2, 2]
        feats = self.table.index_select(0, rows.reshape(-1)).reshape(N, L, 2, 2, 2, C)
        along_x = torch.lerp(feats[:, :, 0], feats[:, :, 1], frac[:, :, 0, None, None, None])  # [N, L, 2, 2, C]
        along_y = torch.lerp(along_x[:, :, 0], along_x[:, :, 1], frac[:, :, 1, None, None])   # [N, L, 2, C]
        along_z = torch.lerp(along_y[:, :, 0], along_y[:, :, 1], frac[:, :, 2, None])         # [N, L, C]
        return along_z.reshape(N, L * C)


class HashGridNeRF(nn.Module):
    """Density and colour from a hash encoding: density = softplus(MLP_s(h) + blob bias),
    rgb = sigmoid(MLP_c(h)), both MLPs on the same encoding h (as threestudio)."""

    def __init__(self, config: HashGridConfig | None = None, *, seed: int | None = None) -> None:
        super().__init__()
        self.config = config = config or HashGridConfig()
        with seeded(seed):
            self.encoding = HashEncoding(config.num_levels, config.features_per_level,
                                         config.log2_table_size, config.base_resolution,
                                         config.max_resolution, config.init_range)
            d = self.encoding.output_dim
            self.density_mlp = make_mlp(d, config.hidden_dim, config.num_hidden_layers, 1)
            self.color_mlp = make_mlp(d, config.hidden_dim, config.num_hidden_layers, 3)

    @property
    def aabb(self) -> torch.Tensor:
        """[2, 3] the cube [-b, b]^3."""
        t = self.encoding.table
        return cube_aabb(self.config.bound, device=t.device, dtype=t.dtype)

    def blob_bias(self, points: torch.Tensor) -> torch.Tensor:
        """Magic3D pre-activation density bias at world points [N, 3] -> [N]."""
        c = self.config
        radius = torch.sqrt((points * points).sum(dim=-1) + 1e-12)  # smooth at the origin
        return c.density_blob_scale * (1.0 - radius / c.density_blob_radius)

    def query(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """points [N, 3] (world) -> density [N], rgb [N, 3]; density is 0 outside the cube."""
        points = points.reshape(-1, 3)
        aabb = self.aabb
        h = self.encoding(normalize_to_aabb(points, aabb))
        raw = self.density_mlp(h)[:, 0] + self.blob_bias(points)
        density = F.softplus(raw)
        density = torch.where(inside_aabb(points, aabb), density, torch.zeros_like(density))
        rgb = torch.sigmoid(self.color_mlp(h))
        return density, rgb
