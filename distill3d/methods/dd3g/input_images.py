"""Where DD3G's input images II come from: the world's training objects, rendered exactly at the drawn
input camera, or a folder of images (a user's RGBA images, ``data render-meshes`` output) that come with
no camera, so one is assumed for them: azimuth as drawn, ``ASSUMED_ELEVATION``, ``ASSUMED_DISTANCE`` and
``ASSUMED_FOVY`` (the middle of the world's ranges; the teacher and the student see only cameras relative
to the input's, so only the elevation and the framing matter). Inference assumes the same camera.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from distill3d.errors import UserError
from distill3d.world.reference_render import render_reference
from distill3d.world.split import train_objects

ASSUMED_ELEVATION = 15.0  # degrees; the world's input elevations are -10 to 45
ASSUMED_DISTANCE = 2.6    # world units; the world's distances are 2.2-3.0
ASSUMED_FOVY = 40.0       # degrees; the world's are 35-45
IMAGE_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA")
"""PIL modes an input image may have (grey, palette, RGB, with or without alpha)."""
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def read_input_image(path: str | Path, size: int) -> Tensor:
    """An image file -> [size, size, 3] in [0, 1] over white (alpha composited; padded square with white)."""
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


def assume_input_camera(params: Tensor, elevation: float = ASSUMED_ELEVATION, distance: float = ASSUMED_DISTANCE,
                        fovy: float = ASSUMED_FOVY) -> Tensor:
    """Camera parameters [B, 1 + K, 4] (elevation, azimuth, distance, fovy) with the input camera's elevation
    and every camera's distance and fovy replaced by the assumed ones (the targets share the input's framing)."""
    out = params.clone()
    out[:, 0, 0] = elevation
    out[..., 2], out[..., 3] = distance, fovy
    return out


class InputImages:
    """Named sources of II: ``names`` (stored in a collection's meta) and ``images(sources, inputs)``."""

    def __init__(self, folder: str | Path | None, resolution: int):
        self.folder, self.resolution = (Path(folder) if folder else None), resolution
        if self.folder is None:
            self.objects = train_objects()  # held-out objects are never collected
            self.names = [o.prompt for o in self.objects]
        else:
            self.files = image_files(self.folder)
            self.names = [p.name for p in self.files]

    @property
    def assumes_cameras(self) -> bool:
        """True for a folder of images: their input camera is assumed, not known."""
        return self.folder is not None

    def images(self, sources: Tensor, inputs) -> Tensor:
        """II [n, R, R, 3] in [0, 1] of source indices [n] seen from input cameras [n] (world objects only)."""
        if self.folder is None:
            return render_reference([self.objects[int(s)] for s in sources], inputs).rgb
        return torch.stack([read_input_image(self.files[int(s)], self.resolution) for s in sources]).to(inputs.device)


__all__ = ["InputImages", "read_input_image", "image_files", "assume_input_camera", "ASSUMED_ELEVATION",
           "ASSUMED_DISTANCE", "ASSUMED_FOVY"]
