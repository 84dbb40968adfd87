"""Where DD3G's input images II come from:

- the world's training objects, rendered exactly at the drawn input camera;
- a folder of images (a user's RGBA images), which come with no camera, so one is assumed for them:
  azimuth as drawn, ``ASSUMED_ELEVATION``, ``ASSUMED_DISTANCE`` and ``ASSUMED_FOVY`` (the middle of the
  world's ranges). Inference assumes the same camera;
- a multi-view data set (``distill3d data render-meshes --kind multiview`` of real meshes, or ``world
  dataset multiview``) or a CO3D folder (``distill3d.data.co3d``: frames cropped about their masks, in
  the normalised world frame): every frame whose elevation lies in the teacher's input range, with its
  own elevation, distance and field of view.

The teacher and the student see only cameras relative to the input's, so only the input's elevation and
framing matter, never its azimuth.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from distill3d.data.co3d import (
    Co3dDataset,
    Co3dFrame,
    is_co3d_folder,
    open_multiview_dataset,
)
from distill3d.data.layout import (
    CAMERAS_FILE,
    ITEM_FILE,
    META_FILE,
    read_cameras,
    read_json,
)
from distill3d.data.multiview import MultiviewDataset, frame_name
from distill3d.errors import UserError
from distill3d.world.reference_render import render_reference
from distill3d.world.split import train_objects
from distill3d.world_models.multiview_cameras import MultiViewGroupCameras

ASSUMED_ELEVATION = 15.0  # degrees; the world's input elevations are -10 to 45
ASSUMED_DISTANCE = 2.6    # world units; the world's distances are 2.2-3.0
ASSUMED_FOVY = 40.0       # degrees; the world's are 35-45
IMAGE_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA")
"""PIL modes an input image may have (grey, palette, RGB, with or without alpha)."""
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def read_input_image(path: str | Path | Co3dFrame, size: int) -> Tensor:
    """An image file (or a CO3D frame) -> [size, size, 3] in [0, 1] over white (alpha composited; padded
    square with white)."""
    if isinstance(path, Co3dFrame):  # already square: cropped about its mask, the mask as alpha
        rgba = path.rgba(size)
        return rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} is not a file")
    if path.stat().st_size == 0:
        raise UserError(f"{path} is empty")
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode not in IMAGE_MODES:
                raise UserError(f"{path} is a {image.mode!r} image; give an 8-bit grey, palette, RGB or RGBA image")
            rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as error:
        raise UserError(f"{path} is not an image this command can read ({error})") from None
    rgb = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])  # over white, as the teacher saw its inputs
    h, w = rgb.shape[:2]
    side = max(h, w)
    square = np.ones((side, side, 3), dtype=np.float32)
    square[(side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = rgb
    resized = Image.fromarray((square * 255 + 0.5).astype(np.uint8)).resize((size, size), Image.LANCZOS)
    return torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0)


def image_files(source: str | Path) -> list[Path]:
    """One image file, or the image files of a folder (sorted); UserError when there is none."""
    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UserError(f"{source} holds no image ({', '.join(IMAGE_SUFFIXES)})")
        return files
    if not source.exists():
        raise UserError(f"{source} does not exist")
    return [source]


def assume_input_camera(params: Tensor, elevation: float | Tensor = ASSUMED_ELEVATION,
                        distance: float | Tensor = ASSUMED_DISTANCE, fovy: float | Tensor = ASSUMED_FOVY) -> Tensor:
    """Camera parameters [B, 1 + K, 4] (elevation, azimuth, distance, fovy) with the input camera's elevation
    and every camera's distance and fovy replaced by the given ones, numbers or [B] (the targets share the
    input's framing)."""
    out = params.clone()

    def column(value: float | Tensor) -> Tensor:  # [1, 1] or [B, 1]
        return torch.as_tensor(value, dtype=out.dtype).reshape(-1, 1)

    out[:, 0, 0] = column(elevation)[:, 0]
    out[..., 2], out[..., 3] = column(distance), column(fovy)
    return out


