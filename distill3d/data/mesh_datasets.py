"""Data sets rendered from a folder of mesh files (glTF/GLB, OBJ, PLY, STL, OFF).

Every usable mesh gives ``views`` items in a row (a multiview kind: one sequence of ``views``
frames instead); files that cannot be used are listed with the reason in ``OUT/report.json``
and skipped. The cameras and layout are those of the world's data sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from distill3d.data.kinds import dataset_kind
from distill3d.data.layout import REPORT_FILE, dumps_json
from distill3d.data.multiview import MultiviewKind
from distill3d.data.shards import DEFAULT_SHARD_SIZE, existing_output, write_dataset, write_text_atomic
from distill3d.data.sources import MeshSource
from distill3d.errors import UserError

DEFAULT_VIEWS = {"multiview": 32, "text-image": 8, "multiview-groups": 4}
"""Frames per sequence (multiview), or images / groups per mesh."""


@dataclass
class MeshDatasetResult:
    out_dir: Path
    rendered: int
    skipped: list[dict]


def write_mesh_dataset(mesh_dir: Path, out_dir: Path, *, kind: str = "multiview", views: int | None = None,
                       targets: int = 4, resolution: int = 64, seed: int = 0, resume: bool = False,
                       shard_size: int = DEFAULT_SHARD_SIZE, up: str = "auto", supersample: int = 2,
                       progress: bool = True) -> MeshDatasetResult:
    """Render every mesh under ``mesh_dir`` into a data set of ``kind`` in ``out_dir``.

    ``views``: frames per mesh (multiview) or items per mesh (text-image, multiview-groups);
    ``DEFAULT_VIEWS`` when None. Writes ``OUT/report.json`` (rendered and skipped files).
    """
    views = DEFAULT_VIEWS.get(kind, 1) if views is None else views
    writer = dataset_kind(kind, views=views, targets=targets)
    existing_output(Path(out_dir), resume=resume)  # fail before the scan, which reads every file
    source = MeshSource(Path(mesh_dir), up=up, supersample=supersample, progress=progress)
    report = source.report()
    if not source.items:
        raise UserError(f"none of the {report['found']} mesh files under {mesh_dir} could be used: "
                        + "; ".join(f"{s['file']}: {s['reason']}" for s in report["skipped"]))
    count = len(source.items) * (1 if isinstance(writer, MultiviewKind) else views)
    out_dir = Path(out_dir)
    write_dataset(writer, source, out_dir, count, resolution=resolution, seed=seed, shard_size=shard_size,
                  resume=resume, progress=progress)
    write_text_atomic(out_dir / REPORT_FILE, dumps_json(report))
    return MeshDatasetResult(out_dir, len(source.items), report["skipped"])
