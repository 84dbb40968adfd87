"""CO3Dv2 folders (Common Objects in 3D, Reizenstein et al. 2021) read as multi-view data sets, and written.

Layout (the data set's own; paths in annotations are relative to the data set root)::

    ROOT/<category>/frame_annotations.jgz      gzipped JSON list of FrameAnnotation
    ROOT/<category>/sequence_annotations.jgz   gzipped JSON list of SequenceAnnotation
    ROOT/<category>/<sequence>/images/frame000001.jpg   (frame_number 0; numbers need not match names)
    ROOT/<category>/<sequence>/masks/frame000001.png    8-bit foreground probability * 255
    ROOT/<category>/set_lists/set_lists_<subset>.json   optional {"train": [[sequence, frame_number, image
                                                        path], ...], "val": ..., "test": ...}

A FrameAnnotation holds ``sequence_name``, ``frame_number`` (0-based), ``frame_timestamp`` (s),
``image {path, size: [H, W]}``, ``mask {path, mass}`` (mass: the mask's sum of probabilities),
``depth``, ``meta`` and ``viewpoint {R, T, focal_length, principal_point, intrinsics_format}``.
A SequenceAnnotation holds ``sequence_name``, ``category``, ``video``, ``point_cloud`` and
``viewpoint_quality_score``.

The cameras' conventions (PyTorch3D's NDC to distill3d's OpenCV) and the move of each sequence into the
world frame are in ``distill3d.data.co3d_cameras``.

What ``Co3dDataset`` returns (the dict of ``MultiviewDataset``, so a CO3D folder goes wherever a
multi-view data set does): per sequence, images [V, R, R, 4] (colour, alpha), c2w [V, 4, 4] in
distill3d's OpenCV convention, K [V, 3, 3] in pixels of the returned R x R image, elevation /
azimuth / distance / fovy [V], prompt ("a teddybear", from the category), name (the sequence) and
index.

- Crops, as CO3D's loaders do (PyTorch3D ``box_crop``, defaults ``box_crop_mask_thr = 0.4``,
  ``box_crop_context = 0.3``): the bounding box of the mask above ``crop_mask_threshold``, grown
  by ``crop_context`` of its size (half on each side). distill3d then takes the square of the
  grown box's longer side about the box centre, shrunk to the image's shorter side if larger and
  shifted (not clipped) into the image, rounded to whole pixels, and resampled to R x R (PIL
  bilinear, antialiased when shrinking). PyTorch3D keeps a non-square box and pads; a square
  keeps one focal length per image and no padding. Without ``crop``: the centred square of the
  image's shorter side. K follows exactly: ``fx' = fx R / side``, ``cx' = (cx - left) R / side``.
  A frame whose mask is empty or absent falls back to the centred square.
- Masks are **soft**: alpha is the stored foreground probability (PNG / 255), resampled like the
  image, never thresholded (threshold it where a binary mask is needed). A frame without a mask
  has alpha 1. Frames whose annotated mask mass is <= 1 are skipped, as PyTorch3D's
  ``remove_empty_masks`` does, and so are frames without a viewpoint.
- Colour: with ``background=None`` the photograph as it is (its real background included); with a
  grey level ``b``, ``rgb * alpha + b * (1 - alpha)`` (the object cut out over a plain background,
  what HoloDiffusion trains on with its white ``bg_color``).
- elevation / azimuth / distance are the spherical coordinates (``cameras.position_to_spherical``)
  of each camera centre about the world origin, +Z up, after the normalisation (``Co3dNormalization``); fovy is the
  vertical field of view of the returned K, ``2 atan(R / (2 fy))``. With ``normalize=None`` they
  are taken in the sequence's own (arbitrary) frame and mean little.

``write_co3d_folder`` writes exactly this format (ndc_isotropic intrinsics, JPEG frames, PNG
masks), from world renders or anything else with ``distill3d.cameras.Cameras``.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from distill3d.atomic_files import temporary_sibling
from distill3d.cameras import Cameras, position_to_spherical
from distill3d.data.co3d_cameras import (
    LEGACY_FORMAT,
    Co3dNormalization,
    apply_similarity,
    normalization_transform,
    opencv_from_pytorch3d,
    pytorch3d_from_opencv,
)
from distill3d.data.layout import META_FILE, composite
from distill3d.data.multiview import MultiviewDataset
from distill3d.errors import UserError

__all__ = [
    "DEFAULT_RESOLUTION", "FRAME_ANNOTATIONS", "SEQUENCE_ANNOTATIONS", "Co3dDataset", "Co3dFrame",
    "Co3dNormalization", "is_co3d_folder", "normalization_transform", "open_multiview_dataset",
    "opencv_from_pytorch3d", "pytorch3d_from_opencv", "read_jgz", "write_co3d_folder",
]

FRAME_ANNOTATIONS = "frame_annotations.jgz"
SEQUENCE_ANNOTATIONS = "sequence_annotations.jgz"
SET_LISTS = "set_lists"

DEFAULT_RESOLUTION = 128
"""Side of the returned square frames (HoloDiffusion renders 256 from 800-pixel crops; a CPU-sized default)."""
DEFAULT_NORMALIZATION = Co3dNormalization()
CROP_MASK_THRESHOLD = 0.4  # CO3D / PyTorch3D box_crop_mask_thr
CROP_CONTEXT = 0.3         # CO3D / PyTorch3D box_crop_context
FRAME_RATE = 30.0
"""Nominal frames per second behind the timestamps ``write_co3d_folder`` writes."""

def _viewpoint_cameras(frames: Sequence[dict]) -> tuple[Tensor, Tensor]:
    """OpenCV c2w [B, 4, 4] and pixel K [B, 3, 3] (float64, full images) of frame annotations."""
    views = [f["viewpoint"] for f in frames]
    return opencv_from_pytorch3d(
        torch.tensor([v["R"] for v in views]), torch.tensor([v["T"] for v in views]),
        torch.tensor([v["focal_length"] for v in views]), torch.tensor([v["principal_point"] for v in views]),
        torch.tensor([f["image"]["size"] for f in frames]),
        [v.get("intrinsics_format", LEGACY_FORMAT) for v in views])


# ---------------------------------------------------------------------- crops
def centre_square(image_hw: Sequence[int]) -> tuple[int, int, int]:
    """(left, top, side) of the centred square of the shorter side."""
    h, w = int(image_hw[0]), int(image_hw[1])
    side = min(h, w)
    return (w - side) // 2, (h - side) // 2, side


def mask_crop_box(mask: np.ndarray | None, image_hw: Sequence[int], *, threshold: float = CROP_MASK_THRESHOLD,
                  context: float = CROP_CONTEXT) -> tuple[int, int, int]:
    """(left, top, side) of the square crop about a mask [H, W] in [0, 1] (module docstring)."""
    h, w = int(image_hw[0]), int(image_hw[1])
    if mask is None:
        return centre_square(image_hw)
    ys, xs = np.nonzero(mask > threshold)
    if xs.size == 0:
        return centre_square(image_hw)
    x0, x1, y0, y1 = float(xs.min()), float(xs.max()) + 1.0, float(ys.min()), float(ys.max()) + 1.0
    side = min(max(round(max(x1 - x0, y1 - y0) * (1.0 + context)), 1), h, w)
    left = min(max(round((x0 + x1 - side) / 2.0), 0), w - side)
    top = min(max(round((y0 + y1 - side) / 2.0), 0), h - side)
    return left, top, side


def cropped_intrinsics(K: Tensor, box: tuple[int, int, int], resolution: int) -> Tensor:
    """Pixel K [3, 3] of a square crop (left, top, side) resampled to resolution x resolution."""
    left, top, side = box
    out = K.clone()
    out[0, 2], out[1, 2] = K[0, 2] - left, K[1, 2] - top
    out[:2] *= resolution / side
    return out


def _resample(image: Image.Image, box: tuple[int, int, int], resolution: int) -> np.ndarray:
    left, top, side = box
    return np.asarray(image.resize((resolution, resolution), Image.BILINEAR,
                                   box=(left, top, left + side, top + side)), dtype=np.float32)


# ---------------------------------------------------------------------- annotation files
def read_jgz(path: Path) -> list:
    """The JSON list in a gzipped CO3D annotation file."""
    try:
        with gzip.open(path, "rt", encoding="utf8") as file:
            return json.load(file)
    except (OSError, EOFError, json.JSONDecodeError) as error:
        raise UserError(f"{path} is not a gzipped JSON annotation file ({error})") from None


def _write_jgz(path: Path, data: list) -> None:
    tmp = temporary_sibling(path)
    with gzip.GzipFile(tmp, "wb", mtime=0) as file:  # mtime 0: the same data gives the same bytes
        file.write(json.dumps(data).encode("utf8"))
    os.replace(tmp, path)


def is_co3d_folder(path: str | Path) -> bool:
    """A CO3D root (``*/frame_annotations.jgz``) or one category folder (``frame_annotations.jgz``)."""
    path = Path(path)
    if not path.is_dir():
        return False
    return (path / FRAME_ANNOTATIONS).is_file() or any((p / FRAME_ANNOTATIONS).is_file() for p in path.iterdir())


def category_prompt(category: str) -> str:
    """'teddybear' -> 'a teddybear', 'apple' -> 'an apple'."""
    words = category.replace("_", " ").strip()
    return f"{'an' if words[:1].lower() in 'aeiou' else 'a'} {words}"


@dataclass
class _Sequence:
    category: str
    name: str
    posed: list[dict]   # every posed frame with a non-empty mask, in frame order (the normalisation uses all)
    frames: list[dict]  # the frames read: ``posed`` in the chosen set list split, subsampled to max_frames


def _evenly_spaced(n: int, m: int | None) -> list[int]:
    """m indices of n spread evenly from the first to the last (all when m is None or >= n)."""
    if m is None or m >= n:
        return list(range(n))
    if m == 1:
        return [0]
    return [round(i * (n - 1) / (m - 1)) for i in range(m)]


# ---------------------------------------------------------------------- the reader
class Co3dDataset(torch.utils.data.Dataset):
    """The sequences of a CO3Dv2 folder; each sample is the dict of ``MultiviewDataset`` (module docstring).

    root: a CO3D root (category folders) or one category folder. category: read only this one.
    resolution: side of the returned square frames. background: None for the photograph's own
    colour, a grey level to composite the masked object over. max_frames: frames per sequence,
    evenly spaced over the video (all when None). crop: square crop about the mask (else the
    centred square). normalize: the world-frame normalisation, None to keep CO3D's frame.
    subset / split: read only the frames of ``set_lists/set_lists_<subset>.json``'s ``split``.
    """

    def __init__(self, root: str | Path, *, category: str | None = None, resolution: int = DEFAULT_RESOLUTION,
                 background: float | None = None, max_frames: int | None = None, crop: bool = True,
                 crop_context: float = CROP_CONTEXT, crop_mask_threshold: float = CROP_MASK_THRESHOLD,
                 normalize: Co3dNormalization | None = DEFAULT_NORMALIZATION, subset: str | None = None,
                 split: str = "train"):
        self.root = Path(root)
        if resolution <= 0 or (max_frames is not None and max_frames <= 0) or crop_context < 0:
            raise UserError("resolution and max_frames must be positive and crop_context not negative")
        self.resolution, self.background, self.crop = int(resolution), background, crop
        self.crop_context, self.crop_mask_threshold, self.normalize = crop_context, crop_mask_threshold, normalize
        if (self.root / FRAME_ANNOTATIONS).is_file():  # one category folder; paths are relative to its parent
            self.data_root, folders = self.root.parent, [self.root]
            if category is not None and category != self.root.name:
                raise UserError(f"{self.root} is the CO3D category {self.root.name!r}, not {category!r}")
        elif is_co3d_folder(self.root):
            self.data_root = self.root
            folders = sorted(p for p in self.root.iterdir() if (p / FRAME_ANNOTATIONS).is_file())
            if category is not None:
                folders = [p for p in folders if p.name == category]
                if not folders:
                    known = ", ".join(p.name for p in sorted(self.root.iterdir()) if (p / FRAME_ANNOTATIONS).is_file())
                    raise UserError(f"{self.root} has no CO3D category {category!r}; it has: {known}")
        else:
            raise UserError(f"{self.root} is not a CO3D folder (no {FRAME_ANNOTATIONS} in it or its subfolders)")
        self.sequences = [s for folder in folders for s in self._read_category(folder, subset, split, max_frames)]
        if not self.sequences:
            raise UserError(f"{self.root} holds no CO3D sequence with posed frames"
                            + (f" in split {split!r} of subset {subset!r}" if subset else ""))
        self._world: dict[int, Tensor] = {}

    def _read_category(self, folder: Path, subset: str | None, split: str, max_frames: int | None) -> list[_Sequence]:
        categories = {}
        if (folder / SEQUENCE_ANNOTATIONS).is_file():
            categories = {s["sequence_name"]: s.get("category") or folder.name
                          for s in read_jgz(folder / SEQUENCE_ANNOTATIONS)}
        keep = None
        if subset is not None:
            lists = folder / SET_LISTS / f"set_lists_{subset}.json"
            if not lists.is_file():
                raise UserError(f"{folder.name} has no set list {subset!r} ({lists} is missing)")
            splits = json.loads(lists.read_text())
            if split not in splits:
                raise UserError(f"set list {lists} has no split {split!r}; it has: {', '.join(splits)}")
            keep = {entry[2] for entry in splits[split]}  # [sequence_name, frame_number, image path]
        by_sequence: dict[str, list[dict]] = {}
        for frame in read_jgz(folder / FRAME_ANNOTATIONS):
            mask = frame.get("mask")
            if frame.get("viewpoint") is None or (mask and mask.get("mass") is not None and mask["mass"] <= 1):
                continue
            by_sequence.setdefault(frame["sequence_name"], []).append(frame)
        out = []
        for name in sorted(by_sequence):
            posed = sorted(by_sequence[name], key=lambda f: f["frame_number"])
            chosen = [f for f in posed if keep is None or f["image"]["path"] in keep]
            if chosen:
                frames = [chosen[i] for i in _evenly_spaced(len(chosen), max_frames)]
                out.append(_Sequence(categories.get(name, folder.name), name, posed, frames))
        return out

    def __len__(self) -> int:
        return len(self.sequences)

    def sequence_name(self, index: int) -> str:
        return self.sequences[index].name

    def frames(self, index: int) -> list[Co3dFrame]:
        """The frames of sequence ``index``, each read on demand."""
        return [Co3dFrame(self, index, v) for v in range(len(self.sequences[index].frames))]

    # ------------------------------------------------------------------ cameras
    def world_transform(self, index: int) -> Tensor:
        """[4, 4] similarity from CO3D's frame of sequence ``index`` to the returned one (identity without
        ``normalize``)."""
        if index not in self._world:
            if self.normalize is None:
                self._world[index] = torch.eye(4, dtype=torch.float64)
            else:
                c2w, _ = _viewpoint_cameras(self.sequences[index].posed)
                self._world[index] = normalization_transform(c2w, self.normalize)
        return self._world[index]

    def _c2w(self, index: int) -> Tensor:
        c2w, _ = _viewpoint_cameras(self.sequences[index].frames)
        return apply_similarity(self.world_transform(index), c2w)

    def _mask(self, frame: dict) -> np.ndarray | None:
        """[H, W] foreground probability in [0, 1], or None without a mask."""
        mask = frame.get("mask")
        if not mask or not mask.get("path"):
            return None
        with Image.open(self._path(mask["path"])) as image:
            array = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
        self._check_size(array.shape, frame, mask["path"])
        return array

    def _box(self, frame: dict, mask: np.ndarray | None) -> tuple[int, int, int]:
        size = frame["image"]["size"]
        if not self.crop:
            return centre_square(size)
        return mask_crop_box(mask, size, threshold=self.crop_mask_threshold, context=self.crop_context)

    def _path(self, relative: str) -> Path:
        path = self.data_root / relative
        if not path.is_file():
            raise UserError(f"{path} is missing (named in the annotations of {self.root})")
        return path

    @staticmethod
    def _check_size(shape_hw: Sequence[int], frame: dict, name: str) -> None:
        if list(shape_hw[:2]) != list(frame["image"]["size"]):
            raise UserError(f"{name} is {shape_hw[1]}x{shape_hw[0]} pixels but its annotation says "
                            f"{frame['image']['size'][1]}x{frame['image']['size'][0]}")

    def cameras(self, index: int, resolution: int | None = None) -> dict[str, Tensor]:
        """c2w [V, 4, 4], K [V, 3, 3] and elevation / azimuth / distance / fovy [V] of sequence ``index``
        at ``resolution`` (the data set's by default); reads the masks (crop boxes), not the images."""
        frames = self.sequences[index].frames
        boxes = [self._box(f, self._mask(f) if self.crop else None) for f in frames]
        return self._camera_fields(index, boxes, resolution or self.resolution)

    def _camera_fields(self, index: int, boxes: list[tuple[int, int, int]], resolution: int) -> dict[str, Tensor]:
        _, K_full = _viewpoint_cameras(self.sequences[index].frames)
        K = torch.stack([cropped_intrinsics(k, box, resolution) for k, box in zip(K_full, boxes)])
        c2w = self._c2w(index)
        elevation, azimuth, distance = position_to_spherical(c2w[:, :3, 3])
        fovy = torch.rad2deg(2.0 * torch.atan(0.5 * resolution / K[:, 1, 1]))
        fields = {"c2w": c2w, "K": K, "elevation": elevation, "azimuth": azimuth, "distance": distance, "fovy": fovy}
        return {key: value.float() for key, value in fields.items()}

    # ------------------------------------------------------------------ images
    def read_frame(self, index: int, view: int, resolution: int | None = None) -> tuple[Tensor, tuple[int, int, int]]:
        """RGBA [R, R, 4] of one frame (colour per ``background``, soft mask as alpha) and its crop box."""
        frame = self.sequences[index].frames[view]
        resolution = resolution or self.resolution
        mask = self._mask(frame)
        box = self._box(frame, mask)
        with Image.open(self._path(frame["image"]["path"])) as image:
            self._check_size((image.height, image.width), frame, frame["image"]["path"])
            rgb = _resample(image.convert("RGB"), box, resolution) / 255.0
        if mask is None:
            alpha = np.ones((resolution, resolution), dtype=np.float32)
        else:
            alpha = _resample(Image.fromarray(mask), box, resolution)
        rgba = torch.from_numpy(np.concatenate([rgb, alpha.clip(0.0, 1.0)[..., None]], axis=-1))
        if self.background is not None:
            rgba = torch.cat([composite(rgba, float(self.background)), rgba[..., 3:]], dim=-1)
        return rgba, box

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(index)
        frames = [self.read_frame(index, v) for v in range(len(self.sequences[index].frames))]
        fields = self._camera_fields(index, [box for _, box in frames], self.resolution)
        sequence = self.sequences[index]
        return {"images": torch.stack([rgba for rgba, _ in frames]), **fields,
                "prompt": category_prompt(sequence.category), "name": sequence.name, "index": index}


@dataclass(frozen=True, eq=False)
class Co3dFrame:
    """One frame of a ``Co3dDataset`` sequence, read on demand (a frame source where others hold files)."""

    dataset: Co3dDataset
    index: int
    view: int

    @property
    def name(self) -> str:
        """The image file's name, e.g. ``frame000001.jpg``."""
        return Path(self.dataset.sequences[self.index].frames[self.view]["image"]["path"]).name

    def rgba(self, resolution: int | None = None) -> Tensor:
        """[R, R, 4] as ``Co3dDataset.read_frame`` gives it."""
        return self.dataset.read_frame(self.index, self.view, resolution)[0]


# ---------------------------------------------------------------------- one opener for every command
def open_multiview_dataset(path: str | Path, background: float | None = None, **options):
    """A ``MultiviewDataset`` for a distill3d multi-view folder, a ``Co3dDataset`` (with ``options``) for
    a CO3D folder; a one-line ``UserError`` for anything else. ``background=None``: straight colour."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist")
    if is_co3d_folder(path):
        return Co3dDataset(path, background=background, **options)
    if (path / META_FILE).is_file():
        if options:
            raise UserError(f"{', '.join(sorted(options))} only apply to CO3D folders, and {path} is a distill3d data set")
        return MultiviewDataset(path, background=background)
    raise UserError(f"{path} is neither a distill3d multi-view data set ({META_FILE}) nor a CO3D folder "
                    f"(<category>/{FRAME_ANNOTATIONS})")


# ---------------------------------------------------------------------- the writer
def _check_name(kind: str, name: str) -> None:
    if not name or name in (".", "..") or any(c in name for c in "/\\"):
        raise UserError(f"{kind} name {name!r} cannot be a folder name")


def write_co3d_folder(root: str | Path, category: str, sequences: Sequence[tuple[str, Tensor, Cameras]], *,
                      background: float = 1.0, jpeg_quality: int = 95) -> Path:
    """Write sequences (name, straight RGBA [V, H, W, 4] in [0, 1], their ``Cameras``) as CO3Dv2.

    Frames become ``<category>/<name>/images/frame%06d.jpg`` (colour over ``background``; a CO3D
    photograph has no alpha) and ``masks/frame%06d.png`` (alpha * 255), numbered from 1 while
    ``frame_number`` counts from 0; cameras become ndc_isotropic viewpoints. Sequences already in the
    category's annotation files under the same names are replaced, others kept. Returns the category
    folder.
    """
    _check_name("category", category)
    folder = Path(root) / category
    folder.mkdir(parents=True, exist_ok=True)
    new_frames, new_sequences = [], []
    for name, rgba, cameras in sequences:
        _check_name("sequence", name)
        if rgba.ndim != 4 or rgba.shape[-1] != 4 or tuple(rgba.shape[:3]) != (len(cameras), cameras.height,
                                                                              cameras.width):
            raise UserError(f"sequence {name!r}: RGBA {tuple(rgba.shape)} does not match {len(cameras)} cameras "
                            f"of {cameras.width}x{cameras.height}")
        V, H, W = rgba.shape[:3]
        sequence_folder = folder / name
        if sequence_folder.exists():
            shutil.rmtree(sequence_folder)
        (sequence_folder / "images").mkdir(parents=True)
        (sequence_folder / "masks").mkdir()
        sizes = torch.tensor([[H, W]] * V)
        R, T, focal, principal = pytorch3d_from_opencv(cameras.c2w.detach().cpu(), cameras.K.detach().cpu(), sizes)
        rgba = rgba.detach().cpu().float().clamp(0.0, 1.0)
        colour = (composite(rgba, background) * 255.0).round().to(torch.uint8).numpy()
        alpha = (rgba[..., 3] * 255.0).round().to(torch.uint8).numpy()
        for v in range(V):
            image_path = f"{category}/{name}/images/frame{v + 1:06d}.jpg"
            mask_path = f"{category}/{name}/masks/frame{v + 1:06d}.png"
            Image.fromarray(colour[v]).save(Path(root) / image_path, format="JPEG", quality=jpeg_quality)
            Image.fromarray(alpha[v]).save(Path(root) / mask_path, format="PNG")
            new_frames.append({
                "sequence_name": name, "frame_number": v, "frame_timestamp": v / FRAME_RATE,
                "image": {"path": image_path, "size": [H, W]},
                "depth": None,
                "mask": {"path": mask_path, "mass": float(alpha[v].astype(np.float64).sum() / 255.0)},
                "viewpoint": {"R": R[v].tolist(), "T": T[v].tolist(), "focal_length": focal[v].tolist(),
                              "principal_point": principal[v].tolist(), "intrinsics_format": "ndc_isotropic"},
                "meta": None,
            })
        new_sequences.append({"sequence_name": name, "category": category, "video": None, "point_cloud": None,
                              "viewpoint_quality_score": None})
    names = {s["sequence_name"] for s in new_sequences}
    old_frames = read_jgz(folder / FRAME_ANNOTATIONS) if (folder / FRAME_ANNOTATIONS).is_file() else []
    old_sequences = read_jgz(folder / SEQUENCE_ANNOTATIONS) if (folder / SEQUENCE_ANNOTATIONS).is_file() else []
    _write_jgz(folder / FRAME_ANNOTATIONS, [f for f in old_frames if f["sequence_name"] not in names] + new_frames)
    _write_jgz(folder / SEQUENCE_ANNOTATIONS,
               [s for s in old_sequences if s["sequence_name"] not in names] + new_sequences)
    return folder
