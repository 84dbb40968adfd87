"""A screenshot of a run in the viewer, as a browser shows it (the README's `docs/images/viewer_demo.png`).

    python benchmarks/viewer_screenshot.py demo-out/text-to-3d --out docs/images/viewer_demo.png

Starts ``distill3d view``'s server on a free local port, opens it in Debian's headless Chromium through
playwright (software WebGL, ``distill3d.viewer.headless``), hides viser's notifications (one says
that WebGL runs in software, which is true only of this headless browser) and saves the page.
Needs the viewer extra, playwright and chromium (`apt-get install chromium`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from distill3d.viewer.headless import find_chromium, free_port, screenshot
from distill3d.viewer.run_content import load_view_content
from distill3d.viewer.server import SceneViewer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a run folder `distill3d view` opens")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--size", type=int, nargs=2, default=(640, 480), metavar=("W", "H"))
    parser.add_argument("--settle", type=float, default=5.0, help="seconds for the splats to be sorted and drawn")
    args = parser.parse_args()
    if find_chromium() is None:
        raise SystemExit("no chromium on PATH (apt-get install chromium)")
    viewer = SceneViewer("127.0.0.1", free_port())
    try:
        content = load_view_content(args.run)
        viewer.show(content)
        viewer.set_status(f"**{content.label}**  \n{content.kind}")  # as `distill3d view` labels it
        screenshot(viewer.url, args.out, size=tuple(args.size), settle=args.settle, hide_notifications=True)
    finally:
        viewer.stop()
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