def multiview_frames(root: Path, elevation_range: tuple[float, float]
                     ) -> tuple[list[Path | Co3dFrame], list[str], Tensor]:
    """Frames of a multi-view data set or CO3D folder whose elevation is in ``elevation_range``: files (or
    ``Co3dFrame``s, which ``read_input_image`` reads too), names ("<item name>/<frame>") and their cameras
    [n, 3] (elevation, distance, fovy)."""
    dataset = open_multiview_dataset(root)
    files, names, cameras = [], [], []
    lo, hi = elevation_range
    for index in range(len(dataset)):
        if isinstance(dataset, Co3dDataset):
            name, params, frames = dataset.sequence_name(index), dataset.cameras(index), dataset.frames(index)
        else:
            folder = dataset.item_folder(index)
            name = read_json(folder / ITEM_FILE)["name"]
            _, params = read_cameras(folder / CAMERAS_FILE)
            frames = [folder / "frames" / frame_name(v) for v in range(len(params["elevation"]))]
        for v, frame in enumerate(frames):
            if lo <= float(params["elevation"][v]) <= hi:
                files.append(frame)
                names.append(f"{name}/{frame.name}")
                cameras.append([float(params[k][v]) for k in ("elevation", "distance", "fovy")])
    if not files:
        raise UserError(f"no frame of {root} has an elevation in [{lo:g}, {hi:g}] degrees, the teacher's input range")
    return files, names, torch.tensor(cameras)


def is_multiview_dataset(folder: Path) -> bool:
    """A distill3d multi-view data set or a CO3D folder."""
    meta = folder / META_FILE
    return is_co3d_folder(folder) or (meta.is_file() and read_json(meta).get("kind") == MultiviewDataset.kind)


class InputImages:
    """Named sources of II: ``names`` (stored in a collection's meta), ``images(sources, inputs)`` and, for
    a folder, ``input_cameras(sources)`` (module docstring)."""

    def __init__(self, folder: str | Path | None, resolution: int,
                 elevation_range: tuple[float, float] = MultiViewGroupCameras().input_elevation_range):
        self.folder, self.resolution = (Path(folder) if folder else None), resolution
        self.frame_cameras: Tensor | None = None
        if self.folder is None:
            self.objects = train_objects()  # held-out objects are never collected
            self.names = [o.prompt for o in self.objects]
        elif is_multiview_dataset(self.folder):
            self.files, self.names, self.frame_cameras = multiview_frames(self.folder, elevation_range)
        else:
            self.files = image_files(self.folder)
            self.names = [p.name for p in self.files]

    @property
    def assumes_cameras(self) -> bool:
        """True for a folder: the input camera's elevation and framing come from ``input_cameras``."""
        return self.folder is not None

    def input_cameras(self, sources: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Elevation, distance and fovy [n] of the input cameras of source indices [n] of a folder: a
        multi-view data set's own, the assumed camera for plain images."""
        if self.frame_cameras is not None:
            cams = self.frame_cameras[sources.long()]
            return cams[:, 0], cams[:, 1], cams[:, 2]
        n = sources.shape[0]
        return (torch.full((n,), ASSUMED_ELEVATION), torch.full((n,), ASSUMED_DISTANCE),
                torch.full((n,), ASSUMED_FOVY))

    def images(self, sources: Tensor, inputs) -> Tensor:
        """II [n, R, R, 3] in [0, 1] of source indices [n] seen from input cameras [n] (world objects only)."""
        if self.folder is None:
            return render_reference([self.objects[int(s)] for s in sources], inputs).rgb
        return torch.stack([read_input_image(self.files[int(s)], self.resolution) for s in sources]).to(inputs.device)


__all__ = [
    "ASSUMED_DISTANCE",
    "ASSUMED_ELEVATION",
    "ASSUMED_FOVY",
    "InputImages",
    "assume_input_camera",
    "image_files",
    "multiview_frames",
    "read_input_image",
]
