"""The viser server of the viewer: the world frame (+Z up, axes), the training cameras, the scene and its
controls (render mode and background), and a status panel for live runs.

Gaussians are drawn by the browser as viser splats and meshes as meshes; a density field (voxel grid,
NeRF) is rendered by our volume renderer from each browser's camera and sent as its background image,
with depth, so the axes and cameras are hidden behind the object (as nerfstudio's viewer does).
"""

from __future__ import annotations

import errno
import math
import socket
import threading
import time

import numpy as np
import torch

from distill3d.errors import UserError
from distill3d.render.volume import render_volume
from distill3d.scene.gaussians import Gaussians
from distill3d.viewer.browser_camera import RENDER_MODES, browser_cameras, display_image
from distill3d.viewer.run_content import ViewContent
from distill3d.viewer.viser_import import require_viser

START_POSITION = (2.2, 1.2, 1.1)  # the browser's first camera: front-left, above (objects face +X)
FAR = 100.0                       # depth sent where a field render is empty


def check_port_free(host: str, port: int) -> None:
    """A ``UserError`` when ``port`` on ``host`` is taken (viser would quietly move to the next one)."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise UserError(f"port {port} is in use; choose another with --port") from None
            raise UserError(f"cannot serve on {host}:{port}: {error.strerror}") from None


def splat_arrays(gaussians: Gaussians) -> dict[str, np.ndarray]:
    """The arrays of viser's ``add_gaussian_splats``: centers [N, 3], covariances [N, 3, 3], rgbs [N, 3]
    in [0, 1] (degree-0 colour) and opacities [N, 1]."""
    g = gaussians.detach().to("cpu", torch.float32)
    return {"centers": g.means.numpy(), "covariances": g.covariances.numpy(),
            "rgbs": g.rgb.clamp(0, 1).numpy(), "opacities": g.opacities[:, None].numpy()}


class SceneViewer:
    """A viser server showing one ``ViewContent`` (replaceable while it runs, for live training)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, *, render_height: int = 160):
        viser = require_viser()
        self._tf = viser.transforms
        check_port_free(host, port)
        self.server = viser.ViserServer(host=host, port=port, verbose=False)
        if port and self.server.get_port() != port:  # taken between the check and the start
            self.server.stop()
            raise UserError(f"port {port} is in use; choose another with --port")
        self.render_height = render_height
        self._content: ViewContent | None = None
        self._lock = threading.Lock()
        self._dirty: set[int] = set()
        self._wake = threading.Event()
        self._stopped = False
        self.renders = 0  # field renders sent to browsers (for tests and benchmarks)

        scene = self.server.scene
        scene.set_up_direction("+z")
        scene.add_frame("/world", axes_length=0.6, axes_radius=0.008)
        self.server.initial_camera.position = START_POSITION
        self.server.initial_camera.look_at = (0.0, 0.0, 0.0)
        self.server.initial_camera.fov = math.radians(45.0)

        gui = self.server.gui
        self._status = gui.add_markdown("**distill3d**")
        self._mode = gui.add_dropdown("render mode", RENDER_MODES, initial_value="rgb",
                                      hint="what the volume renderer shows (voxel grids and NeRFs)")
        self._background = gui.add_rgb("background", (255, 255, 255))
        self._show_cameras = gui.add_checkbox("training cameras", True)
        self._mode.on_update(lambda _: self._redraw_all())
        self._background.on_update(lambda _: self._background_changed())
        self._show_cameras.on_update(lambda _: self._set_cameras_visible())
        self._frustums: list = []
        self.server.on_client_connect(self._connected)
        self._renderer = threading.Thread(target=self._render_loop, name="distill3d-viewer-render", daemon=True)
        self._renderer.start()
        self._paint_background()

    # ------------------------------------------------------------------ public
    @property
    def url(self) -> str:
        host = self.server.get_host()
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{self.server.get_port()}"

    @property
    def background(self) -> tuple[float, float, float]:
        r, g, b = self._background.value
        return (r / 255.0, g / 255.0, b / 255.0)

    def show(self, content: ViewContent) -> None:
        """Draw ``content`` (replacing what was shown); its cameras only when they changed."""
        previous, self._content = self._content, content
        scene = self.server.scene
        if content.kind == "gaussians":
            scene.add_gaussian_splats("/scene/gaussians", **splat_arrays(content.gaussians))
        elif content.kind == "mesh":
            scene.add_mesh_trimesh("/scene/mesh", content.mesh)
        if previous is None or previous.kind != content.kind:
            self._paint_background()
        if content.cameras is not None and (previous is None or previous.cameras is not content.cameras):
            self._draw_cameras(content)
        self._redraw_all()

    def set_status(self, text: str) -> None:
        """The status panel's markdown (label, step, loss, time left)."""
        self._status.content = text

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        self.server.stop()

    # ------------------------------------------------------------------ drawing
    def _draw_cameras(self, content: ViewContent) -> None:
        for frustum in self._frustums:
            frustum.remove()
        cams = content.cameras
        self._frustums = []
        for i in range(len(cams)):
            c2w = cams.c2w[i].detach().cpu().double().numpy()
            fovy = 2.0 * math.atan(0.5 * cams.height / float(cams.K[i, 1, 1]))
            self._frustums.append(self.server.scene.add_camera_frustum(
                f"/cameras/{i}", fov=fovy, aspect=cams.width / cams.height, scale=0.12, thickness=0.006,
                color=(60, 90, 200), wxyz=self._tf.SO3.from_matrix(c2w[:3, :3]).wxyz, position=c2w[:3, 3],
                visible=bool(self._show_cameras.value)))

    def _set_cameras_visible(self) -> None:
        for frustum in self._frustums:
            frustum.visible = bool(self._show_cameras.value)

    def _background_changed(self) -> None:
        self._paint_background()
        self._redraw_all()

    def _paint_background(self) -> None:
        """A plain background colour (under splats and meshes; a field's renders replace it per browser)."""
        colour = (np.array(self.background) * 255).astype(np.uint8)
        self.server.scene.set_background_image(np.broadcast_to(colour, (8, 8, 3)).copy(), format="png")

    # ------------------------------------------------------------------ field renders per browser
    def _connected(self, client) -> None:
        client.camera.on_update(lambda camera: self._request(camera.client.client_id))
        self._request(client.client_id)

    def _redraw_all(self) -> None:
        for client_id in self.server.get_clients():
            self._request(client_id)

    def _request(self, client_id: int) -> None:
        if self._content is not None and self._content.kind == "field":
            with self._lock:
                self._dirty.add(client_id)
            self._wake.set()

    def _render_loop(self) -> None:
        while not self._stopped:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                dirty, self._dirty = self._dirty, set()
            clients = self.server.get_clients()
            for client_id in dirty:
                client, content = clients.get(client_id), self._content
                if client is None or content is None or content.kind != "field" or self._stopped:
                    continue
                try:
                    self._render_for(client, content)
                except Exception as error:  # noqa: BLE001 - a browser gone mid-render: serve the others
                    print(f"distill3d view: render failed: {error}")
            time.sleep(0.05)  # coalesce a burst of camera moves

    def _render_for(self, client, content: ViewContent) -> None:
        camera = client.camera
        cams = browser_cameras(camera.wxyz, camera.position, camera.fov, camera.aspect, self.render_height)
        mode, background = str(self._mode.value), self.background
        normals = mode == "normal"
        with torch.enable_grad() if normals else torch.no_grad():
            out = render_volume(content.field, cams.to(_device_of(content.field)), num_samples=content.num_samples,
                                background=torch.tensor(background, device=_device_of(content.field)),
                                stratified=False, compute_normals=normals)
        depth = torch.where(out.alpha[0] > 0.5, out.depth[0], torch.full_like(out.depth[0], FAR))
        client.scene.set_background_image(display_image(out, mode, background), format="jpeg",
                                          depth=depth.detach().float().cpu().numpy())
        self.renders += 1


def _device_of(module) -> torch.device:
    return next(module.parameters()).device
