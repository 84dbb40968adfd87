"""FID and KID between two sets of images (HoloFusion Sec. 4.1: "We use FID [15] and KID [3]").

- FID (Heusel et al. 2017): fit a Gaussian to each set's features and take the Frechet distance
  between the two, ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``.
- KID (Binkowski et al. 2018, "Demystifying MMD GANs"): the unbiased estimate of MMD^2 with the cubic
  polynomial kernel ``k(x, y) = (x.y / D + 1)^3``, averaged over random subsets of both sets (and its
  spread over the subsets), as torch-fidelity and clean-fid compute it. Unbiased: it can be negative
  when the two sets come from one distribution.

The features come from a ``FeatureNetwork`` (``distill3d.eval.feature_networks``): by default the
shipped world classifier, or Inception-v3 from a weights file. Figures made with different networks
are different measures; every result names its network.

``fid_between_folders`` is ``distill3d eval fid DIR_A DIR_B``: every .png / .jpg / .jpeg in each
folder, transparent pixels composited over white, resized to the network's input size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from distill3d.errors import UserError
from distill3d.eval.feature_networks import FeatureNetwork

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
BACKGROUND = 1.0  # transparent pixels are composited over white


@dataclass
class FolderFIDConfig:
    """How ``fid_between_folders`` reads the folders and samples KID's subsets."""

    batch_size: int = 50            # images through the network at once (pytorch-fid's default)
    kid_subsets: int = 100          # Binkowski et al. 2018 / torch-fidelity: 100 subsets
    kid_subset_size: int = 1000     # ... of 1000 images from each set; clipped to the smaller set
    recursive: bool = False         # also read images in sub-folders
    seed: int = 0                   # KID's subsets


# --- statistics ----------------------------------------------------------------------------------


def feature_statistics(features: Tensor) -> tuple[Tensor, Tensor]:
    """Features [N, D] -> mean [D] and covariance [D, D] (unbiased, divides by N - 1), float64."""
    if features.dim() != 2 or features.shape[0] < 2:
        raise UserError(f"FID needs at least 2 feature vectors [N, D], got {tuple(features.shape)}")
    f = features.detach().double()
    mu = f.mean(dim=0)
    centred = f - mu
    return mu, centred.T @ centred / (f.shape[0] - 1)


