"""distill3d.guidance."""
