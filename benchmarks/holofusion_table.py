"""HoloFusion's Tab. 1 on the world: FID / KID of five variants against held-out reference renders, with what
the paper cannot measure (3D consistency, memorisation) and the time per sample.

    python benchmarks/holofusion_table.py --model runs/holofusion --out runs/holofusion_table
    python benchmarks/holofusion_table.py --model M --out D --count 16 --views 16 --distill-steps 2000 \\
        --max-minutes 8          # time-boxed: run the same command again to continue

1. ``--count`` unconditional samples of the 3D model (``sample_grids``, ``--sample-steps`` ancestral steps):
   the coarse HoloDiffusion grids V_0 [d, S, S, S], kept in DIR/samples.safetensors.
2. Cameras: ``--views`` per sample, drawn as the world training views of the model (its
   ``config.views``: directions uniform on the sphere band of elevations -30..80 degrees, distance 2.7,
   fovy 40; ``data.multiview.SphereViews``), at the super-resolution output size S x scale (64 px by
   default). Every variant of one sample uses the same cameras (DIR/cameras.json).
3. Variants (the rows of HoloFusion Tab. 1), PNGs in DIR/<variant>/<sample>-<view>.png:
   - holodiffusion: the coarse grid rendered directly at the high resolution;
   - holodiffusion_star: ``holodiffusion_star_views``, D_beta on each coarse render at S, drawn per view;
   - sds / mse / patch_remix: ``distill_sample`` of the coarse grid (``DistillConfig`` with that loss,
     ``--distill-steps`` steps, ``--distill-set`` for other fields), the fine grid rendered at the cameras.
     patch_remix is HoloFusion itself.
4. Reference: as many images of held-out objects, round robin over the 28 held-out objects (image k shows
   object k mod 28), cameras from the same distribution (another seed), exact renders (DIR/reference/). A
   second draw (DIR/reference_floor/) gives the FID / KID of two reference sets of this size: the floor
   that sample-size noise alone reaches.
5. FID and KID (``distill3d.eval.fid``, features of ``--features``, default the world classifier) of each
   variant against the reference, **overall** (all shapes pooled): unconditional samples carry no class,
   so the paper's per-category columns have no analogue. Beside it, per predicted shape (the classifier's
   shape head reads each generated image; the reference by its true shape): small sets, noisy.
6. 3D consistency (``eval.consistency``): reprojection error across neighbouring views of each sample,
   with the depth of the 3D thing behind the images (the coarse grid for holodiffusion and, upsampled by
   rendering it at the high resolution, for holodiffusion_star; the fine grid for the distilled ones);
   mean over samples. The reference's exact renders with their exact depth give the measure's floor.
7. Memorisation (``eval.memorisation``): each sample's nearest training object (coarse and distilled
   grids; none for holodiffusion_star, which is not a 3D thing), read against the held-out objects'
   nearest distance.
8. Time per sample of each variant (its own work: rendering, D_beta, distillation), and the coarse
   sampling time per sample, which every variant shares.

Resumable: a sample of a variant is done when its PNGs and its DIR/<variant>/measures/<sample>.json with
the same settings exist; those are reused, so a time-boxed call (``--max-minutes``: no new sample is
started after it) can be repeated until the table is complete. DIR/table.json and DIR/table.md are
written at the end of every call (rows still incomplete are marked), with DIR/rows.png: the first view of each
sample per variant under a row of reference images. ``--jobs N`` deals the (variant,
sample) pairs to N worker processes of this script on the same folder; it pays only where one process
leaves the device idle (on one H200 one distillation already filled it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from distill3d.atomic_files import write_json_atomic
from distill3d.cameras import Cameras
from distill3d.cli.config_overrides import apply_overrides
from distill3d.configs import config_to_dict
from distill3d.devices import pick_device
from distill3d.errors import UserError
from distill3d.eval.consistency import view_consistency
from distill3d.eval.feature_networks import (
    ClassifierFeatures,
    FeatureNetwork,
    feature_network,
)
from distill3d.eval.fid import (
    feature_fid_kid,
    folder_features,
    image_files,
    read_image,
)
from distill3d.eval.memorisation import (
    MemorisationConfig,
    PixelFeatures,
    heldout_ring,
    memorisation_summary,
    nearest_training,
    ring_cameras,
    ring_features,
    training_ring,
)
from distill3d.methods.holofusion.distill import (
    DistillConfig,
    distill_sample,
    holodiffusion_star_views,
)
from distill3d.methods.holofusion.sample import load_holofusion, sample_grids
from distill3d.methods.holofusion.train import KIND, HoloFusionModel
from distill3d.model_folder import WEIGHTS_FILE, resolve_model_folder
from distill3d.render.volume import render_volume
from distill3d.scene.voxel_grid import VoxelRadianceField
from distill3d.world.reference_render import render_reference
from distill3d.world.split import heldout_objects
from distill3d.world_models.classifier import HEADS, WorldClassifier

VARIANTS = ("holodiffusion", "holodiffusion_star", "sds", "mse", "patch_remix")
LABELS = {"holodiffusion": "HoloDiffusion", "holodiffusion_star": "HoloDiffusion*", "sds": "HoloFusion (SDS)",
          "mse": "HoloFusion (MSE)", "patch_remix": "HoloFusion"}
PAPER = {  # HoloFusion Tab. 1, "Mean" columns over the 4 CO3Dv2 classes: FID, KID, VP (view-consistent)
    "holodiffusion": (122.5, 0.102, True), "holodiffusion_star": (83.7, 0.068, False),
    "sds": (115.2, 0.085, True), "mse": (82.8, 0.072, False), "patch_remix": (83.3, 0.071, True)}
PAPER_FID_CHANGE_PCT = 100.0 * (83.3 - 122.5) / 122.5   # HoloFusion vs HoloDiffusion in Tab. 1: -32%
THREE_D = {"holodiffusion": True, "holodiffusion_star": False, "sds": True, "mse": True, "patch_remix": True}
"""Whether a variant's images are renders of one 3D thing (consistent by construction)."""
SAMPLES_FILE = "samples.safetensors"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="trained HoloFusion run or model folder")
    p.add_argument("--out", required=True, type=Path, help="output folder (reused: finished samples are kept)")
    p.add_argument("--count", type=int, default=16, help="unconditional samples")
    p.add_argument("--views", type=int, default=16, help="views per sample (and per reference object slot)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, of " + ", ".join(VARIANTS))
    p.add_argument("--distill-steps", type=int, default=None, help="distillation steps (default: DistillConfig's)")
    p.add_argument("--distill-set", action="append", default=[], metavar="FIELD=VALUE",
                   help="another DistillConfig field, e.g. num_cameras=16 (repeatable)")
    p.add_argument("--sample-steps", type=int, default=100, help="denoising steps of the 3D model")
    p.add_argument("--num-samples", type=int, default=64, help="samples per ray of the evaluation renders")
    p.add_argument("--features", default="classifier", help="FID network: classifier, classifier:DIR, inception:FILE")
    p.add_argument("--memorisation-features", default=None,
                   help="network of the nearest-object distance (default: --features; 'pixels' for raw pixels)")
    p.add_argument("--memorisation-train-objects", type=int, default=None,
                   help="training objects compared with (default all 228; a subset is evenly spaced)")
    p.add_argument("--memorisation-heldout-objects", type=int, default=None, help="held-out baseline (default all 28)")
    p.add_argument("--memorisation-resolution", type=int, default=64, help="ring render size")
    p.add_argument("--kid-subsets", type=int, default=100)
    p.add_argument("--no-reference-floor", action="store_true", help="skip the second reference draw")
    p.add_argument("--max-minutes", type=float, default=None, help="start no new sample after this many minutes")
    p.add_argument("--jobs", type=int, default=1,
                   help="worker processes sharing the device, the (variant, sample) pairs dealt round robin; "
                        "their seconds per sample include the waiting (on one H200, 8 jobs made no more "
                        "distillation steps a second than 1)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # "K/N": make pairs k = K mod N, no table
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.count < 1 or args.views < 2 or args.num_samples < 1 or args.sample_steps < 1:
        raise UserError("--count must be >= 1, --views >= 2, --num-samples and --sample-steps >= 1")
    if args.count * args.views < 2:
        raise UserError("FID needs at least 2 images per set: raise --count or --views")
    if args.jobs < 1:
        raise UserError("--jobs must be >= 1")
    args.variant_list = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variant_list if v not in VARIANTS]
    if unknown or not args.variant_list:
        raise UserError(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    return args


# --- samples and cameras ---------------------------------------------------------------------------------------


def _sha(*chunks: bytes) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()[:16]


def model_checksum(model_arg: str) -> str:
    folder, _ = resolve_model_folder(model_arg, KIND)
    return _sha((folder / WEIGHTS_FILE).read_bytes())


def coarse_samples(model: HoloFusionModel, args: argparse.Namespace, out: Path, device: torch.device,
                   weights: str) -> tuple[torch.Tensor, float]:
    """The coarse grids [count, d, S, S, S] (reused from DIR/samples.safetensors when drawn with the same
    model, count, seed and steps) and the sampling seconds per sample."""
    meta = {"model": weights, "count": str(args.count), "seed": str(args.seed), "steps": str(args.sample_steps)}
    path = out / SAMPLES_FILE
    if path.is_file():
        with safe_open(str(path), framework="pt") as f:
            stored = dict(f.metadata() or {})
            if all(stored.get(k) == v for k, v in meta.items()):
                return f.get_tensor("grids").to(device), float(stored["seconds_per_sample"])
    start = time.perf_counter()
    grids = sample_grids(model, args.count, steps=args.sample_steps,
                         generator=torch.Generator(device=device).manual_seed(args.seed))
    _sync(device)
    seconds = (time.perf_counter() - start) / args.count
    tmp = path.with_suffix(".tmp")
    save_file({"grids": grids.float().cpu().contiguous()}, str(tmp), {**meta, "seconds_per_sample": repr(seconds)})
    tmp.replace(path)
    return grids, seconds


def draw_cameras(model: HoloFusionModel, count: int, resolution: int, seed: int) -> Cameras:
    """``count`` cameras like the model's world training views (module docstring, step 2)."""
    return model.config.views.draw(count, resolution, seed)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def write_pngs(images: torch.Tensor, paths: list[Path]) -> None:
    """Images [N, H, W, 3] in [0, 1] -> 8-bit RGB PNGs."""
    pixels = (images.detach().clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
    for array, path in zip(pixels, paths):
        Image.fromarray(array).save(path)


def write_rows_sheet(out: Path, variants: list[str], count: int) -> Path:
    """DIR/rows.png: a row of the first ``count`` reference images, then a row per variant with the first view
    of each sample (mid grey where a sample is not made yet)."""
    rows = [[out / "reference" / f"{k:05d}.png" for k in range(count)]]
    rows += [[out / variant / f"{i:03d}-000.png" for i in range(count)] for variant in variants]
    size = Image.open(rows[0][0]).size
    sheet = Image.new("RGB", (size[0] * count, size[1] * len(rows)), (128, 128, 128))
    for r, row in enumerate(rows):
        for c, path in enumerate(row):
            if path.is_file():
                sheet.paste(Image.open(path).convert("RGB"), (c * size[0], r * size[1]))
    sheet.save(out / "rows.png")
    return out / "rows.png"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# --- the reference --------------------------------------------------------------------------------------------


def reference_set(folder: Path, cameras: Cameras, settings: dict, device: torch.device, consistency: bool) -> dict:
    """Exact renders of held-out objects round robin (image k: object k mod 28) at ``cameras`` [N] into
    ``folder``; with ``consistency``, the reprojection error of each object's views with their exact depth."""
    folder.mkdir(parents=True, exist_ok=True)
    objects = heldout_objects()
    N = len(cameras)
    paths = [folder / f"{k:05d}.png" for k in range(N)]
    done = _read_json(folder / "measures.json")
    if done and done.get("settings") == settings and all(p.is_file() for p in paths):
        return done
    start = time.perf_counter()
    which = [objects[k % len(objects)] for k in range(N)]
    rgb, depth, alpha = [], [], []
    for s in range(0, N, 64):
        out = render_reference(which[s:s + 64], cameras[s:s + 64].to(device))
        rgb.append(out.rgb), depth.append(out.depth), alpha.append(out.alpha)
    rgb, depth, alpha = torch.cat(rgb), torch.cat(depth), torch.cat(alpha)
    write_pngs(rgb, paths)
    measures = {"settings": settings, "objects": [o.prompt for o in which], "shapes": [o.shape for o in which],
                "seconds_per_image": (time.perf_counter() - start) / N}
    if consistency:
        per_object = []
        for o in range(min(len(objects), N)):
            idx = torch.arange(o, N, len(objects))
            if len(idx) >= 2:
                result = view_consistency(rgb[idx], cameras[idx].to(device), depth[idx], alpha[idx])
                per_object.append({"object": objects[o].prompt, **result.summary()})
        measures["consistency"] = _mean_consistency(per_object)
        measures["consistency_per_object"] = per_object
    write_json_atomic(folder / "measures.json", measures)
    return measures


def _mean_consistency(rows: list[dict]) -> dict:
    """Mean over samples of each consistency figure (samples where nothing was compared are left out)."""
    out = {}
    for key in ("mae", "psnr", "valid_share"):
        values = [r[key] for r in rows if r.get(key) is not None and not math.isnan(r[key])]
        out[key] = sum(values) / len(values) if values else math.nan
    out["samples"] = len(rows)
    return out


# --- the variants ---------------------------------------------------------------------------------------------


class Memorisation:
    """The training ring (computed once per call) and the search for one 3D thing's nearest training object."""

    def __init__(self, network: FeatureNetwork, config: MemorisationConfig, train_count: int | None,
                 heldout_count: int | None):
        self.network, self.config = network, config
        self.training = training_ring(network, config, train_count)
        baseline = heldout_ring(network, config, heldout_count)
        found = nearest_training(baseline.features, self.training, config)
        self.baseline = {"objects": baseline.names, "nearest": found.names, "distance": found.distance,
                         "rotation_deg": found.rotation_deg}
        self.settings = {"network": network.name, "config": config_to_dict(config), "train_objects": len(
            self.training.names), "train_checksum": _sha(" ".join(self.training.names).encode())}

    @torch.no_grad()
    def nearest(self, field: VoxelRadianceField, num_samples: int, background: float) -> dict:
        cams = ring_cameras(self.config).to(field.features.device)
        renders = render_volume(field, cams, num_samples=num_samples, background=background, stratified=False,
                                compute_normals=False).rgb.clamp(0, 1)
        features = ring_features(renders[None], self.network, self.config.batch_size)
        return nearest_training(features, self.training, self.config).rows()[0]


class VariantRunner:
    """Renders, measures and writes one sample of one variant (module docstring, steps 3, 6-8)."""

    def __init__(self, model: HoloFusionModel, grids: torch.Tensor, cameras: Cameras, args: argparse.Namespace,
                 distill: DistillConfig, memorisation: Memorisation, out: Path, device: torch.device, common: dict):
        self.model, self.grids, self.cameras, self.args = model, grids, cameras, args
        self.distill, self.memorisation, self.out, self.device = distill, memorisation, out, device
        self.common = common
        self.background = float(model.config.objective.background)

    def settings(self, variant: str) -> dict:
        s = {**self.common, "memorisation": self.memorisation.settings if THREE_D[variant] else None}
        if variant in ("sds", "mse", "patch_remix"):
            s["distill"] = {k: v for k, v in config_to_dict(replace(self.distill, loss=variant)).items()
                            if k not in ("device", "loop", "export")}
        return s

    def paths(self, variant: str, i: int) -> tuple[list[Path], Path]:
        folder = self.out / variant
        return ([folder / f"{i:03d}-{k:03d}.png" for k in range(self.args.views)],
                folder / "measures" / f"{i:03d}.json")

    def done(self, variant: str, i: int) -> dict | None:
        pngs, measures = self.paths(variant, i)
        record = _read_json(measures)
        if record and record.get("settings") == self.settings(variant) and all(p.is_file() for p in pngs):
            return record
        return None

    def coarse(self, i: int) -> VoxelRadianceField:
        return VoxelRadianceField.from_features(self.grids[i], self.model.decoder, self.model.config.grid)

    @torch.no_grad()
    def render(self, field: VoxelRadianceField, cameras: Cameras):
        return render_volume(field, cameras, num_samples=self.args.num_samples, background=self.background,
                             stratified=False, compute_normals=False)

    def run(self, variant: str, i: int) -> dict:
        """Make sample i of ``variant``: images, consistency, memorisation, seconds; written, and returned."""
        V, model, args = self.args.views, self.model, self.args
        cams = self.cameras[i * V:(i + 1) * V].to(self.device)
        coarse = self.coarse(i)
        thing = None
        _sync(self.device)
        start = time.perf_counter()
        if variant == "holodiffusion":
            out = self.render(coarse, cams)
            images, depth, alpha, thing = out.rgb.clamp(0, 1), out.depth, out.alpha, coarse
        elif variant == "holodiffusion_star":
            generator = torch.Generator(device=self.device).manual_seed(args.seed * 100_003 + i)
            images = holodiffusion_star_views(coarse, model.super_resolution, model.sr_schedule, cams,
                                              num_samples=args.num_samples, background=self.background,
                                              generator=generator).clamp(0, 1)
        else:
            config = replace(self.distill, loss=variant, seed=args.seed + i)
            thing = distill_sample(coarse, model.super_resolution, model.sr_schedule, config, None, progress=False)
            out = self.render(thing, cams)
            images, depth, alpha = out.rgb.clamp(0, 1), out.depth, out.alpha
        _sync(self.device)
        seconds = time.perf_counter() - start
        if variant == "holodiffusion_star":  # the coarse grid's depth at the high resolution (not timed)
            out = self.render(coarse, cams)
            depth, alpha = out.depth, out.alpha
        pngs, measures = self.paths(variant, i)
        measures.parent.mkdir(parents=True, exist_ok=True)
        write_pngs(images, pngs)
        record = {"settings": self.settings(variant), "seconds": seconds,
                  "consistency": view_consistency(images, cams, depth, alpha).summary(),
                  "memorisation": (self.memorisation.nearest(thing, args.num_samples, self.background)
                                   if thing is not None else None)}
        write_json_atomic(measures, record)
        return record


# --- FID / KID ------------------------------------------------------------------------------------------------


@torch.no_grad()
def predicted_shapes(files: list[Path], features: torch.Tensor, network: FeatureNetwork,
                     classifier: WorldClassifier | None) -> list[str]:
    """The world classifier's shape for each image: from the features themselves when they are the
    classifier's (its heads are linear in them), else by running the classifier on the images."""
    if isinstance(network, ClassifierFeatures):
        logits = network.classifier.heads["shape"](features.to(network.device))
    else:
        images = torch.stack([read_image(p) for p in files])
        logits = classifier.log_probs(images)["shape"]
    return [HEADS["shape"][int(i)] for i in logits.argmax(-1)]


def per_shape(fa: torch.Tensor, shapes_a: list[str], fr: torch.Tensor, shapes_r: list[str], subsets: int,
              seed: int) -> dict:
    """FID / KID per shape: generated images by predicted shape against reference images of that shape."""
    out = {}
    for shape in HEADS["shape"]:
        a = [k for k, s in enumerate(shapes_a) if s == shape]
        r = [k for k, s in enumerate(shapes_r) if s == shape]
        out[shape] = (feature_fid_kid(fa[a], fr[r], subsets, seed) if len(a) >= 2 and len(r) >= 2
                      else {"count": len(a), "count_reference": len(r)})
    return out


# --- the table ------------------------------------------------------------------------------------------------


def _fmt(value, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _intro(s: dict) -> str:
    return (f"{s['count']} unconditional samples x {s['views']} views at {s['resolution']} px (cameras: "
            f"{s['cameras']}); reference: {s['count'] * s['views']} exact renders of the {s['heldout_objects']} "
            "held-out objects, round robin, same camera distribution. FID / KID are overall (all shapes pooled: "
            f"unconditional samples have no class) with the `{s['features']}` features. Reprojection: error "
            "across neighbouring views of each sample (MAE, PSNR; 'visible' = share of pixels seen in the other "
            "view). Nearest-train ratio: median distance of the samples to their nearest training object / the "
            f"same median for the held-out objects (`{s['memorisation_features']}` features); 'closer' = share "
            "of samples nearer to a training object than any held-out object is. Seconds per sample: the "
            f"variant's own work, plus {_fmt(s['sampling_seconds_per_sample'], 2)} s of coarse sampling that all "
            f"share. Model `{s['model']}`, device {s['device']}.")


def _row(row: dict, count: int) -> str:
    c, m, p = row["consistency"], row["memorisation"] or {}, row["paper"]
    fid = _fmt(row.get("fid")) + ("" if row["complete"] else f" (incomplete {row['samples_done']}/{count})")
    kid = "-" if row.get("kid_mean") is None else f"{row['kid_mean']:.4f} ± {row['kid_std']:.4f}"
    change = "-" if row.get("fid_change_pct") is None else f"{row['fid_change_pct']:+.1f}%"
    cells = [row["label"], "yes" if row["three_d"] else "no", fid, kid, change, _fmt(c.get("mae"), 4),
             _fmt(c.get("psnr"), 2), _fmt(c.get("valid_share"), 2), _fmt(m.get("ratio"), 2),
             _fmt(m.get("share_closer_than_heldout"), 2), _fmt(row.get("seconds_per_sample"), 2),
             f"{p['fid']} / {p['kid']} ({'yes' if p['vp'] else 'no'})"]
    return "| " + " | ".join(cells) + " |"


def markdown(table: dict) -> str:
    """DIR/table.md: the main table, the aim, FID per predicted shape and the memorisation baseline."""
    s, ref, aim, base = table["setup"], table["reference"], table["aim"], table["memorisation_baseline"]
    header = ["variant", "3D", "FID", "KID (mean ± std)", "FID vs HoloDiffusion", "reproj. MAE", "reproj. PSNR",
              "visible", "nearest-train ratio", "closer", "s / sample", "paper FID / KID (VP)"]
    lines = ["# HoloFusion Tab. 1 on the world", "", _intro(s), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [_row(row, s["count"]) for row in table["rows"]]
    floor, rc = ref.get("floor"), ref["consistency"]
    floor_cells = ["-", "-"] if not floor else [_fmt(floor["fid"]), f"{floor['kid_mean']:.4f} ± {floor['kid_std']:.4f}"]
    cells = ["Reference (2nd held-out draw; exact depth)", "yes", *floor_cells, "-", _fmt(rc.get("mae"), 4),
             _fmt(rc.get("psnr"), 2), _fmt(rc.get("valid_share"), 2), "1", "-", "-", "-"]
    lines.append("| " + " | ".join(cells) + " |")
    here = "-" if aim["fid_change_pct"] is None else f"{aim['fid_change_pct']:+.1f}%"
    verdict = {True: "met", False: "not met", None: "not measured"}[aim["met"]]
    aim_line = (f"Aim: the paper's HoloFusion changes HoloDiffusion's FID by {PAPER_FID_CHANGE_PCT:+.1f}% "
                f"(122.5 -> 83.3); here {here} ({verdict}).")
    shapes = list(HEADS["shape"])
    shape_line = ("FID per predicted shape (generated images by the classifier's shape head, the reference by its "
                  "true shape; image counts in brackets; small sets, noisy):")
    lines += ["", aim_line, "", shape_line, "", "| variant | " + " | ".join(shapes) + " |",
              "|---|" + "---|" * len(shapes)]
    for row in table["rows"]:
        per = row.get("per_shape") or {}
        cells = ["-" if shape not in per else f"{_fmt(per[shape].get('fid'))} ({per[shape]['count']})"
                 for shape in shapes]
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    baseline = (f"Held-out baseline of the nearest-training-object distance: median {_fmt(base['median'], 3)}, "
                f"min {_fmt(base['min'], 3)}, {len(base['distance'])} held-out objects against "
                f"{base['train_objects']} training objects.")
    lines += ["", baseline, ""]
    return "\n".join(lines)


def build_table(args, variants, runner: VariantRunner, out: Path, reference: dict, floor_fid: dict | None,
                network: FeatureNetwork, classifier: WorldClassifier | None, sampling_seconds: float,
                memorisation: Memorisation, setup: dict) -> dict:
    ref_files = image_files(out / "reference")
    fr = folder_features(ref_files, network)
    rows = []
    heldout_distances = memorisation.baseline["distance"]
    for variant in variants:
        records = [runner.done(variant, i) for i in range(args.count)]
        finished = [r for r in records if r is not None]
        row = {"variant": variant, "label": LABELS[variant], "three_d": THREE_D[variant],
               "samples_done": len(finished), "complete": len(finished) == args.count,
               "paper": dict(zip(("fid", "kid", "vp"), PAPER[variant])),
               "consistency": _mean_consistency([r["consistency"] for r in finished]),
               "seconds_per_sample": (sum(r["seconds"] for r in finished) / len(finished) if finished else None),
               "memorisation": None, "fid": None}
        if finished:
            row["seconds_per_sample_with_sampling"] = row["seconds_per_sample"] + sampling_seconds
        mem = [r["memorisation"] for r in finished if r.get("memorisation")]
        if mem:
            row["memorisation"] = {**memorisation_summary([m["distance"] for m in mem], heldout_distances),
                                   "nearest": [m["nearest"] for m in mem], "distance": [m["distance"] for m in mem],
                                   "rotation_deg": [m["rotation_deg"] for m in mem]}
        if row["complete"]:
            files = [p for i in range(args.count) for p in runner.paths(variant, i)[0]]
            fa = folder_features(files, network)
            row.update(feature_fid_kid(fa, fr, args.kid_subsets, args.seed))
            shapes = predicted_shapes(files, fa, network, classifier)
            row["predicted_shapes"] = {s: shapes.count(s) for s in HEADS["shape"]}
            row["per_shape"] = per_shape(fa, shapes, fr, reference["shapes"], args.kid_subsets, args.seed)
        rows.append(row)
    base = next((r for r in rows if r["variant"] == "holodiffusion" and r["fid"] is not None), None)
    for row in rows:
        row["fid_change_pct"] = (100.0 * (row["fid"] - base["fid"]) / base["fid"]
                                 if base and row["fid"] is not None and base["fid"] > 0 else None)
    ours = next((r for r in rows if r["variant"] == "patch_remix"), None)
    change = ours["fid_change_pct"] if ours else None
    return {
        "setup": setup, "rows": rows,
        "reference": {"consistency": reference.get("consistency", {}), "floor": floor_fid,
                      "seconds_per_image": reference["seconds_per_image"]},
        "memorisation_baseline": {**memorisation.baseline, "train_objects": len(memorisation.training.names),
                                  "median": float(torch.tensor(heldout_distances).median()),  # lower median
                                  "min": min(heldout_distances)},
        "aim": {"paper_fid_change_pct": PAPER_FID_CHANGE_PCT, "fid_change_pct": change,
                "met": None if change is None else change <= PAPER_FID_CHANGE_PCT},
        "complete": all(r["complete"] for r in rows),
    }


def run_workers(args: argparse.Namespace, argv: list[str] | None, deadline: float | None) -> None:
    """``--jobs`` processes of this script on the same folder, worker k making the pairs k, k + jobs, ...
    (the samples, the cameras and the reference are already on disk); returns when all have ended. The
    caller then makes what is left and writes the table."""
    base = [sys.executable, str(Path(__file__).resolve()), *(sys.argv[1:] if argv is None else argv)]
    if deadline is not None:
        base += ["--max-minutes", repr(max(0.0, (deadline - time.monotonic()) / 60.0))]
    workers = [subprocess.Popen([*base, "--worker", f"{k}/{args.jobs}"]) for k in range(args.jobs)]
    failed = [w.args[-1] for w in workers if w.wait() != 0]
    if failed:
        print(f"holofusion_table: workers {', '.join(failed)} failed; their samples are made here", flush=True)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    began = time.monotonic()
    deadline = began + 60.0 * args.max_minutes if args.max_minutes is not None else None
    device = pick_device(args.device)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    model = load_holofusion(args.model, device)
    needs_sr = [v for v in args.variant_list if v != "holodiffusion"]
    if needs_sr and model.super_resolution is None:
        raise UserError(f"{args.model} has no super-resolution model (D_beta), needed by {', '.join(needs_sr)}; "
                        "use --variants holodiffusion")
    cfg = model.config
    resolution = cfg.grid.resolution * cfg.super_resolution.scale
    distill = DistillConfig(low_resolution=cfg.render_resolution, device=str(device), seed=args.seed,
                            **({"steps": args.distill_steps} if args.distill_steps else {}))
    distill = apply_overrides(distill, args.distill_set)

    weights = model_checksum(args.model)
    grids, sampling_seconds = coarse_samples(model, args, out, device, weights)
    grids_sum = _sha(grids.float().cpu().numpy().tobytes())
    N = args.count * args.views
    cams = draw_cameras(model, N, resolution, args.seed)
    ref_cams = draw_cameras(model, N, resolution, args.seed + 1)
    floor_cams = draw_cameras(model, N, resolution, args.seed + 2)
    write_json_atomic(out / "cameras.json", {"samples": cams.to_dicts(), "reference": ref_cams.to_dicts(),
                                             "reference_floor": floor_cams.to_dicts()})
    ref_settings = {"count": N, "resolution": resolution, "seed": args.seed, "cameras": _sha(
        ref_cams.c2w.numpy().tobytes(), ref_cams.K.numpy().tobytes())}
    reference = reference_set(out / "reference", ref_cams, ref_settings, device, consistency=True)

    network = feature_network(args.features, device)
    mem_name = args.memorisation_features or args.features
    mem_network = PixelFeatures(32, device) if mem_name == "pixels" else (
        network if mem_name == args.features else feature_network(mem_name, device))
    mem_config = MemorisationConfig(resolution=args.memorisation_resolution)
    memorisation = Memorisation(mem_network, mem_config, args.memorisation_train_objects,
                                args.memorisation_heldout_objects)

    common = {"model": weights, "grids": grids_sum, "views": args.views, "resolution": resolution,
              "num_samples": args.num_samples, "seed": args.seed, "cameras": _sha(cams.c2w.numpy().tobytes())}
    runner = VariantRunner(model, grids, cams, args, distill, memorisation, out, device, common)
    pairs = [(variant, i) for variant in args.variant_list for i in range(args.count)]
    if args.worker is not None:
        k, n = (int(x) for x in args.worker.split("/"))
        pairs = pairs[k::n]
    elif args.jobs > 1:
        run_workers(args, argv, deadline)
    for variant, i in pairs:
        if runner.done(variant, i):
            continue
        if deadline is not None and time.monotonic() > deadline:
            break
        record = runner.run(variant, i)
        print(f"holofusion_table: {variant} sample {i + 1}/{args.count}: {record['seconds']:.1f} s, "
              f"reprojection MAE {record['consistency']['mae']:.4f}", flush=True)
    if args.worker is not None:
        return {}

    floor = None
    if not args.no_reference_floor:
        floor_settings = {**ref_settings, "seed": args.seed + 2, "cameras": _sha(floor_cams.c2w.numpy().tobytes())}
        reference_set(out / "reference_floor", floor_cams, floor_settings, device, consistency=False)
        floor = feature_fid_kid(folder_features(image_files(out / "reference_floor"), network),
                        folder_features(image_files(out / "reference"), network), args.kid_subsets, args.seed)
    classifier = None if isinstance(network, ClassifierFeatures) else WorldClassifier.from_pretrained(device=device)
    v = cfg.views
    setup = {"model": str(args.model), "weights": weights, "count": args.count, "views": args.views,
             "resolution": resolution, "features": network.name, "memorisation_features": mem_network.name,
             "cameras": f"directions uniform on the sphere band of elevation {v.elevation_range[0]:g}..."
                        f"{v.elevation_range[1]:g} deg, distance {v.distance:g}, fovy {v.fovy:g} (the world training views)",
             "heldout_objects": len(heldout_objects()), "sample_steps": args.sample_steps,
             "sampling_seconds_per_sample": sampling_seconds, "num_samples": args.num_samples,
             "distill": config_to_dict(distill), "device": str(device), "seed": args.seed,
             "memorisation": memorisation.settings, "call_seconds": None}
    table = build_table(args, args.variant_list, runner, out, reference, floor, network, classifier,
                        sampling_seconds, memorisation, setup)
    table["setup"]["call_seconds"] = time.monotonic() - began
    write_json_atomic(out / "table.json", table)
    text = markdown(table)
    (out / "table.md").write_text(text)
    write_rows_sheet(out, args.variant_list, args.count)
    print(text)
    if not table["complete"]:
        print("holofusion_table: incomplete (time box reached); run the same command again to continue")
    return table


if __name__ == "__main__":
    try:
        main()
    except UserError as error:
        print(f"holofusion_table: {error}", file=sys.stderr)
        sys.exit(2)
