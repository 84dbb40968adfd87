"""DD3G: image -> 3D Gaussians by a feed-forward student distilled from a multi-view teacher.

The student PEPD (Sec. III-B) is ``distill3d.methods.dd3g.student.PEPDStudent``, with its parts one
file each: ``noise_cameras`` (NC), ``image_encoder`` (image tokens), ``spatial_transformer_3d`` and
``pattern_extraction`` (p1), ``progressive_decoding`` and ``gaussian_heads`` (p2). Import them from
their modules: this file imports nothing, so that each part of the method loads on its own.
"""
