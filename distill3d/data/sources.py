"""Sources: things that can render items. The data set writers take any of them.

A source has ``items`` (what it renders, e.g. world objects or mesh files) with unique
``names``, prompts for them, and ``render(item, cameras)``. The world source is
``distill3d.data.world_datasets.WorldSource``; ``MeshSource`` renders a folder of mesh files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import torch
from tqdm.auto import tqdm

from distill3d.cameras import Cameras
from distill3d.data.meshes import MESH_SUFFIXES, UP_AXES, Mesh, MeshError, find_mesh_files, load_mesh, render_mesh
from distill3d.errors import UserError
from distill3d.render_output import RenderOutput
from distill3d.world.views import view_bucket, view_suffix


class RenderSource(Protocol):
    """What the data set writers need from a source."""

    items: Sequence[Any]
    names: Sequence[str]
    split: str | None

    def describe(self) -> dict:
        """JSON-ready description, stored as ``meta.json["source"]``."""

    def prompt(self, item: Any) -> str:
        """The item's prompt (no view suffix)."""

    def view_prompt(self, item: Any, azimuth_deg: float, elevation_deg: float) -> str:
        """The item's prompt seen from a view ("..., front view")."""

    def record(self, item: Any) -> dict:
        """JSON-ready description of one item, stored with each data set item."""

    def render(self, item: Any, cameras: Cameras) -> RenderOutput:
        """Render one item from B cameras, composited over **black** (premultiplied colour)."""


@dataclass(frozen=True)
class SkippedFile:
    file: str
    reason: str


MESH_CACHE_FACES = 2_000_000
"""Meshes checked at start-up stay in memory while their faces add up to less than this."""


class MeshSource:
    """Every mesh file under a folder; files that cannot be used are skipped with a reason.

    Each file is loaded once at start-up to check it (``skipped`` lists the failures). The
    prompt of a mesh is its file name without suffix, ``_`` and ``-`` read as spaces
    ("red_chair-2.glb" -> "red chair 2"); view prompts follow the world's rule.
    """

    split = None

    def __init__(self, root: Path, *, up: str = "auto", supersample: int = 2, progress: bool = True,
                 device: str | torch.device = "cpu"):
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserError(f"{self.root} is not a folder; give the folder that holds the mesh files")
        if up not in UP_AXES:
            raise UserError(f"unknown up axis {up!r}; valid: {', '.join(UP_AXES)}")
        files = find_mesh_files(self.root)
        if not files:
            raise UserError(f"no mesh files under {self.root} (looked for {', '.join(MESH_SUFFIXES)})")
        self.up, self.supersample, self.device = up, int(supersample), torch.device(device)
        self.items: list[Path] = []
        self.skipped: list[SkippedFile] = []
        self._cache: dict[Path, Mesh] = {}
        cached_faces = 0
        for path in tqdm(files, desc="checking meshes", unit="file", disable=None if progress else True):
            try:
                mesh = load_mesh(path, up=up)
            except Exception as err:  # any failure of a user's file: report it and go on
                reason = str(err) if isinstance(err, MeshError) else f"{type(err).__name__}: {err}"
                self.skipped.append(SkippedFile(self._name(path), reason))
                continue
            self.items.append(path)
            if cached_faces + mesh.num_faces < MESH_CACHE_FACES:
                self._cache[path] = mesh
                cached_faces += mesh.num_faces
        self.names = [self._name(p) for p in self.items]
        self._last: tuple[Path, Mesh] | None = None

    def _name(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def describe(self) -> dict:
        return {"type": "meshes", "root": str(self.root.resolve()), "up": self.up,
                "supersample": self.supersample, "meshes": len(self.items)}

    def prompt(self, item: Path) -> str:
        return " ".join(item.stem.replace("_", " ").replace("-", " ").split())

    def view_prompt(self, item: Path, azimuth_deg: float, elevation_deg: float) -> str:
        return self.prompt(item) + view_suffix(view_bucket(float(azimuth_deg), float(elevation_deg)))

    def record(self, item: Path) -> dict:
        return {"file": self._name(item)}

    def mesh(self, item: Path) -> Mesh:
        """The loaded, normalised mesh of a file (cached)."""
        if item in self._cache:
            return self._cache[item]
        if self._last is None or self._last[0] != item:
            self._last = (item, load_mesh(item, up=self.up))
        return self._last[1]

    def render(self, item: Path, cameras: Cameras) -> RenderOutput:
        return render_mesh(self.mesh(item), cameras.to(self.device), supersample=self.supersample, background=0.0)

    def report(self) -> dict:
        """What was found, rendered and skipped (``OUT/report.json``)."""
        return {"root": str(self.root.resolve()), "found": len(self.items) + len(self.skipped),
                "rendered": list(self.names),
                "skipped": [{"file": s.file, "reason": s.reason} for s in self.skipped]}
