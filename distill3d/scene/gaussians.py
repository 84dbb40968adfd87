"""3D Gaussians: the scene of Gaussian splatting, with densification for long optimisations.

A scene of N Gaussians is six tensors (any of them may be ``nn.Parameter`` for optimisation,
or plain outputs of a network, as in a feed-forward generator):

    means          [N, 3]        centres in the world frame
    quats          [N, 4]        rotations as quaternions (w, x, y, z), normalised on use
    log_scales     [N, 3]        log of the standard deviations along the local axes
    opacity_logits [N]           logit of the peak opacity
    sh_dc          [N, 1, 3]     degree-0 spherical-harmonic coefficient per channel
    sh_rest        [N, K-1, 3]   higher SH coefficients, K = (degree + 1) ** 2 (K-1 = 0 at degree 0)

Colour follows 3DGS: ``rgb(d) = max(0, sum_k Y_k(d) sh_k + 0.5)`` for the viewing direction d
from the camera centre to the Gaussian, so a degree-0 scene stores ``sh_dc = (rgb - 0.5) / C0``.

Densification follows the 3DGS paper (Kerbl et al. 2023, Sec. 5.2) with the defaults it gives,
in the form gsplat's ``DefaultStrategy`` uses: screen-space gradients of the projected means are
accumulated per Gaussian (in NDC units, times the number of cameras in a batch); every
``every`` steps Gaussians whose mean gradient exceeds the threshold are cloned (small) or split
in two (large), nearly transparent ones are pruned, and opacities are reset periodically. The
optimiser's per-parameter state (Adam moments) follows every change: kept rows keep their
state, new rows start at zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "SH_C0",
    "Gaussians",
    "GaussianLearningRates",
    "DensifyConfig",
    "Densifier",
    "sh_basis",
    "num_sh_bases",
    "rgb_to_sh_dc",
    "sh_dc_to_rgb",
    "quat_to_rotmat",
    "clone_gaussians",
    "split_gaussians",
    "prune_gaussians",
    "reset_opacity",
]

SH_C0 = 0.28209479177387814  # Y_0^0 = 1 / (2 sqrt(pi))
FIELDS = ("means", "quats", "log_scales", "opacity_logits", "sh_dc", "sh_rest")


# ---------------------------------------------------------------------- spherical harmonics
def num_sh_bases(degree: int) -> int:
    """Number of SH coefficients per channel up to ``degree``: (degree + 1) ** 2."""
    return (int(degree) + 1) ** 2


def rgb_to_sh_dc(rgb: torch.Tensor) -> torch.Tensor:
    """[..., 3] colours in [0, 1] -> [..., 3] degree-0 coefficients (3DGS convention)."""
    return (rgb - 0.5) / SH_C0


def sh_dc_to_rgb(dc: torch.Tensor) -> torch.Tensor:
    """Inverse of ``rgb_to_sh_dc`` (no clamping)."""
    return dc * SH_C0 + 0.5


def sh_basis(degree: int, dirs: torch.Tensor) -> torch.Tensor:
    """Real spherical harmonics up to ``degree`` (<= 3) at unit directions [..., 3] -> [..., K].

    Ordering and signs are those of the 3DGS reference code (and gsplat), so coefficients
    read from a standard 3DGS PLY file render the same colours.
    """
    if not 0 <= degree <= 3:
        raise ValueError(f"SH degree must be in 0..3, got {degree}")
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, 0.5 / math.sqrt(math.pi))]
    if degree >= 1:
        c1 = math.sqrt(3.0 / (4.0 * math.pi))
        out += [-c1 * y, c1 * z, -c1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        a = 0.5 * math.sqrt(15.0 / math.pi)
        b = 0.25 * math.sqrt(5.0 / math.pi)
        c = 0.25 * math.sqrt(15.0 / math.pi)
        out += [a * x * y, -a * y * z, b * (2.0 * zz - xx - yy), -a * x * z, c * (xx - yy)]
    if degree >= 3:
        a = 0.25 * math.sqrt(35.0 / (2.0 * math.pi))
        b = 0.5 * math.sqrt(105.0 / math.pi)
        c = 0.25 * math.sqrt(21.0 / (2.0 * math.pi))
        d = 0.25 * math.sqrt(7.0 / math.pi)
        e = 0.25 * math.sqrt(105.0 / math.pi)
        out += [-a * y * (3.0 * xx - yy), b * x * y * z, -c * y * (4.0 * zz - xx - yy),
                d * z * (2.0 * zz - 3.0 * xx - 3.0 * yy), -c * x * (4.0 * zz - xx - yy),
                e * z * (xx - yy), -a * x * (xx - 3.0 * yy)]
    return torch.stack(out, dim=-1)


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """[..., 4] quaternions (w, x, y, z), any norm -> [..., 3, 3] rotation matrices."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    rows = [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]
    return torch.stack(rows, dim=-1).reshape(*quats.shape[:-1], 3, 3)


