"""DD3G speed: collection throughput, training throughput and inference time (the DD3G issue's item 8;
the paper: 0.06 s per object on an A100; the targets here: <= 10 ms at batch 1, >= 500 objects/s batched).

    python benchmarks/bench_dd3g.py --out dd3g_speed.json [--model STUDENT] [--collect 256 | --data DIR]

1. Collection: ``collect_quadruples`` of ``--collect`` items (50 DDIM steps, batches of 64) into a
   temporary folder; items per second, the teacher's loading included.
2. Training: ``--train-steps`` steps of ``DD3GTask.loss`` + backward + Adam on those quadruples (or on the
   collected folder ``--data``) at ``--batch-size`` under bf16 autocast on CUDA, the implicit verification
   on; steps and quadruples per second after ``--warmup`` steps.
3. Inference: the student (``--model``, or the default untrained ``PEPDConfig`` when none is given:
   the same cost) on one image and on ``--batch`` images; median of ``--repeats`` timed calls, CUDA
   synchronised. Reported without and with rendering the Gaussians once (4 views at 64 x 64); on CUDA
   also for the student replayed from CUDA graphs (``GraphedStudent``, keys ``graphed_...``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from distill3d.cameras import Cameras, orbit_cameras
from distill3d.devices import pick_device
from distill3d.eval.perceptual import perceptual_distance
from distill3d.methods.dd3g.collect import CollectConfig, collect_quadruples
from distill3d.methods.dd3g.infer import GraphedStudent, load_student, predict_gaussians
from distill3d.methods.dd3g.student import PEPDConfig, PEPDStudent
from distill3d.methods.dd3g.train import DD3GTask, DD3GTrainConfig, tiny_student
from distill3d.optim import OptimConfig
from distill3d.random_streams import Generators
from distill3d.render.splat import render_gaussian_batch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of ``repeats`` calls of fn (after one untimed call)."""
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", default=None, help="a trained student (default: an untrained default one)")
    parser.add_argument("--collect", type=int, default=256, help="quadruples to collect (0: skip 1)")
    parser.add_argument("--data", default=None, help="train on this collected folder instead (skips 1)")
    parser.add_argument("--ddim-steps", type=int, default=50)
    parser.add_argument("--train-steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16, help="training batch")
    parser.add_argument("--batch", type=int, default=256, help="inference batch")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--tiny", action="store_true", help="tiny student (CPU smoke test)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = pick_device(args.device)
    student_config = tiny_student() if args.tiny else PEPDConfig()
    result: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                    "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else Path(tmp) / "q"
        if args.collect and not args.data:
            start = time.perf_counter()
            collect_quadruples(CollectConfig(count=args.collect, ddim_steps=args.ddim_steps, device=str(device)),
                               data, progress=False)
            seconds = time.perf_counter() - start
            result["collection"] = {"items": args.collect, "ddim_steps": args.ddim_steps, "seconds": seconds,
                                    "items_per_second": args.collect / seconds}
        if args.collect or args.data:
            config = DD3GTrainConfig(data=str(data), student=student_config, steps=10 ** 6,
                                     optim=OptimConfig(batch_size=args.batch_size, lr=1e-5, warmup_steps=1))
            task = DD3GTask(config, lambda d: perceptual_distance(config.perceptual, d))
            model = task.build_model().to(device)
            source = task.build_source(device)
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
            generators = Generators.seeded(0, 0, device)

            def train_step(step: int) -> None:
                source.maybe_refresh(step, generators.data)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    loss = task.loss(model, source, args.batch_size, generators)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            for i in range(args.warmup):
                train_step(10 ** 5 + i)  # late steps: the implicit verification is on (beta > 0)
            sync(device)
            start = time.perf_counter()
            for i in range(args.train_steps):
                train_step(10 ** 5 + args.warmup + i)
            sync(device)
            seconds = time.perf_counter() - start
            result["training"] = {"batch_size": args.batch_size, "steps": args.train_steps,
                                  "steps_per_second": args.train_steps / seconds,
                                  "quadruples_per_second": args.train_steps * args.batch_size / seconds,
                                  "peak_memory_gib": (torch.cuda.max_memory_allocated(device) / 2 ** 30
                                                      if device.type == "cuda" else None)}
    if args.model:
        student, _ = load_student(args.model, device)
    else:
        student = PEPDStudent(student_config).to(device).eval().requires_grad_(False)
    R, K = student.config.image_size, student.config.num_views
    params = torch.tensor([[15.0, 0.0, 2.6, 40.0]] + [[15.0, 90.0 * k, 2.6, 40.0] for k in range(K)])
    views = orbit_cameras(torch.full((K,), 15.0), 90.0 * torch.arange(K, dtype=torch.float32), 2.6, 40.0, R, R)
    models = {"": student}
    if device.type == "cuda":  # the student replayed from CUDA graphs (GraphedStudent)
        models["graphed_"] = GraphedStudent(student)
    for prefix, model in models.items():
        for batch in (1, args.batch):
            images = torch.rand(batch, R, R, 3, device=device)
            p = params[None].expand(batch, -1, -1)
            generator = torch.Generator().manual_seed(0)
            seconds = timed(lambda: predict_gaussians(model, images, p, generator), device, args.repeats)
            with_render = timed(lambda: render_gaussian_batch(predict_gaussians(model, images, p, generator),
                                                              repeat_cameras(views, batch).to(device)), device,
                                args.repeats)
            result[f"{prefix}inference_batch_{batch}"] = {"seconds": seconds, "objects_per_second": batch / seconds,
                                                          "seconds_with_render": with_render}
    result["student_parameters"] = sum(p.numel() for p in student.parameters())
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


def repeat_cameras(cameras: Cameras, times: int) -> Cameras:
    """The cameras [V] repeated for ``times`` scenes, scene-major [times * V]."""
    return Cameras.cat([cameras] * times)


if __name__ == "__main__":
    main()
