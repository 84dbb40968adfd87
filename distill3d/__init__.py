"""distill3d: turn diffusion models into 3D assets.

Start with ``distill3d.cameras`` (the world frame and camera convention) and
``distill3d.world`` (the embedded procedural object universe and its reference renderer).
"""

__version__ = "0.1.0"