def rotmat_to_quat(rotations: torch.Tensor) -> torch.Tensor:
    """[..., 3, 3] rotation matrices -> [..., 4] unit quaternions (w, x, y, z) with w >= 0.

    Each of the four candidate forms (largest of w^2, x^2, y^2, z^2 under the root) is computed and the
    best-conditioned one kept, so the result is accurate for every rotation.
    """
    m = rotations
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    squares = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22,
                           1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1)  # 4 w^2, 4 x^2, 4 y^2, 4 z^2
    r = lambda i, j: m[..., i, j]  # noqa: E731
    candidates = torch.stack([  # row k: the quaternion times 4 q_k, from the root of squares[k]
        torch.stack([squares[..., 0], r(2, 1) - r(1, 2), r(0, 2) - r(2, 0), r(1, 0) - r(0, 1)], -1),
        torch.stack([r(2, 1) - r(1, 2), squares[..., 1], r(1, 0) + r(0, 1), r(0, 2) + r(2, 0)], -1),
        torch.stack([r(0, 2) - r(2, 0), r(1, 0) + r(0, 1), squares[..., 2], r(2, 1) + r(1, 2)], -1),
        torch.stack([r(1, 0) - r(0, 1), r(0, 2) + r(2, 0), r(2, 1) + r(1, 2), squares[..., 3]], -1)], dim=-2)
    best = squares.argmax(dim=-1)
    q = torch.gather(candidates, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = F.normalize(q, dim=-1)
    return torch.where(q[..., :1] < 0, -q, q)


def quat_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product a b of [..., 4] quaternions (w, x, y, z): the rotation b, then a."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], dim=-1)


# ---------------------------------------------------------------------- the scene
@dataclass
class Gaussians:
    """N 3D Gaussians (raw, unconstrained values; see the module docstring for shapes)."""

    means: torch.Tensor
    quats: torch.Tensor
    log_scales: torch.Tensor
    opacity_logits: torch.Tensor
    sh_dc: torch.Tensor
    sh_rest: torch.Tensor

    def __post_init__(self) -> None:
        n = self.means.shape[0]
        expected = {"means": (n, 3), "quats": (n, 4), "log_scales": (n, 3), "opacity_logits": (n,),
                    "sh_dc": (n, 1, 3)}
        for name, shape in expected.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"{name} must be {list(shape)}, got {list(getattr(self, name).shape)}")
        rest = self.sh_rest
        k = rest.shape[1] + 1 if rest.ndim == 3 else -1
        if rest.ndim != 3 or rest.shape[0] != n or rest.shape[2] != 3 or k not in (1, 4, 9, 16):
            raise ValueError(f"sh_rest must be [N, K-1, 3] with K in (1, 4, 9, 16), got {list(rest.shape)}")

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def device(self) -> torch.device:
        return self.means.device

    @property
    def dtype(self) -> torch.dtype:
        return self.means.dtype

    @property
    def sh_degree(self) -> int:
        """Highest SH degree stored (0..3)."""
        return int(round(math.sqrt(self.sh_rest.shape[1] + 1))) - 1

    def tensors(self) -> dict[str, torch.Tensor]:
        """The six raw tensors by field name."""
        return {name: getattr(self, name) for name in FIELDS}

    def _map(self, fn) -> "Gaussians":
        return Gaussians(**{name: fn(t) for name, t in self.tensors().items()})

    def to(self, device=None, dtype: torch.dtype | None = None) -> "Gaussians":
        return self._map(lambda t: t.to(device=device, dtype=dtype))

    def detach(self) -> "Gaussians":
        return self._map(lambda t: t.detach())

    def clone(self) -> "Gaussians":
        return self._map(lambda t: t.detach().clone())

    def __getitem__(self, index) -> "Gaussians":
        """Select Gaussians by a bool mask [N], index tensor or slice."""
        return self._map(lambda t: t[index])

    @staticmethod
    def cat(parts: list["Gaussians"]) -> "Gaussians":
        degrees = {p.sh_degree for p in parts}
        if len(degrees) != 1:
            raise ValueError(f"cannot concatenate Gaussians of SH degrees {sorted(degrees)}")
        return Gaussians(**{name: torch.cat([getattr(p, name) for p in parts]) for name in FIELDS})

    def trainable(self) -> "Gaussians":
        """A copy whose six tensors are leaf ``nn.Parameter``s (for an optimiser)."""
        return self._map(lambda t: nn.Parameter(t.detach().clone()))

    def parameters(self) -> Iterator[torch.Tensor]:
        return iter(self.tensors().values())

    def param_groups(self, lrs: "GaussianLearningRates | None" = None) -> list[dict]:
        """Optimiser parameter groups, one per field, named, with the 3DGS learning rates."""
        lrs = lrs or GaussianLearningRates()
        return [{"params": [getattr(self, name)], "lr": getattr(lrs, name), "name": name} for name in FIELDS]

    # ------------------------------------------------------------------ activated values
    @property
    def scales(self) -> torch.Tensor:
        """[N, 3] standard deviations along the local axes."""
        return self.log_scales.exp()

    @property
    def opacities(self) -> torch.Tensor:
        """[N] peak opacities in (0, 1)."""
        return torch.sigmoid(self.opacity_logits)

    @property
    def rotations(self) -> torch.Tensor:
        """[N, 4] unit quaternions (w, x, y, z)."""
        return F.normalize(self.quats, dim=-1)

    @property
    def rotation_matrices(self) -> torch.Tensor:
        """[N, 3, 3] local-to-world rotations."""
        return quat_to_rotmat(self.quats)

    @property
    def covariances(self) -> torch.Tensor:
        """[N, 3, 3] world-space covariances R S S R^T."""
        m = self.rotation_matrices * self.scales[:, None, :]
        return m @ m.transpose(-1, -2)

    @property
    def sh(self) -> torch.Tensor:
        """[N, K, 3] all SH coefficients."""
        return torch.cat([self.sh_dc, self.sh_rest], dim=1)

    @property
    def rgb(self) -> torch.Tensor:
        """[N, 3] view-independent (degree-0) colours, clamped below at 0 as when rendered."""
        return sh_dc_to_rgb(self.sh_dc[:, 0]).clamp_min(0.0)

    def colors(self, camera_centers: torch.Tensor | None = None, sh_degree: int | None = None) -> torch.Tensor:
        """Colours seen from cameras at ``camera_centers`` [C, 3] -> [C, N, 3].

        Uses SH bands up to ``sh_degree`` (default: all stored). At degree 0, or without camera
        centres, returns the view-independent colours [N, 3].
        """
        degree = self.sh_degree if sh_degree is None else int(sh_degree)
        if degree > self.sh_degree:
            raise ValueError(f"sh_degree {degree} exceeds the stored degree {self.sh_degree}")
        if degree == 0 or camera_centers is None:
            return self.rgb
        dirs = F.normalize(self.means[None] - camera_centers[:, None].to(self.dtype), dim=-1)  # [C, N, 3]
        basis = sh_basis(degree, dirs)  # [C, N, K']
        coeffs = self.sh[:, : basis.shape[-1]]  # [N, K', 3]
        return (torch.einsum("cnk,nkd->cnd", basis, coeffs) + 0.5).clamp_min(0.0)

    # ------------------------------------------------------------------ construction
    @staticmethod
    def from_values(means: torch.Tensor, scales: torch.Tensor, opacities: torch.Tensor, *,
                    rgb: torch.Tensor | None = None, sh: torch.Tensor | None = None,
                    quats: torch.Tensor | None = None) -> "Gaussians":
        """Gaussians from activated values (differentiable, e.g. a network's outputs).

        means [N, 3], scales [N, 3] (> 0), opacities [N] in (0, 1), and either rgb [N, 3]
        (degree 0) or sh [N, K, 3]; quats [N, 4] (w, x, y, z), identity when omitted.
        """
        n = means.shape[0]
        if (rgb is None) == (sh is None):
            raise ValueError("give exactly one of rgb [N, 3] or sh [N, K, 3]")
        if sh is None:
            sh = rgb_to_sh_dc(rgb)[:, None, :]
        if quats is None:
            quats = torch.zeros(n, 4, dtype=means.dtype, device=means.device)
            quats[:, 0] = 1.0
        eps = torch.finfo(opacities.dtype).eps
        return Gaussians(means=means, quats=quats, log_scales=scales.log(),
                         opacity_logits=torch.logit(opacities, eps=eps), sh_dc=sh[:, :1], sh_rest=sh[:, 1:])

    @staticmethod
    def from_points(points: torch.Tensor, rgb: torch.Tensor, *, sh_degree: int = 0,
                    scale: float | torch.Tensor | None = None, opacity: float = 0.1) -> "Gaussians":
        """Isotropic Gaussians at ``points`` [N, 3] with colours ``rgb`` [N, 3] in [0, 1].

        Without ``scale`` each Gaussian's std is the distance to its 3 nearest neighbours
        (3DGS Sec. 5.1; root mean square, as its reference code computes it); opacity 0.1 as there.
        """
        points = torch.as_tensor(points)
        n, dtype, dev = points.shape[0], points.dtype, points.device
        if scale is None:
            scale = _knn_scale(points)
        scales = torch.as_tensor(scale, dtype=dtype, device=dev).expand(n).reshape(n, 1).expand(n, 3)
        sh = torch.zeros(n, num_sh_bases(sh_degree), 3, dtype=dtype, device=dev)
        sh[:, 0] = rgb_to_sh_dc(torch.as_tensor(rgb, dtype=dtype, device=dev))
        return Gaussians.from_values(points, scales.clone(), torch.full((n,), opacity, dtype=dtype, device=dev), sh=sh)

    @staticmethod
    def random_ball(n: int, radius: float = 1.0, *, sh_degree: int = 0, scale: float | None = None,
                    opacity: float = 0.1, generator: torch.Generator | None = None,
                    device=None, dtype: torch.dtype = torch.float32) -> "Gaussians":
        """n Gaussians uniform in a ball of ``radius`` about the origin, random colours and rotations.

        ``scale`` defaults to the mean spacing of n points in the ball, ``radius / n ** (1/3)``.
        """
        g = generator
        dirs = F.normalize(torch.randn(n, 3, generator=g, dtype=dtype), dim=-1)
        r = radius * torch.rand(n, 1, generator=g, dtype=dtype) ** (1.0 / 3.0)
        rgb = torch.rand(n, 3, generator=g, dtype=dtype)
        quats = F.normalize(torch.randn(n, 4, generator=g, dtype=dtype), dim=-1)
        scale = radius / max(n, 1) ** (1.0 / 3.0) if scale is None else scale
        out = Gaussians.from_points(dirs * r, rgb, sh_degree=sh_degree, scale=scale, opacity=opacity)
        out.quats = quats
        return out.to(device)


