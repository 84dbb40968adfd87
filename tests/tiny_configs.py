"""CPU-sized configs of the per-scene methods and tiny model parts, shared by the tests."""

import json

from distill3d.camera_sampling import OrbitCameraConfig
from distill3d.export.scene import ExportConfig
from distill3d.methods.consistent3d import Consistent3DConfig
from distill3d.scene.factory import GaussianInitConfig, SceneConfig
from distill3d.scene.hash_grid import HashGridConfig
from distill3d.training.scene_loop import LoopConfig


def tiny_text_to_3d(representation: str = "nerf", *, turntable_frames: int = 2, **fields) -> Consistent3DConfig:
    """4 CDS steps of 4 cameras at 16x16, 8 samples per ray, a 2-level hash grid or 64 Gaussians; ``fields``
    replace top-level fields (steps, guidance, cds, ...)."""
    values = dict(steps=4, device="cpu", guidance="cds", cameras=OrbitCameraConfig(cameras_per_step=4, resolution=16),
                  scene=SceneConfig(representation=representation, num_samples=8,
                                    nerf=HashGridConfig(num_levels=2, log2_table_size=8, max_resolution=32),
                                    gaussians=GaussianInitConfig(count=64)),
                  loop=LoopConfig(checkpoint_every=2),
                  export=ExportConfig(turntable_frames=turntable_frames, turntable_resolution=16, mesh_resolution=16,
                                      mesh_threshold=5.0))
    values.update(fields)
    return Consistent3DConfig(**values)


def write_tiny_tokenizer(folder) -> None:
    """A character-level CLIP BPE vocabulary (vocab.json + merges.txt): enough to tokenise lowercase prompts."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for c in "abcdefghijklmnopqrstuvwxyz":
            vocab[c + suffix] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
