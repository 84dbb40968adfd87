import argparse
import json
import math

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from distill3d.cameras import orbit_cameras
from distill3d.cli import data as data_cli
from distill3d.data import MultiviewDataset, TextImageDataset
from distill3d.data.meshes import DEFAULT_ALBEDO, UNIT_RADIUS, load_mesh, render_mesh
from distill3d.data.sources import MeshSource
from distill3d.world.reference_render import AMBIENT, LIGHT_DIRECTION

GOOD = ["box.obj", "nested/ico.glb", "quad.glb", "ico.ply", "ico.stl", "ico.off"]
BROKEN = ["truncated.glb", "bad_index.obj", "empty.obj", "text.stl", "points.ply", "no_buffer.gltf"]


def _quad_with_texture() -> trimesh.Trimesh:
    """A unit quad in z = 0 whose 2 x 2 texture is red / green over blue / yellow."""
    vertices = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], float)
    texels = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 255, 0]]], np.uint8)
    material = trimesh.visual.material.PBRMaterial(baseColorTexture=Image.fromarray(texels),
                                                   baseColorFactor=[255, 255, 255, 255])
    visual = trimesh.visual.TextureVisuals(uv=vertices[:, :2], material=material)
    return trimesh.Trimesh(vertices, [[0, 1, 2], [0, 2, 3]], visual=visual, process=False)