def _knn_scale(points: torch.Tensor, k: int = 3) -> torch.Tensor:
    """[N] root mean squared distance of each point to its k nearest neighbours."""
    from scipy.spatial import cKDTree

    pts = points.detach().cpu().double().numpy()
    n = pts.shape[0]
    if n < 2:
        return torch.full((n,), 0.01, dtype=points.dtype, device=points.device)
    kk = min(k, n - 1)
    dist, _ = cKDTree(pts).query(pts, k=kk + 1)
    d2 = (dist[:, 1:] ** 2).mean(axis=1)
    out = torch.from_numpy(d2).sqrt().clamp_min(1e-7)
    return out.to(dtype=points.dtype, device=points.device)


@dataclass
class GaussianLearningRates:
    """Adam learning rates per field (the defaults of the 3DGS reference training code)."""

    means: float = 1.6e-4            # centres (3DGS: times the scene extent, decaying to 1.6e-6)
    quats: float = 1e-3              # rotations
    log_scales: float = 5e-3         # log standard deviations
    opacity_logits: float = 5e-2     # opacity logits
    sh_dc: float = 2.5e-3            # degree-0 colour
    sh_rest: float = 2.5e-3 / 20.0   # higher SH bands


# ---------------------------------------------------------------------- optimiser surgery
def _find_param(optimizer: torch.optim.Optimizer, tensor: torch.Tensor):
    for group in optimizer.param_groups:
        for i, p in enumerate(group["params"]):
            if p is tensor:
                return group, i
    return None, None


