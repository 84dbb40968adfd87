"""What ``--viewer`` costs a run: a short ``fit`` of 3D Gaussians on the CPU, without and with the live viewer
(and, where Debian's chromium and playwright are installed, with a headless browser watching).

    python benchmarks/bench_viewer_overhead.py [--steps 150] [--repeats 2]

Each setting runs ``repeats`` times in a fresh run folder (the best time counts, as the machine is shared);
the overhead is the slowdown of the best time against the best time without the viewer. Target: <= 10 %.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path

from distill3d.data.world_datasets import write_world_dataset
from distill3d.export.scene import ExportConfig
from distill3d.methods.fit import FitConfig, fit
from distill3d.scene.factory import GaussianInitConfig, SceneConfig
from distill3d.training.scene_loop import LoopConfig, watch_loops
from distill3d.viewer.headless import find_chromium, free_port, watch
from distill3d.viewer.live import LiveViewer


def one_run(data: Path, steps: int, mode: str) -> float:
    config = FitConfig(data=str(data), steps=steps, heldout_views=2,
                       scene=SceneConfig(representation="gaussians", gaussians=GaussianInitConfig(count=3000)),
                       loop=LoopConfig(checkpoint_every=10_000), export=ExportConfig(turntable_frames=0))
    out = Path(tempfile.mkdtemp()) / "run"
    if mode == "off":
        seconds = fit(config, out, progress=False)["seconds"]
    else:
        live = LiveViewer("127.0.0.1", free_port())
        stop = threading.Event()
        browser = None
        if mode == "browser":
            browser = threading.Thread(target=watch, args=(live.url, stop), daemon=True)
            browser.start()
            time.sleep(8)  # the page loads before the run starts
        try:
            with watch_loops(live):
                seconds = fit(config, out, progress=False)["seconds"]
        finally:
            stop.set()
            if browser is not None:
                browser.join(timeout=30)
            live.stop()
    shutil.rmtree(out.parent)
    return float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp()) / "data"
    write_world_dataset("multiview", data, 1, resolution=64, views=12)
    modes = ["off", "viewer"]
    if find_chromium():
        modes.append("browser")
    best = {}
    for mode in modes:
        best[mode] = min(one_run(data, args.steps, mode) for _ in range(args.repeats))
        print(f"{mode:8s} best of {args.repeats}: {best[mode]:.2f} s for {args.steps} steps", flush=True)
    for mode in modes[1:]:
        print(f"overhead of --viewer ({mode}): {100 * (best[mode] / best['off'] - 1):+.1f} %")
    shutil.rmtree(data.parent)


if __name__ == "__main__":
    main()
