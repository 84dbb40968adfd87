"""Exports: 3D Gaussians as standard 3DGS PLY files (``ply``), meshes as GLB/OBJ (``mesh``),
turntable videos as MP4/GIF (``video``), and a whole ``Scene`` (``scene``)."""

from distill3d.export.mesh import write_mesh
from distill3d.export.ply import read_gaussians_ply, write_gaussians_ply
from distill3d.export.video import render_frames, turntable_cameras, write_video

__all__ = ["read_gaussians_ply", "render_frames", "turntable_cameras", "write_gaussians_ply", "write_mesh",
           "write_video"]
