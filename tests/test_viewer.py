"""The browser viewer: what run folders show, one-line errors, the loop's watcher, and a real browser."""

from __future__ import annotations

import math
import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from distill3d.configs import config_to_dict
from distill3d.errors import UserError
from distill3d.export.ply import write_gaussians_ply
from distill3d.render_output import RenderOutput
from distill3d.scene.factory import (
    GaussianInitConfig,
    SceneConfig,
    SceneOptimConfig,
    build_scene,
    scene_optimizer,
)
from distill3d.scene.gaussians import Gaussians, rgb_to_sh_dc
from distill3d.training.run_dir import RunDir
from distill3d.training.scene_loop import LoopConfig, SceneJob, run_loop, watch_loops
from distill3d.viewer.browser_camera import (
    browser_cameras,
    display_image,
    quaternion_to_matrix,
)
from distill3d.viewer.headless import find_chromium, free_port, screenshot
from distill3d.viewer.run_content import load_view_content
from distill3d.viewer.viser_import import INSTALL_HINT, require_viser

try:
    import viser
except ImportError:
    viser = None
needs_viser = pytest.mark.skipif(viser is None, reason="viser is not installed (pip install -e '.[viewer]')")
CHROMIUM = find_chromium()
RED = (0.9, 0.1, 0.1)


def red_ball(count: int = 2000) -> Gaussians:
    """Opaque red Gaussians filling a ball of radius 0.5 at the origin."""
    g = Gaussians.random_ball(count, radius=0.5, opacity=0.95, generator=torch.Generator().manual_seed(0))
    g.sh_dc = rgb_to_sh_dc(torch.tensor(RED)).expand(count, 1, 3).clone()
    g.log_scales = torch.full_like(g.log_scales, math.log(0.06))
    return g


# ---------------------------------------------------------------------- run folders
def test_a_gaussians_ply_folder_shows_its_gaussians(tmp_path):
    g = red_ball(50)
    write_gaussians_ply(tmp_path / "gaussians.ply", g)
    content = load_view_content(tmp_path)
    assert content.kind == "gaussians"
    torch.testing.assert_close(content.gaussians.means, g.means)
    torch.testing.assert_close(content.gaussians.rgb, torch.tensor(RED).expand(50, 3), atol=1e-5, rtol=0)


def test_a_mesh_folder_shows_its_mesh(tmp_path):
    box = trimesh.creation.box()
    box.export(tmp_path / "mesh.glb")
    content = load_view_content(tmp_path)
    assert content.kind == "mesh" and len(content.mesh.faces) == len(box.faces)


def test_a_run_folder_shows_its_checkpointed_scene(tmp_path):
    config = SceneConfig(representation="gaussians", gaussians=GaussianInitConfig(count=30))
    scene = build_scene(config, "cpu", seed=1)
    run = RunDir(tmp_path / "run")
    run.prepare({"scene": config_to_dict(config)}, method="text-to-3d-test", resume=False)
    run.save_checkpoint(5, scene.modules(), {"adam": scene_optimizer(scene, SceneOptimConfig())})
    content = load_view_content(run.path)
    assert content.kind == "gaussians"
    torch.testing.assert_close(content.gaussians.means, scene.module.means.detach())


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing", "no run folder"),
    (lambda d: (d / "file.txt").write_text("x") and d / "file.txt", "is a file"),
    (lambda d: d, "holds nothing to view"),
])
def test_bad_folders_are_one_line_errors(tmp_path, make, message):
    with pytest.raises(UserError, match=message) as err:
        load_view_content(make(tmp_path))
    assert "\n" not in str(err.value)


def test_a_folder_of_results_names_one_to_view(tmp_path):
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        write_gaussians_ply(tmp_path / name / "gaussians.ply", red_ball(10))
    with pytest.raises(UserError, match=r"holds 2 results \(cat, dog\); view one: distill3d view .*cat"):
        load_view_content(tmp_path)
    (tmp_path / "dog" / "gaussians.ply").unlink()  # one result left: the folder opens it (the demo's case)
    assert load_view_content(tmp_path).gaussians.means.shape[0] == 10


def test_missing_viser_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "viser", None)  # import viser -> ImportError
    with pytest.raises(UserError) as err:
        require_viser()
    assert str(err.value) == INSTALL_HINT and "pip install -e '.[viewer]'" in INSTALL_HINT


