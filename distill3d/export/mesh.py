"""Meshes as GLB or OBJ files with vertex colours, through trimesh."""

from __future__ import annotations

from pathlib import Path

import trimesh

from distill3d.atomic_files import output_with_temporary

MESH_FORMATS = ("glb", "obj")


def write_mesh(path: str | Path, mesh: trimesh.Trimesh) -> Path:
    """Write a vertex-coloured mesh as .glb or .obj (by the file's extension)."""
    path, fmt, tmp = output_with_temporary(path, MESH_FORMATS, "mesh")
    mesh.export(str(tmp), file_type=fmt)
    tmp.replace(path)
    return path