def _edit_rows(gaussians: Gaussians, optimizer: torch.optim.Optimizer | None,
               keep: torch.Tensor | None, new_rows: dict[str, torch.Tensor] | None) -> None:
    """Replace every field by ``cat(field[keep], new_rows[field])``, in place.

    Fields that are Parameters stay Parameters; their optimiser state rows follow (kept rows
    keep their moments, appended rows start at zero).
    """
    for name in FIELDS:
        old = getattr(gaussians, name)
        rows = old.detach() if keep is None else old.detach()[keep]
        n_new = 0
        if new_rows is not None:
            rows = torch.cat([rows, new_rows[name].to(rows)])
            n_new = new_rows[name].shape[0]
        new = nn.Parameter(rows, requires_grad=old.requires_grad) if isinstance(old, nn.Parameter) else rows
        if optimizer is not None:
            group, i = _find_param(optimizer, old)
            if group is not None:
                state = optimizer.state.pop(old, None)
                if state is not None:
                    for key, value in state.items():
                        if torch.is_tensor(value) and value.shape == old.shape:
                            kept = value if keep is None else value[keep]
                            zeros = value.new_zeros((n_new,) + tuple(value.shape[1:]))
                            state[key] = torch.cat([kept, zeros])
                    optimizer.state[new] = state
                group["params"][i] = new
        setattr(gaussians, name, new)


