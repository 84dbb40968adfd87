"""``--viewer``: watch a per-scene run form in the browser while it optimises.

``LiveViewer`` is a watcher of the training loop (``distill3d.training.scene_loop.watch_loops``). On the
loop's thread it only looks at the clock; at most every ``interval`` seconds it copies the scene's
tensors (a few MB at most) and hands them to its own thread, which rebuilds the scene and sends it to the
browsers. The optimisation never waits for the browser.
"""

from __future__ import annotations

import threading
import time

import torch

from distill3d.configs import config_from_dict
from distill3d.scene.factory import Scene, SceneConfig, build_scene
from distill3d.scene.gaussians import FIELDS, Gaussians
from distill3d.training.scene_loop import LoopTick
from distill3d.viewer.run_content import ViewContent, training_cameras
from distill3d.viewer.server import SceneViewer


def format_status(label: str, step: int, steps: int, loss: float, seconds_left: float | None) -> str:
    """The status panel: label, step of steps, loss and the time left (m:ss)."""
    left = "..." if seconds_left is None else f"{int(seconds_left) // 60}:{int(seconds_left) % 60:02d}"
    return f"**{label}**  \nstep {step} / {steps}  \nloss {loss:.4g}  \ntime left {left}"


class LiveViewer:
    """A ``SceneViewer`` fed by the training loop: call it with each ``LoopTick`` (``watch_loops``)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, *, interval: float = 2.0, label: str = "run"):
        self.viewer = SceneViewer(host, port, render_height=128)
        self.interval, self.label = interval, label
        self.updates = 0                                # snapshots shown (for tests and benchmarks)
        self._last = -float("inf")
        self._first: tuple[int, float] | None = None    # (step, seconds) of the first tick: the rate
        self._pending: tuple[LoopTick, dict[str, torch.Tensor]] | None = None
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._stopped = False
        self._busy = False                              # the viewer's thread is showing a snapshot
        self._scene: Scene | None = None
        self._cameras = None
        self._worker = threading.Thread(target=self._show_loop, name="distill3d-viewer-live", daemon=True)
        self._worker.start()

    @property
    def url(self) -> str:
        return self.viewer.url

    def __call__(self, tick: LoopTick) -> None:
        """On the loop's thread: a copy of the scene every ``interval`` seconds (and at the last step)."""
        if self._first is None:
            self._first = (tick.step, tick.seconds)
        now = time.perf_counter()
        if now - self._last < self.interval and tick.step != tick.steps:
            return
        self._last = now
        module = tick.modules["scene"]
        with torch.no_grad():
            tensors = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
        with self._lock:
            self._pending = (tick, tensors)
        self._wake.set()

    def seconds_left(self, tick: LoopTick) -> float | None:
        """Time left at the rate since the first tick this viewer saw (None before a rate is known)."""
        if self._first is None or tick.step <= self._first[0]:
            return None
        rate = (tick.seconds - self._first[1]) / (tick.step - self._first[0])
        return rate * (tick.steps - tick.step)

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Until the last snapshot handed over has been shown (tests, the end of a run)."""
        end = time.perf_counter() + timeout
        while (self._pending is not None or self._busy) and time.perf_counter() < end:
            time.sleep(0.02)

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        self.viewer.stop()

    # ------------------------------------------------------------------ the viewer's thread
    def _show_loop(self) -> None:
        while not self._stopped:
            self._wake.wait()
            with self._lock:
                pending, self._pending = self._pending, None
                self._wake.clear()
                self._busy = pending is not None
            if pending is None or self._stopped:
                continue
            tick, tensors = pending
            try:
                self._show(tick, tensors)
            except Exception as error:  # noqa: BLE001 - the viewer must never stop the run
                print(f"distill3d: viewer: could not show step {tick.step}: {error}")
            self.updates += 1
            self._busy = False

    def _show(self, tick: LoopTick, tensors: dict[str, torch.Tensor]) -> None:
        if self._scene is None:
            config = tick.run.read_config()
            self._scene = build_scene(config_from_dict(SceneConfig, config.get("scene", {})), "cpu", seed=0)
            self._cameras = training_cameras(config)
            self.label = str(config.get("prompt") or self.label)
        scene = self._scene
        if scene.is_gaussians:
            content = ViewContent(self.label, gaussians=Gaussians(**{k: tensors[k] for k in FIELDS}),
                                  cameras=self._cameras)
        else:
            scene.module.load_state_dict(tensors)
            scene.module.eval()
            content = ViewContent(self.label, field=scene.module, num_samples=min(scene.config.num_samples, 64),
                                  cameras=self._cameras)
        self.viewer.show(content)
        self.viewer.set_status(format_status(self.label, tick.step, tick.steps, tick.loss, self.seconds_left(tick)))
