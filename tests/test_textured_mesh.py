"""Textured export: xatlas UVs, a baked texture, GLB and OBJ that read back with their colours."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from distill3d.errors import UserError
from distill3d.export.textured_mesh import (
    dilate,
    rasterize_uv,
    textured_mesh,
    write_textured_mesh,
)
from distill3d.scene.mesh_extraction import extract_mesh

RED, BLUE = (255, 0, 0), (0, 0, 255)


def _red_front_blue_back(points: torch.Tensor) -> torch.Tensor:
    return torch.where(points[:, :1] > 0, torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0]))


@pytest.fixture(scope="module")
def sphere() -> trimesh.Trimesh:
    mesh = extract_mesh(lambda p: p.norm(dim=-1) - 0.6, resolution=20)
    verts = torch.tensor(mesh.vertices, dtype=torch.float32)
    return textured_mesh(verts, torch.tensor(mesh.faces), _red_front_blue_back, texture_size=128)


def _texture(mesh: trimesh.Trimesh):
    material = mesh.visual.material
    image = getattr(material, "baseColorTexture", None)
    return image if image is not None else material.image


def _colour_at(mesh: trimesh.Trimesh, vertex: int) -> tuple[int, ...]:
    rgba = trimesh.visual.color.uv_to_color(mesh.visual.uv[[vertex]], _texture(mesh))
    return tuple(int(c) for c in rgba[0, :3])


@pytest.mark.parametrize("fmt", ["glb", "obj"])
def test_written_mesh_reads_back_with_uvs_and_texture(sphere, tmp_path, fmt):
    path = write_textured_mesh(tmp_path / f"ball.{fmt}", sphere)
    if fmt == "obj":
        assert {p.name for p in tmp_path.iterdir()} == {"ball.obj", "ball.mtl", "ball.png"}
        assert "map_Kd ball.png" in (tmp_path / "ball.mtl").read_text()
    else:
        assert [p.name for p in tmp_path.iterdir()] == ["ball.glb"]
    back = trimesh.load(path, force="mesh", process=False)
    assert isinstance(back.visual, trimesh.visual.TextureVisuals)
    assert back.visual.uv.shape == (len(back.vertices), 2)
    assert _texture(back).size == (128, 128)
    assert back.is_watertight or len(back.faces) == len(sphere.faces)
    assert _colour_at(back, int(np.argmax(back.vertices[:, 0]))) == RED
    assert _colour_at(back, int(np.argmin(back.vertices[:, 0]))) == BLUE
    # every vertex away from the x = 0 seam samples its own side's colour
    far = np.abs(back.vertices[:, 0]) > 0.1
    colours = trimesh.visual.color.uv_to_color(back.visual.uv[far], _texture(back))[:, :3]
    expected = np.where(back.vertices[far, :1] > 0, RED, BLUE)
    assert (np.abs(colours.astype(int) - expected).max(axis=1) < 40).mean() > 0.99


def test_uv_rasterisation_and_dilation():
    uv = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    face_id, bary = rasterize_uv(uv, torch.tensor([[0, 1, 2]]), 8)
    assert int((face_id == 0).sum()) == 36            # texel centres below the diagonal, edge included
    assert torch.allclose(bary[face_id == 0].sum(-1), torch.ones(36))
    assert face_id[7, 0] == 0 and face_id[0, 7] == -1  # row 0 is the top (v = 1)
    texture = torch.zeros(5, 5, 1)
    texture[2, 2] = 1.0
    mask = torch.zeros(5, 5, dtype=torch.bool)
    mask[2, 2] = True
    grown, grown_mask = dilate(texture, mask, 1)
    assert int(grown_mask.sum()) == 9 and torch.all(grown[1:4, 1:4] == 1.0)


def test_unknown_format_is_a_user_error(sphere, tmp_path):
    with pytest.raises(UserError):
        write_textured_mesh(tmp_path / "ball.ply", sphere)