@torch.no_grad()
def clone_gaussians(gaussians: Gaussians, mask: torch.Tensor,
                    optimizer: torch.optim.Optimizer | None = None) -> int:
    """Append exact copies of the Gaussians in ``mask`` [N] (3DGS 'clone'). Returns the count."""
    new = {name: t.detach()[mask] for name, t in gaussians.tensors().items()}
    _edit_rows(gaussians, optimizer, None, new)
    return int(mask.sum())


@torch.no_grad()
def split_gaussians(gaussians: Gaussians, mask: torch.Tensor, optimizer: torch.optim.Optimizer | None = None,
                    *, n: int = 2, shrink: float = 1.6, generator: torch.Generator | None = None) -> int:
    """Replace each Gaussian in ``mask`` by ``n`` smaller ones (3DGS 'split').

    New centres are samples of the parent Gaussian; scales are divided by ``shrink``
    (3DGS: 0.8 * n = 1.6); other attributes are copied. Returns the number split.
    """
    t = {name: v.detach()[mask] for name, v in gaussians.tensors().items()}
    m = t["means"].shape[0]
    if m == 0:
        return 0
    noise = torch.randn(n, m, 3, generator=generator, dtype=t["means"].dtype).to(t["means"].device)
    local = noise * t["log_scales"].exp()[None]
    offsets = torch.einsum("mij,kmj->kmi", quat_to_rotmat(t["quats"]), local)
    new = {name: v.repeat(n, *([1] * (v.ndim - 1))) for name, v in t.items()}
    new["means"] = (t["means"][None] + offsets).reshape(n * m, 3)
    new["log_scales"] = new["log_scales"] - math.log(shrink)
    _edit_rows(gaussians, optimizer, ~mask, new)
    return m


