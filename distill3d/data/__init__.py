"""Data sets: multi-view sequences, text-image pairs and multi-view groups, written from the
world or a folder of meshes in one sharded, resumable on-disk layout (docs/data-layout.md), and
read back as torch Datasets; CO3Dv2 folders read (and written) as multi-view data sets.
"""

from distill3d.data.co3d import (
    Co3dDataset,
    Co3dNormalization,
    open_multiview_dataset,
    write_co3d_folder,
)
from distill3d.data.layout import (
    read_cameras,
    read_rgba_png,
    sample_cameras,
    write_cameras,
)
from distill3d.data.meshes import Mesh, MeshError, load_mesh, render_mesh
from distill3d.data.multiview import (
    MultiviewDataset,
    MultiviewKind,
    OrbitViews,
    SphereViews,
)
from distill3d.data.multiview_groups import (
    GroupViews,
    MultiviewGroupsDataset,
    MultiviewGroupsKind,
)
from distill3d.data.shards import write_dataset
from distill3d.data.sources import MeshSource, RenderSource
from distill3d.data.text_image import TextImageDataset, TextImageKind
from distill3d.data.world_datasets import WorldSource, write_world_dataset

__all__ = [
    "Co3dDataset", "Co3dNormalization", "GroupViews", "Mesh", "MeshError", "MeshSource", "MultiviewDataset", "MultiviewGroupsDataset",
    "MultiviewGroupsKind", "MultiviewKind", "OrbitViews", "RenderSource", "SphereViews", "TextImageDataset",
    "TextImageKind", "WorldSource", "load_mesh", "open_multiview_dataset", "read_cameras", "read_rgba_png", "render_mesh",
    "sample_cameras", "write_cameras", "write_co3d_folder", "write_dataset", "write_world_dataset",
]
