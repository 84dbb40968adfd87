"""Picture sheets of a DD3G student: what it makes of held-out world objects and of real meshes.

    python benchmarks/dd3g_sheets.py --model dd3g-student --world 8 --out docs/images/dd3g_student_heldout.png
    python benchmarks/dd3g_sheets.py --model dd3g-student --meshes RENDERS --out docs/images/dd3g_student_meshes.png
    python benchmarks/dd3g_sheets.py --model dd3g-student --meshes RENDERS --out docs/videos/dd3g_student_meshes.gif

``--world N``: the first N held-out objects of ``distill3d eval image-to-3d`` (same seed, same input
cameras). Two rows per object: the input image then the student's Gaussians at six views around it
(elevation 15, every 60 degrees from the input's azimuth); below, the reference renderer at the same views.

``--meshes DIR``: a ``distill3d data render-meshes --kind multiview`` folder (meshes nobody here drew).
Per mesh, the frame nearest elevation 15 is the input; the student sees it with the camera that
``distill3d image-to-3d`` assumes for any image, and the row shows its Gaussians at six turntable views.
Images are upscaled by ``--zoom`` (nearest) for viewing. An ``--out`` ending in .gif or .mp4 writes a
turntable instead: per row, the input beside the Gaussians turning through ``--frames`` views (and, for
world objects, the reference renderer beside them).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from distill3d.cameras import orbit_cameras
from distill3d.errors import UserError
from distill3d.eval.image_to_3d import ImageTo3DEvalConfig
from distill3d.eval.teacher_quality import eval_objects, render_views, save_grid
from distill3d.export.video import write_video
from distill3d.methods.dd3g.infer import (
    ImageTo3DConfig,
    assumed_cameras,
    load_student,
    predict_gaussians,
)
from distill3d.methods.dd3g.input_images import multiview_frames, read_input_image
from distill3d.render.splat import render_gaussian_batch
from distill3d.world.reference_render import render_reference
from distill3d.world_models.multiview_cameras import (
    MultiViewGroupCameras,
    sample_multiview_groups,
    split_groups,
)

VIEWS = 6


def ring(params, R: int, views: int = VIEWS):
    """``views`` cameras per object [B * views] at elevation 15 around the input azimuth (params [B, 1 + K, 4])."""
    B = params.shape[0]
    azimuth = params[:, :1, 1] + torch.arange(views, dtype=torch.float32) * (360.0 / views)
    return orbit_cameras(torch.full((B * views,), 15.0), azimuth.reshape(-1),
                         params[:, :1, 2].expand(B, views).reshape(-1), params[:, :1, 3].expand(B, views).reshape(-1),
                         R, R)


def world_rows(student, count: int, seed: int, views: int = VIEWS) -> torch.Tensor:
    """[count, 2 * views + 1, R, R, 3]: per object, the input, the student's views, the reference's views."""
    R, K = student.config.image_size, student.config.num_views
    objects = eval_objects(count)
    generator = torch.Generator().manual_seed(seed)  # the eval's first draws: the same input cameras
    cams, p = sample_multiview_groups(count, R, MultiViewGroupCameras(num_views=K), generator)
    params = torch.stack([p[k] for k in ("elevation", "azimuth", "distance", "fovy")], dim=-1)
    inputs, _ = split_groups(cams, K)
    images = render_views(objects, inputs)
    gaussians = predict_gaussians(student, images, params, generator)
    cams = ring(params, R, views)
    made = render_gaussian_batch(gaussians, cams).rgb.reshape(count, views, R, R, 3)
    ref = render_reference([o for o in objects for _ in range(views)], cams).rgb.reshape(count, views, R, R, 3)
    return torch.cat([images[:, None], made, ref], 1)


def mesh_inputs(folder: Path) -> list[tuple[str, Path]]:
    """(mesh name, its frame nearest elevation 15) per item of a render-meshes folder, in item order."""
    files, names, cameras = multiview_frames(folder, (-90.0, 90.0))
    best: dict[str, tuple[float, Path]] = {}
    for file, name, elevation in zip(files, names, cameras[:, 0].tolist()):
        item = name.rsplit("/", 1)[0]
        if item not in best or abs(elevation - 15.0) < best[item][0]:
            best[item] = (abs(elevation - 15.0), file)
    return [(Path(item).stem, file) for item, (_, file) in best.items()]


def mesh_rows(student, folder: Path, seed: int, views: int = VIEWS) -> tuple[torch.Tensor, list[str]]:
    """[meshes, 1 + views, R, R, 3]: per mesh, its input frame and the student's turntable views."""
    R = student.config.image_size
    picks = mesh_inputs(folder)
    rows = []
    for _, file in picks:
        image = read_input_image(file, R)
        generator = torch.Generator().manual_seed(seed)
        params = assumed_cameras(ImageTo3DConfig(), R, generator)
        gaussians = predict_gaussians(student, image[None], params, generator)
        rows.append(torch.cat([image[None], render_gaussian_batch(gaussians, ring(params, R, views)).rgb]))
    return torch.stack(rows), [name for name, _ in picks]