@torch.no_grad()
def prune_gaussians(gaussians: Gaussians, mask: torch.Tensor,
                    optimizer: torch.optim.Optimizer | None = None) -> int:
    """Remove the Gaussians in ``mask`` [N]. Returns the number removed."""
    _edit_rows(gaussians, optimizer, ~mask, None)
    return int(mask.sum())


@torch.no_grad()
def reset_opacity(gaussians: Gaussians, value: float = 0.01,
                  optimizer: torch.optim.Optimizer | None = None) -> None:
    """Clamp all opacities to at most ``value`` and zero their optimiser state (3DGS Sec. 5.2)."""
    logits = gaussians.opacity_logits
    cap = math.log(value / (1.0 - value))
    if isinstance(logits, nn.Parameter):
        logits.data.clamp_(max=cap)
    else:
        gaussians.opacity_logits = logits.clamp_max(cap)
    if optimizer is not None:
        state = optimizer.state.get(gaussians.opacity_logits)
        for key, v in (state or {}).items():
            if torch.is_tensor(v) and v.shape == logits.shape:
                v.zero_()


# ---------------------------------------------------------------------- densification
@dataclass
class DensifyConfig:
    """When and how to grow and prune Gaussians (3DGS Sec. 5.2 and its training defaults)."""

    grad_threshold: float = 0.0002  # densify where the mean NDC-space gradient of the projected centre exceeds this
    start_step: int = 500           # densify at steps > start_step ...
    stop_step: int = 15_000         # ... and < stop_step
    every: int = 100                # steps between two densifications
    opacity_reset_every: int = 3000  # steps between two opacity resets
    opacity_reset_value: float = 0.01  # opacities are clamped to at most this at a reset
    prune_opacity: float = 0.005    # prune Gaussians whose opacity falls below this
    percent_dense: float = 0.01     # clone if the largest scale <= percent_dense * extent, else split
    prune_scale: float = 0.1        # prune largest scale > prune_scale * extent (after the first reset)
    split_into: int = 2             # Gaussians a split one becomes
    split_shrink: float = 1.6       # scale divisor of a split (0.8 * split_into)
    scene_extent: float = 1.0       # the scene's size that percent_dense and prune_scale refer to
    max_count: int | None = None    # no densification once there are this many Gaussians (none: no cap)
    # densify those above this quantile of the mean gradients instead of above grad_threshold (none: threshold);
    # a guidance loss's gradients have no fixed scale, so a threshold tuned for one loss fits no other
    grad_quantile: float | None = None