def _psd_eigenvalues(matrix: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvalues [D] and eigenvectors [D, D] of a symmetric positive semi-definite matrix [D, D], with
    the values that rounding alone can make (below D * eps of the largest, or negative) set to 0."""
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    tol = values.abs().max() * matrix.shape[0] * torch.finfo(values.dtype).eps
    return torch.where(values > tol, values, torch.zeros_like(values)), vectors


def _psd_sqrt(matrix: Tensor) -> Tensor:
    """Square root of a symmetric positive semi-definite matrix [D, D] by eigen-decomposition."""
    values, vectors = _psd_eigenvalues(matrix)
    return (vectors * values.sqrt()) @ vectors.T


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    """Frechet distance between N(mu1 [D], sigma1 [D, D]) and N(mu2, sigma2) (Heusel et al. 2017).

    ``tr((S1 S2)^(1/2))`` is computed as ``tr((S1^(1/2) S2 S1^(1/2))^(1/2))``: the two matrices inside
    have the same eigenvalues, and the second is symmetric positive semi-definite, so two symmetric
    eigen-decompositions in float64 give it without complex numbers, even for singular covariances
    (fewer samples than dimensions): eigenvalues within rounding of 0 count as 0, so a set against
    itself comes out at 0 to rounding, not at sqrt(eps) of its covariance's scale.
    """
    mu1, mu2, sigma1, sigma2 = (torch.as_tensor(t).detach().double().cpu() for t in (mu1, mu2, sigma1, sigma2))
    D = mu1.shape[0]
    if mu1.shape != (D,) or mu2.shape != (D,) or sigma1.shape != (D, D) or sigma2.shape != (D, D):
        raise ValueError(f"expected means [D] and covariances [D, D] of one D, got {tuple(mu1.shape)}, "
                         f"{tuple(sigma1.shape)}, {tuple(mu2.shape)}, {tuple(sigma2.shape)}")
    root1 = _psd_sqrt(sigma1)
    inner = root1 @ sigma2 @ root1
    trace_sqrt = _psd_eigenvalues(inner)[0].sqrt().sum()
    diff = mu1 - mu2
    return float(diff @ diff + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt)


def polynomial_kernel(x: Tensor, y: Tensor) -> Tensor:
    """KID's kernel ``(x.y / D + 1)^3`` between rows of x [n, D] and y [m, D] -> [n, m] (Binkowski et al. 2018)."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def mmd2_unbiased(x: Tensor, y: Tensor) -> float:
    """Unbiased MMD^2 between samples x [m, D] and y [n, D] under ``polynomial_kernel`` (Gretton et al.
    2012; Binkowski et al. 2018): mean k(x, x') over pairs of distinct x rows, the same for y,
    minus twice the mean k(x, y) over all pairs."""
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise UserError(f"KID needs at least 2 samples on each side, got {m} and {n}")
    k_xx, k_yy = polynomial_kernel(x, x), polynomial_kernel(y, y)
    within_x = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    within_y = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return float(within_x + within_y - 2 * polynomial_kernel(x, y).mean())


def kernel_inception_distance(f1: Tensor, f2: Tensor, subsets: int = 100, subset_size: int = 1000,
                              generator: torch.Generator | None = None) -> tuple[float, float]:
    """KID between features f1 [N, D] and f2 [M, D]: (mean, std) of ``mmd2_unbiased`` over ``subsets``
    random subsets, each ``subset_size`` rows of f1 and as many of f2 drawn without replacement (for
    each subset: ``torch.randperm(N, generator)[:subset_size]``, then the same for M). The std is
    that of the subsets' values (divides by their count, as torch-fidelity's ``np.std``). float64, on
    the features' device. ``subset_size`` must not exceed N or M.
    """
    n1, n2 = f1.shape[0], f2.shape[0]
    if subsets < 1 or subset_size < 2:
        raise UserError(f"KID needs at least 1 subset of at least 2 images, got {subsets} of {subset_size}")
    if subset_size > min(n1, n2):
        raise UserError(f"KID subset size {subset_size} is larger than the sets ({n1} and {n2} images)")
    x, y = f1.detach().double(), f2.detach().double()
    values = []
    for _ in range(subsets):
        a = torch.randperm(n1, generator=generator)[:subset_size].to(x.device)
        b = torch.randperm(n2, generator=generator)[:subset_size].to(y.device)
        values.append(mmd2_unbiased(x[a], y[b]))
    values = np.asarray(values)
    return float(values.mean()), float(values.std())


def feature_fid_kid(fa: Tensor, fb: Tensor, subsets: int = 100, seed: int = 0) -> dict:
    """FID and KID (mean, std) between features fa [N, D] and fb [M, D], N, M >= 2. KID's subsets hold half
    the smaller set (at most 1000, Binkowski et al.'s size): subsets of the whole set would all be equal
    (std 0). Returns ``fid``, ``kid_mean``, ``kid_std``, ``kid_subset_size``, ``count``, ``count_reference``."""
    size = min(1000, max(2, min(len(fa), len(fb)) // 2))
    kid_mean, kid_std = kernel_inception_distance(fa, fb, subsets, size, torch.Generator().manual_seed(seed))
    return {"fid": frechet_distance(*feature_statistics(fa), *feature_statistics(fb)), "kid_mean": kid_mean,
            "kid_std": kid_std, "kid_subset_size": size, "count": len(fa), "count_reference": len(fb)}


# --- folders of images ---------------------------------------------------------------------------


def image_files(folder: str | Path, recursive: bool = False) -> list[Path]:
    """The .png / .jpg / .jpeg files of a folder (any case; with ``recursive``, of its sub-folders too), sorted."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder of images")
    pattern = "**/*" if recursive else "*"
    files = sorted(p for p in folder.glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        where = "in it or its sub-folders" if recursive else "in it (add --recursive for sub-folders)"
        raise UserError(f"{folder} has no .png, .jpg or .jpeg image {where}")
    return files


def read_image(path: Path) -> Tensor:
    """[H, W, 3] float32 in [0, 1] from an image file: RGBA (straight alpha) composited over white;
    grey, palette and RGB files read as opaque. A file that cannot be read is a ``UserError`` naming it."""
    try:
        with Image.open(path) as image:
            rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
    except Exception as e:  # truncated, foreign or bomb-sized files alike: one line naming the file
        raise UserError(f"cannot read image {path} ({type(e).__name__}: {e})") from e
    rgba = torch.from_numpy(rgba)
    alpha = rgba[..., 3:]
    return rgba[..., :3] * alpha + BACKGROUND * (1 - alpha)


def folder_features(files: list[Path], network: FeatureNetwork, batch_size: int = 50,
                    progress: bool = False, desc: str = "features") -> Tensor:
    """Features [N, D] (on the network's device) of image files, each read with ``read_image`` and
    brought to the network's input size with ``network.resize``, ``batch_size`` at a time."""
    from tqdm.auto import tqdm

    parts = []
    starts = range(0, len(files), batch_size)
    for start in tqdm(starts, desc=desc, disable=not progress, unit="batch"):
        batch = [network.resize(read_image(p)[None]) for p in files[start:start + batch_size]]
        parts.append(network.features(torch.cat(batch)))
    return torch.cat(parts)


def fid_between_folders(folder_a: str | Path, folder_b: str | Path, network: FeatureNetwork,
                        config: FolderFIDConfig | None = None, progress: bool = False) -> dict:
    """FID and KID between the images of two folders.

    Returns ``fid``, ``kid_mean``, ``kid_std``, ``count_a``, ``count_b``, ``network`` (its name),
    ``feature_dim``, ``input_size``, ``kid_subsets``, ``kid_subset_size`` (after clipping to the smaller
    folder) and both folders. Each folder needs at least 2 images.
    """
    config = config or FolderFIDConfig()
    if config.batch_size < 1 or config.kid_subsets < 1 or config.kid_subset_size < 2:
        raise UserError("the batch size and KID's subsets must be positive, its subset size at least 2")
    files_a, files_b = image_files(folder_a, config.recursive), image_files(folder_b, config.recursive)
    for folder, files in ((folder_a, files_a), (folder_b, files_b)):
        if len(files) < 2:
            raise UserError(f"{folder} has {len(files)} image; FID and KID need at least 2 in each folder")
    fa = folder_features(files_a, network, config.batch_size, progress, desc="features A")
    fb = folder_features(files_b, network, config.batch_size, progress, desc="features B")
    subset_size = min(config.kid_subset_size, len(files_a), len(files_b))
    kid_mean, kid_std = kernel_inception_distance(fa, fb, config.kid_subsets, subset_size,
                                                  torch.Generator().manual_seed(config.seed))
    return {"fid": frechet_distance(*feature_statistics(fa), *feature_statistics(fb)),
            "kid_mean": kid_mean, "kid_std": kid_std,
            "count_a": len(files_a), "count_b": len(files_b),
            "network": network.name, "feature_dim": network.feature_dim, "input_size": network.input_size,
            "kid_subsets": config.kid_subsets, "kid_subset_size": subset_size,
            "folder_a": str(folder_a), "folder_b": str(folder_b)}
