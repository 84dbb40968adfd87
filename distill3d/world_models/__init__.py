"""The world's own trained networks: the text-to-image and multi-view teachers, the classifier, their
render pools, training recipes and benchmarks. The shipped weights are in ``distill3d/weights/``."""