class Densifier:
    """Accumulates screen-space gradients and grows / prunes / resets on schedule.

    Use per step (``step`` counts from 1, as in 3DGS):
        info = {}; out = render_gaussians(g, cams, info=info); loss.backward()
        densifier.accumulate(info); optimizer.step(); densifier.step(step, g, optimizer)
    """

    def __init__(self, config: DensifyConfig | None = None, generator: torch.Generator | None = None):
        self.config = config or DensifyConfig()
        self.generator = generator
        self.grad_sum: torch.Tensor | None = None  # [N]
        self.count: torch.Tensor | None = None  # [N]

    @torch.no_grad()
    def accumulate(self, info: dict) -> None:
        """Add the gradient norms of ``info['means2d']`` ([C, N, 2], pixels) of visible Gaussians."""
        means2d = info["means2d"]
        if means2d.grad is None:
            return
        grad = means2d.grad.detach().clone()
        c = info["n_cameras"]
        grad[..., 0] *= info["width"] / 2.0 * c  # pixels -> NDC, undo the mean over cameras
        grad[..., 1] *= info["height"] / 2.0 * c
        radii = info["radii"]
        visible = (radii > 0).all(-1) if radii.ndim == 3 else radii > 0  # [C, N]
        norms = (grad.norm(dim=-1) * visible).sum(0)
        n = norms.shape[0]
        if self.grad_sum is None or self.grad_sum.shape[0] != n:
            self.grad_sum = torch.zeros(n, device=norms.device, dtype=torch.float32)
            self.count = torch.zeros(n, device=norms.device, dtype=torch.float32)
        self.grad_sum += norms.float()
        self.count += visible.sum(0).float()

    def mean_grads(self, n: int, device) -> torch.Tensor:
        if self.grad_sum is None or self.grad_sum.shape[0] != n:
            return torch.zeros(n, device=device)
        return self.grad_sum / self.count.clamp_min(1.0)

    @torch.no_grad()
    def step(self, step: int, gaussians: Gaussians, optimizer: torch.optim.Optimizer | None = None) -> dict[str, int]:
        """Run whatever the schedule asks for at ``step``; returns counts of what was done."""
        cfg = self.config
        done = {"cloned": 0, "split": 0, "pruned": 0, "reset": 0}
        if step >= cfg.stop_step:
            return done
        if step > cfg.start_step and step % cfg.every == 0:
            grow = cfg.max_count is None or len(gaussians) < cfg.max_count
            done.update(self.densify_and_prune(gaussians, optimizer, after_reset=step > cfg.opacity_reset_every,
                                               grow=grow))
        if step > 0 and step % cfg.opacity_reset_every == 0:
            reset_opacity(gaussians, cfg.opacity_reset_value, optimizer)
            done["reset"] = 1
        return done

    @torch.no_grad()
    def densify_and_prune(self, gaussians: Gaussians, optimizer=None, after_reset: bool = False,
                          grow: bool = True) -> dict[str, int]:
        """Clone / split by gradient (when ``grow``), then prune by opacity (and size after a reset); clears stats."""
        cfg = self.config
        n = len(gaussians)
        grads = self.mean_grads(n, gaussians.device)
        if cfg.grad_quantile is None:
            high = grads > cfg.grad_threshold
        else:
            seen = grads[grads > 0]
            cut = torch.quantile(seen.float(), cfg.grad_quantile) if len(seen) else grads.new_tensor(float("inf"))
            high = grads > cut
        if not grow:
            high = torch.zeros_like(high)
        small = gaussians.scales.max(dim=-1).values <= cfg.percent_dense * cfg.scene_extent
        to_clone, to_split = high & small, high & ~small
        n_clone = clone_gaussians(gaussians, to_clone, optimizer)
        to_split = torch.cat([to_split, to_split.new_zeros(n_clone)])  # clones are not split
        n_split = split_gaussians(gaussians, to_split, optimizer, n=cfg.split_into,
                                  shrink=cfg.split_shrink, generator=self.generator)
        prune = gaussians.opacities < cfg.prune_opacity
        if after_reset:
            prune |= gaussians.scales.max(dim=-1).values > cfg.prune_scale * cfg.scene_extent
        n_prune = prune_gaussians(gaussians, prune, optimizer)
        self.grad_sum = self.count = None
        return {"cloned": n_clone, "split": n_split, "pruned": n_prune}