@pytest.fixture(scope="module")
def mesh_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("meshes")
    (root / "nested").mkdir()
    trimesh.creation.box(extents=(1, 1, 1)).export(root / "box.obj")
    ico = trimesh.creation.icosphere(subdivisions=2)
    ico.visual.vertex_colors = np.tile([230, 20, 20, 255], (len(ico.vertices), 1))
    ico.export(root / "nested" / "ico.glb")
    _quad_with_texture().export(root / "quad.glb")
    for suffix in ("ply", "stl", "off"):
        trimesh.creation.icosphere(subdivisions=1).export(root / f"ico.{suffix}")
    glb = (root / "nested" / "ico.glb").read_bytes()
    (root / "truncated.glb").write_bytes(glb[: len(glb) // 2])
    (root / "bad_index.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\nf 1 2 9\n")
    (root / "empty.obj").write_text("")
    (root / "text.stl").write_text("this is not a mesh\n")
    trimesh.PointCloud(np.random.default_rng(0).random((20, 3))).export(root / "points.ply")
    gltf = trimesh.Scene(trimesh.creation.box()).export(file_type="gltf")
    (root / "no_buffer.gltf").write_bytes(gltf["model.gltf"])  # its .bin buffer is missing
    (root / "readme.txt").write_text("not a mesh suffix: ignored")
    return root


def test_broken_files_are_reported_and_skipped(mesh_dir):
    source = MeshSource(mesh_dir, progress=False)
    assert sorted(source.names) == sorted(GOOD)
    report = source.report()
    assert sorted(s["file"] for s in report["skipped"]) == sorted(BROKEN)
    assert all(s["reason"] for s in report["skipped"]) and report["found"] == len(GOOD) + len(BROKEN)
    reasons = {s["file"]: s["reason"] for s in report["skipped"]}
    assert "PointCloud" in reasons["points.ply"]


def test_render_meshes_command(mesh_dir, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    data_cli.register(parser.add_subparsers(dest="command", required=True), "build data sets")
    out = tmp_path / "out"
    args = parser.parse_args(["data", "render-meshes", str(mesh_dir), "--out", str(out), "--views", "2",
                              "--resolution", "16", "--kind", "text-image"])
    assert args.run(args) == 0
    printed = capsys.readouterr().out
    assert f"rendered {len(GOOD)} mesh(es)" in printed and f"skipped {len(BROKEN)}" in printed
    assert "truncated.glb" in printed
    report = json.loads((out / "report.json").read_text())
    assert sorted(report["rendered"]) == sorted(GOOD)
    assert sorted(s["file"] for s in report["skipped"]) == sorted(BROKEN)
    dataset = TextImageDataset(out)
    assert len(dataset) == 2 * len(GOOD)
    sample = dataset[0]
    assert sample["image"].shape == (16, 16, 4) and sample["image"][..., 3].max() == 1.0
    assert sample["base_prompt"] == "box" and sample["prompt"].startswith("box, ")
    args = parser.parse_args(["data", "render-meshes", str(mesh_dir), "--out", str(tmp_path / "mv"),
                              "--views", "3", "--resolution", "16"])
    assert args.run(args) == 0
    assert MultiviewDataset(tmp_path / "mv")[1]["images"].shape == (3, 16, 16, 4)


def test_unit_cube_coverage_depth_and_shading(mesh_dir):
    mesh = load_mesh(mesh_dir / "box.obj")
    half = UNIT_RADIUS / math.sqrt(3.0)  # the cube's half-diagonal is scaled to UNIT_RADIUS
    assert torch.allclose(mesh.vertices.abs(), torch.full_like(mesh.vertices, half), atol=1e-6)
    distance, size = 3.0, 32
    cams = orbit_cameras(0.0, 0.0, distance, 40.0, size, size)  # on +X, looking at the front face
    out = render_mesh(mesh, cams, supersample=4, background=1.0)
    fx = cams.K[0, 0, 0].item()
    side_px = 2.0 * fx * half / (distance - half)  # the front face's projected side
    assert out.alpha.sum().item() == pytest.approx(side_px**2, rel=0.02)
    centre = (slice(None), slice(size // 2 - 3, size // 2 + 3), slice(size // 2 - 3, size // 2 + 3))
    assert torch.allclose(out.depth[centre], torch.full_like(out.depth[centre], distance - half), atol=1e-4)
    assert torch.allclose(out.normal[centre], torch.tensor([1.0, 0.0, 0.0]).expand_as(out.normal[centre]), atol=1e-5)
    shade = DEFAULT_ALBEDO * (AMBIENT + (1 - AMBIENT) * max(0.0, LIGHT_DIRECTION[0]))
    assert torch.allclose(out.rgb[centre], torch.full_like(out.rgb[centre], shade), atol=1e-5)
    assert out.alpha[0, 0, 0, 0] == 0 and out.rgb[0, 0, 0].tolist() == [1.0, 1.0, 1.0] and out.depth[0, 0, 0, 0] == 0


def test_vertex_colours_and_textures_show(mesh_dir):
    cams = orbit_cameras(0.0, 0.0, 2.7, 40.0, 32, 32)
    rgb = render_mesh(load_mesh(mesh_dir / "nested" / "ico.glb"), cams).rgb[0, 16, 16]
    assert rgb[0] > 0.3 and rgb[1] < 0.1 and rgb[2] < 0.1  # red vertex colours
    # The quad is glTF (+Y up): it stands in the world's YZ plane facing +X; texel centres sit at
    # uv = (0.25 | 0.75, 0.25 | 0.75): image top-left red, top-right green, bottom-left blue, bottom-right yellow.
    mesh = load_mesh(mesh_dir / "quad.glb")
    assert torch.allclose(mesh.vertices[:, 0], torch.zeros(4), atol=1e-6)
    out = render_mesh(mesh, orbit_cameras(0.0, 0.0, 2.7, 40.0, 64, 64), supersample=1)
    half = 0.9 / math.sqrt(2.0)
    fx = 0.5 * 64 / math.tan(math.radians(20.0))
    q = round(fx * 0.5 * half / 2.7)  # pixel offset of a quadrant centre
    lit = AMBIENT + (1 - AMBIENT) * LIGHT_DIRECTION[0]
    expected = {(-q, -q): (1, 0, 0), (-q, q): (0, 1, 0), (q, -q): (0, 0, 1), (q, q): (1, 1, 0)}
    for (dv, du), colour in expected.items():
        pixel = out.rgb[0, 32 + dv, 32 + du]
        assert torch.allclose(pixel, torch.tensor(colour, dtype=torch.float32) * lit, atol=0.08), (dv, du, pixel)


def test_gltf_up_axis_becomes_world_z(tmp_path):
    tall = trimesh.creation.box(extents=(0.2, 1.0, 0.4))  # tall along glTF +Y, deep along glTF +Z
    tall.export(tmp_path / "tall.glb")
    tall.export(tmp_path / "tall.stl")
    extent = lambda m: (m.vertices.max(0).values - m.vertices.min(0).values).tolist()
    ex, ey, ez = extent(load_mesh(tmp_path / "tall.glb"))
    assert ez > ex > ey  # glTF Y -> world Z, glTF Z (front) -> world X
    sx, sy, sz = extent(load_mesh(tmp_path / "tall.stl"))
    assert sy > sz > sx  # STL taken as +Z up: unchanged
    sx2, sy2, sz2 = extent(load_mesh(tmp_path / "tall.stl", up="y"))
    assert sz2 > sx2 > sy2


def test_huge_meshes_are_decimated_or_warned(tmp_path, monkeypatch, recwarn):
    from distill3d.data import meshes

    trimesh.creation.icosphere(subdivisions=2).export(tmp_path / "ico.ply")  # 320 faces
    monkeypatch.setattr(meshes, "MAX_FACES", 100)
    mesh = load_mesh(tmp_path / "ico.ply")
    warned = any("faces" in str(w.message) for w in recwarn)
    assert mesh.num_faces <= 100 or warned  # decimated when fast_simplification is installed
    assert render_mesh(mesh, orbit_cameras(0.0, 0.0, 2.7, 40.0, 8, 8)).alpha.sum() > 0