# ---------------------------------------------------------------------- the browser's camera and images
@needs_viser
def test_browser_camera_matches_viser_pose_and_fov():
    wxyz = np.array([0.8, 0.2, -0.4, 0.4]) / np.linalg.norm([0.8, 0.2, -0.4, 0.4])
    cams = browser_cameras(wxyz, np.array([1.0, 2.0, 3.0]), fov=math.radians(50), aspect=1.5, height=40)
    expected = torch.tensor(viser.transforms.SO3(wxyz).as_matrix(), dtype=torch.float32)
    torch.testing.assert_close(quaternion_to_matrix(wxyz), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(cams.c2w[0, :3, :3], expected, atol=1e-6, rtol=0)
    assert (cams.width, cams.height) == (60, 40)
    assert cams.fovy_deg.item() == pytest.approx(50.0, abs=1e-4)


def test_display_modes_composite_over_the_background():
    alpha = torch.zeros(1, 2, 2, 1)
    alpha[0, 0, 0] = 1.0
    depth = torch.full((1, 2, 2, 1), 2.0)
    normal = torch.zeros(1, 2, 2, 3)
    normal[..., 2] = 1.0
    out = RenderOutput(torch.full((1, 2, 2, 3), 0.25), alpha, depth, normal)
    background = (0.0, 1.0, 0.0)
    assert (display_image(out, "rgb", background) == 64).all()
    np.testing.assert_array_equal(display_image(out, "alpha", background)[..., 0], [[255, 0], [0, 0]])
    shown = display_image(out, "normal", background)
    np.testing.assert_array_equal(shown[0, 0], [128, 128, 255])  # (n + 1) / 2 where opaque
    np.testing.assert_array_equal(shown[1, 1], [0, 255, 0])      # the background where empty
    np.testing.assert_array_equal(display_image(out, "depth", background)[1, 1], [0, 255, 0])


# ---------------------------------------------------------------------- the server
@needs_viser
def test_a_port_in_use_is_a_one_line_error():
    from distill3d.viewer.server import SceneViewer

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(UserError, match=rf"port {taken.getsockname()[1]} is in use; choose another with --port"):
            SceneViewer("127.0.0.1", taken.getsockname()[1])


@needs_viser
def test_the_live_viewer_shows_the_loops_last_scene(tmp_path):
    from distill3d.viewer.live import LiveViewer

    config = SceneConfig(representation="gaussians", gaussians=GaussianInitConfig(count=40))
    scene = build_scene(config, "cpu", seed=0)
    run = RunDir(tmp_path / "run")
    run.prepare({"scene": config_to_dict(config)}, method="live-test", resume=False)
    target = torch.tensor(RED)

    def step(i, timer):
        return ((scene.module.gaussians.rgb - target) ** 2).mean(), {}

    job = SceneJob(scene.modules(), scene_optimizer(scene, SceneOptimConfig()), step)
    live = LiveViewer("127.0.0.1", free_port(), interval=3600.0)  # the first and the last step only
    ticks = []
    try:
        with watch_loops(live), watch_loops(ticks.append):
            run_loop(run, job, steps=6, config=LoopConfig(checkpoint_every=100), resuming=False,
                     device=torch.device("cpu"), desc="live", progress=False)
        live.wait_idle()
        shown = live.viewer._content
        assert [t.step for t in ticks] == [1, 2, 3, 4, 5, 6] and 1 <= live.updates <= 2
        torch.testing.assert_close(shown.gaussians.means, scene.module.means.detach())
        torch.testing.assert_close(shown.gaussians.sh_dc, scene.module.sh_dc.detach())
        assert "step 6 / 6" in live.viewer._status.content
    finally:
        live.stop()
    run_loop(run, job, steps=7, config=LoopConfig(checkpoint_every=100), resuming=True,  # no watcher: no tick
             device=torch.device("cpu"), desc="live", progress=False)
    assert len(ticks) == 6


# ---------------------------------------------------------------------- a real browser
@needs_viser
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)")
def test_a_browser_draws_the_runs_red_object(tmp_path):
    pytest.importorskip("playwright", reason="playwright is not installed (pip install -e '.[test]')")
    from distill3d.viewer.server import SceneViewer

    write_gaussians_ply(tmp_path / "gaussians.ply", red_ball())
    viewer = SceneViewer("127.0.0.1", free_port())
    try:
        viewer.show(load_view_content(tmp_path))
        path = screenshot(viewer.url, Path(os.environ.get("DISTILL3D_VIEWER_SHOT", tmp_path / "shot.png")))
        shot = np.asarray(Image.open(path).convert("RGB"))
    finally:
        viewer.stop()
    pixels = shot.reshape(-1, 3).astype(np.float32) / 255
    red = (pixels[:, 0] > 0.6) & (pixels[:, 1] < 0.3) & (pixels[:, 2] < 0.3)
    assert red.mean() > 0.05, f"the object is not drawn: {red.mean():.3%} red pixels"
    np.testing.assert_allclose(pixels[red].mean(0), RED, atol=0.1)  # the run's colour, not another
    white = (pixels > 0.95).all(-1)
    assert white.mean() > 0.2, "the background is not the white of the background control"


@needs_viser
def test_a_field_is_rendered_from_the_browsers_camera():
    from types import SimpleNamespace

    from distill3d.render.volume import render_volume
    from distill3d.scene.voxel_grid import VoxelGridConfig
    from distill3d.viewer.run_content import ViewContent
    from distill3d.viewer.server import SceneViewer

    field = build_scene(SceneConfig(representation="voxels", voxels=VoxelGridConfig(resolution=8, feature_dim=4)),
                        "cpu", seed=0).module.eval()
    sent = []
    wxyz = viser.transforms.SO3.from_matrix(np.array([[0.0, 0, -1], [1, 0, 0], [0, -1, 0]])).wxyz  # from +X
    client = SimpleNamespace(camera=SimpleNamespace(wxyz=wxyz, position=np.array([2.5, 0, 0]), fov=0.8, aspect=1.0),
                             scene=SimpleNamespace(set_background_image=lambda image, **kw: sent.append((image, kw))))
    viewer = SceneViewer("127.0.0.1", free_port(), render_height=12)
    try:
        viewer.show(ViewContent("field", field=field, num_samples=16))
        viewer._render_for(client, viewer._content)
    finally:
        viewer.stop()
    cams = browser_cameras(wxyz, np.array([2.5, 0, 0]), 0.8, 1.0, 12)
    with torch.no_grad():
        out = render_volume(field, cams, num_samples=16, background=torch.ones(3), stratified=False,
                            compute_normals=False)
    image, kw = sent[0]
    np.testing.assert_array_equal(image, display_image(out, "rgb", (1.0, 1.0, 1.0)))
    assert kw["depth"].shape == (12, 12, 1)
