"""``distill3d view RUN``: look at a run folder in the browser (viser); and ``--viewer`` for the long
commands, which shows the scene forming while it optimises."""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator


def register(commands, help_text: str) -> None:
    p = commands.add_parser("view", help=help_text, usage="distill3d view RUN [--port P] [--host H]",
                            description="Serve a run folder in the browser with viser: a text-to-3d or fit run, "
                                        "an image-to-3d result (gaussians.ply), a holofusion sample (grid) or "
                                        "a mesh, with the world axes (+Z up) and the training cameras. "
                                        "Works offline. Needs the viewer extra: pip install -e '.[viewer]'.")
    p.add_argument("run_folder", metavar="RUN", help="the run or output folder to show")
    p.add_argument("--port", type=int, default=8080, help="port to serve on (default 8080)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: the whole network)")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from distill3d.viewer.run_content import load_view_content
    from distill3d.viewer.server import SceneViewer
    from distill3d.viewer.viser_import import require_viser

    require_viser()  # before the folder is read: the missing extra is the first thing to say
    content = load_view_content(args.run_folder)
    viewer = SceneViewer(args.host, args.port)
    viewer.show(content)
    viewer.set_status(f"**{content.label}**  \n{content.kind}")
    print(f"distill3d view: {content.label} ({content.kind}) at {viewer.url}  (Ctrl+C to stop)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        viewer.stop()
        return 0


def add_live_viewer_options(parser: argparse.ArgumentParser) -> None:
    """``--viewer`` and ``--viewer-port`` of the long per-scene commands."""
    parser.add_argument("--viewer", action="store_true",
                        help="watch the scene form in the browser while it optimises (needs the viewer extra)")
    parser.add_argument("--viewer-port", type=int, default=8080, help="port of --viewer (default 8080)")


@contextlib.contextmanager
def live_viewer(args: argparse.Namespace, label: str) -> Iterator[None]:
    """Inside: the run loops feed a ``LiveViewer`` when ``args.viewer`` (else nothing happens)."""
    if not getattr(args, "viewer", False):
        yield
        return
    from distill3d.training.scene_loop import watch_loops
    from distill3d.viewer.live import LiveViewer

    live = LiveViewer("127.0.0.1", args.viewer_port, label=label)
    print(f"distill3d: viewer at {live.url}", flush=True)
    try:
        with watch_loops(live):
            yield
        live.wait_idle()
    finally:
        live.stop()
