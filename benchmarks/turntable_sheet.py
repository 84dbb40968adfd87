"""Side-by-side turntables of a Consistent3D table: rows are variants, columns are prompts.

Reads the ``turntable.npz`` files that ``consistent3d_table.py --strips K`` writes for the
first K prompts of every row, and writes one labelled video (.mp4 or .gif):

    python benchmarks/turntable_sheet.py --table runs/c3d_table --representation nerf \\
        --variants sds,cds --prompts 0,1,2 --out docs/videos/consistent3d_nerf_sds_vs_cds.gif
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from distill3d.export.video import write_video

LABEL_WIDTH = 120   # pixels left of each row for the variant's name
TITLE_HEIGHT = 28   # pixels above each column for the prompt


def load_cell(run_dir: Path) -> tuple[np.ndarray, str]:
    """(frames uint8 [N, H, W, 3], prompt) of one table run."""
    frames_path = run_dir / "turntable.npz"
    if not frames_path.exists():
        raise SystemExit(f"{frames_path} is missing: run the table with --strips covering this prompt")
    prompt = json.loads((run_dir / "summary.json").read_text())["prompt"]
    return np.load(frames_path)["frames"], prompt


def label_canvas(rows: list[str], columns: list[str], size: int) -> Image.Image:
    """White canvas with the row and column labels; cells are left blank for the frames."""
    canvas = Image.new("RGB", (LABEL_WIDTH + size * len(columns), TITLE_HEIGHT + size * len(rows)), "white")
    draw = ImageDraw.Draw(canvas)
    for j, text in enumerate(columns):
        words = text.split()
        half = (len(words) + 1) // 2
        draw.multiline_text((LABEL_WIDTH + j * size + 4, 2), " ".join(words[:half]) + "\n" + " ".join(words[half:]),
                            fill="black", spacing=1)
    for i, text in enumerate(rows):
        draw.text((4, TITLE_HEIGHT + i * size + size // 2 - 6), text, fill="black")
    return canvas


def sheet_frames(cells: list[list[np.ndarray]], rows: list[str], columns: list[str]) -> np.ndarray:
    """cells[row][column] uint8 [N, S, S, 3] -> labelled frames uint8 [N, H, W, 3]."""
    count, size = cells[0][0].shape[0], cells[0][0].shape[1]
    base = np.asarray(label_canvas(rows, columns, size)).copy()
    out = np.repeat(base[None], count, axis=0)
    for i, row in enumerate(cells):
        for j, frames in enumerate(row):
            if frames.shape[:3] != (count, size, size):
                raise SystemExit(f"turntables differ in size: {frames.shape} against {(count, size, size)}")
            y, x = TITLE_HEIGHT + i * size, LABEL_WIDTH + j * size
            out[:, y:y + size, x:x + size] = frames
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", required=True, help="the --out folder of consistent3d_table.py")
    parser.add_argument("--representation", choices=("gaussians", "nerf"), default="gaussians")
    parser.add_argument("--variants", default="sds,cds")
    parser.add_argument("--prompts", default="0,1,2", help="prompt indices of the table (with turntables)")
    parser.add_argument("--seed", type=int, default=0, help="which seed's runs to show")
    parser.add_argument("--fps", type=int, default=12)
    parser.add_argument("--out", required=True, help=".mp4 or .gif")
    args = parser.parse_args()
    variants = args.variants.split(",")
    indices = [int(i) for i in args.prompts.split(",")]
    cells, prompts = [], []
    for variant in variants:
        row = []
        for index in indices:
            frames, prompt = load_cell(Path(args.table) / args.representation / variant / f"seed{args.seed}"
                                      / f"{index:02d}")
            row.append(frames)
            if len(prompts) < len(indices):
                prompts.append(prompt)
        cells.append(row)
    path = write_video(args.out, sheet_frames(cells, variants, prompts), fps=args.fps)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
