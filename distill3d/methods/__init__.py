"""distill3d.methods."""
