"""3D scenes: density fields (voxel grid, hash-grid NeRF), 3D Gaussians and mesh extraction.

Every field follows ``distill3d.scene.field.DensityField``: ``query(points [N, 3]) ->
(density [N], rgb [N, 3])`` in world coordinates and an ``aabb`` [2, 3] outside which it is
empty. ``distill3d.render.volume.render_volume`` renders any of them.
"""

from distill3d.scene.field import DensityField, cube_aabb, inside_aabb, normalize_to_aabb
from distill3d.scene.gaussians import Gaussians
from distill3d.scene.hash_grid import HashEncoding, HashGridConfig, HashGridNeRF
from distill3d.scene.mesh_extraction import DEFAULT_DENSITY_THRESHOLD, extract_mesh
from distill3d.scene.voxel_grid import (VoxelDecoder, VoxelGridConfig, VoxelRadianceField,
                                        trilinear_sample, upsample_features)

__all__ = [
    "DensityField", "Gaussians", "cube_aabb", "inside_aabb", "normalize_to_aabb",
    "HashEncoding", "HashGridConfig", "HashGridNeRF",
    "DEFAULT_DENSITY_THRESHOLD", "extract_mesh",
    "VoxelDecoder", "VoxelGridConfig", "VoxelRadianceField", "trilinear_sample", "upsample_features",
]
