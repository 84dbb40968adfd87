"""Renderers: 3D scene + cameras -> images (``RenderOutput``)."""

from distill3d.render.output import RenderOutput

__all__ = ["RenderOutput"]