def turntable(rows: torch.Tensor, views: int) -> torch.Tensor:
    """Frames [views, H', W', 3] of rows [n, 1 + k * views, R, R, 3]: each row the input, then its k strips
    of views side by side, turning."""
    n, m, R = rows.shape[:3]
    k = (m - 1) // views
    frames = []
    for v in range(views):
        cells = [rows[:, :1]] + [rows[:, 1 + j * views + v:2 + j * views + v] for j in range(k)]
        row_images = torch.cat(cells, 1)  # [n, 1 + k, R, R, 3]
        frames.append(row_images.permute(0, 2, 1, 3, 4).reshape(n * R, (1 + k) * R, 3))
    return torch.stack(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="dd3g-student")
    parser.add_argument("--world", type=int, default=0, help="held-out objects to show")
    parser.add_argument("--meshes", type=Path, default=None, help="a `data render-meshes` folder")
    parser.add_argument("--seed", type=int, default=ImageTo3DEvalConfig().seed)
    parser.add_argument("--zoom", type=int, default=2)
    parser.add_argument("--frames", type=int, default=48, help="turntable frames (a .gif / .mp4 --out)")
    parser.add_argument("--out", type=Path, required=True, help="PNG sheet, or .gif / .mp4 turntable")
    args = parser.parse_args()
    if bool(args.world) == bool(args.meshes):
        raise SystemExit("give one of --world N and --meshes DIR")
    video = args.out.suffix.lower() in (".gif", ".mp4")
    views = args.frames if video else VIEWS
    student, _ = load_student(args.model, torch.device("cpu"))
    with torch.no_grad():
        if args.world:
            rows = world_rows(student, args.world, args.seed, views)
        else:
            rows, names = mesh_rows(student, args.meshes, args.seed, views)
            print("rows:", ", ".join(names))
    if video:
        frames = zoom(turntable(rows, views), args.zoom)
        print("written:", write_video(args.out, (frames.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy(), fps=16))
        return
    if args.world:  # two rows per object: input + student, then a blank + the reference
        n, R = rows.shape[0], rows.shape[2]
        blank = torch.ones(n, 1, R, R, 3)
        rows = torch.cat([rows[:, :1 + views], blank, rows[:, 1 + views:]], 1)
    images = zoom(rows.reshape(-1, *rows.shape[2:]), args.zoom)
    print("written:", save_grid(images.clamp(0, 1), args.out, columns=1 + VIEWS))


def zoom(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Images [N, H, W, 3] upscaled by ``factor`` (nearest)."""
    return F.interpolate(images.permute(0, 3, 1, 2), scale_factor=factor, mode="nearest").permute(0, 2, 3, 1)


if __name__ == "__main__":
    try:
        main()
    except UserError as error:
        raise SystemExit(f"dd3g_sheets: {error}") from None
