"""GaussianBatch and render_gaussian_batch: S scenes rendered in one call equal S single renders."""

import pytest
import torch
import torch.nn.functional as F

from distill3d.cameras import orbit_cameras
from distill3d.errors import UserError
from distill3d.export.ply import read_gaussians_ply, write_gaussians_ply
from distill3d.render import splat
from distill3d.render.splat import (
    gsplat_available,
    render_gaussian_batch,
    render_gaussians,
)
from distill3d.render.splat_torch import rasterization_torch
from distill3d.scene.gaussian_batch import GaussianBatch
from distill3d.scene.gaussians import Gaussians

S, N, V, RES = 3, 200, 2, 24


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny renders gain nothing from intra-op threads and lose much when cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_batch(s=S, n=N, seed=0, device="cpu") -> GaussianBatch:
    """s different random objects in a ball of radius 0.6 (activated values)."""
    g = torch.Generator().manual_seed(seed)
    dirs = F.normalize(torch.randn(s, n, 3, generator=g), dim=-1)
    means = 0.6 * dirs * torch.rand(s, n, 1, generator=g) ** (1 / 3)
    quats = F.normalize(torch.randn(s, n, 4, generator=g), dim=-1)
    scales = 0.02 + 0.06 * torch.rand(s, n, 3, generator=g)
    opacities = 0.2 + 0.7 * torch.rand(s, n, generator=g)
    colours = torch.rand(s, n, 3, generator=g)
    return GaussianBatch(means, quats, scales, opacities, colours).to(device)


def make_cameras(s=S, v=V, res=RES, device="cpu"):
    """s * v orbit cameras, scene-major, all different."""
    k = s * v
    return orbit_cameras(torch.linspace(-10.0, 40.0, k), torch.linspace(-170.0, 150.0, k), 2.4, 40.0,
                         res, res).to(device)


def per_scene(batch, cams, v, background):
    """Each scene rendered alone with render_gaussians, concatenated: rgb, alpha, depth [S * V, ...]."""
    outs = []
    for i in range(len(batch)):
        bg = background[i * v:(i + 1) * v] if torch.is_tensor(background) and background.ndim == 2 else background
        outs.append(render_gaussians(batch.scene(i), cams[i * v:(i + 1) * v], background=bg, backend="torch"))
    return [torch.cat([getattr(o, name) for o in outs]) for name in ("rgb", "alpha", "depth")]


# ---------------------------------------------------------------------- the container
def test_scene_round_trips_the_activated_values(tmp_path):
    batch = make_batch()
    assert len(batch) == S and batch.num_gaussians == N
    for i in (0, 2, -1):
        g = batch.scene(i)
        assert isinstance(g, Gaussians) and len(g) == N and g.sh_degree == 0
        expected = {"means": batch.means[i], "rotations": batch.quats[i], "scales": batch.scales[i],
                    "opacities": batch.opacities[i], "rgb": batch.colours[i]}
        for name, want in expected.items():
            assert torch.allclose(getattr(g, name), want, atol=1e-5, rtol=0), name
    # ... and through the standard 3DGS .ply
    back = read_gaussians_ply(write_gaussians_ply(tmp_path / "object1.ply", batch.scene(1)))
    assert torch.allclose(back.scales, batch.scales[1], atol=1e-5, rtol=0)
    assert torch.allclose(back.opacities, batch.opacities[1], atol=1e-5, rtol=0)
    assert torch.allclose(back.rgb, batch.colours[1], atol=1e-5, rtol=0)
    with pytest.raises(IndexError):
        batch.scene(S)


def test_scene_and_to_keep_gradients():
    leaves = [t.clone().requires_grad_() for t in make_batch(s=2, n=5).tensors().values()]
    batch = GaussianBatch(*leaves).to("cpu", torch.float64)
    assert batch.dtype == torch.float64
    g = batch.scene(1)
    (g.means.sum() + g.scales.sum() + g.opacities.sum() + g.rgb.sum() + g.rotations.sum()).backward()
    for leaf in leaves:
        assert leaf.grad is not None and leaf.grad[1].abs().sum() > 0 and leaf.grad[0].abs().sum() == 0


def test_accelerate_mixed_precision_output_converts_to_float32():
    """accelerate wraps a bf16 model's output in ``convert_to_fp32``, which calls ``.float()`` on anything
    with a half dtype: a student's GaussianBatch must come back as a float32 batch, still differentiable."""
    from accelerate.utils import convert_to_fp32

    leaf = make_batch(s=2, n=5).means.clone().requires_grad_()
    half = GaussianBatch(leaf, *list(make_batch(s=2, n=5).tensors().values())[1:]).to(dtype=torch.bfloat16)
    back = convert_to_fp32(half)
    assert isinstance(back, GaussianBatch) and back.dtype == torch.float32
    back.means.sum().backward()
    assert leaf.grad is not None and torch.all(leaf.grad == 1)


@pytest.mark.parametrize("name, shape", [  # for a batch of 3 scenes of 10 Gaussians
    ("means", (3, 10)), ("means", (10, 3)), ("quats", (3, 10, 3)), ("scales", (3, 9, 3)),
    ("opacities", (3, 10, 1)), ("colours", (3, 10, 4)), ("colours", (4, 10, 3)),
])
def test_bad_shapes_raise(name, shape):
    fields = make_batch(s=3, n=10).tensors()
    fields[name] = torch.zeros(shape)
    with pytest.raises(ValueError, match=name):
        GaussianBatch(**fields)


# ---------------------------------------------------------------------- rendering
def test_batched_render_equals_each_scene_alone():
    batch, cams = make_batch(), make_cameras()
    for background in (1.0, torch.rand(S * V, 3, generator=torch.Generator().manual_seed(3))):
        out = render_gaussian_batch(batch, cams, background=background, backend="torch")
        assert out.rgb.shape == (S * V, RES, RES, 3) and out.alpha.shape == (S * V, RES, RES, 1)
        assert out.depth.shape == (S * V, RES, RES, 1) and out.normal is None
        for got, want in zip((out.rgb, out.alpha, out.depth), per_scene(batch, cams, V, background)):
            assert torch.allclose(got, want, atol=5e-6, rtol=1e-6)
    assert (out.alpha > 0.5).any() and (out.alpha == 0).any()  # objects and empty background in view
    # a [S, 3] background is one colour per scene
    per_object = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    a = render_gaussian_batch(batch, cams, background=per_object, backend="torch")
    b = render_gaussian_batch(batch, cams, background=per_object.repeat_interleave(V, 0), backend="torch")
    assert torch.equal(a.rgb, b.rgb)


def test_gradients_reach_every_attribute_and_match_per_scene():
    batch, cams = make_batch(), make_cameras()
    leaves = {name: t.clone().requires_grad_() for name, t in batch.tensors().items()}
    batch = GaussianBatch(**leaves)
    g = torch.Generator().manual_seed(1)
    w = [torch.rand(S * V, RES, RES, c, generator=g) for c in (3, 1, 1)]

    out = render_gaussian_batch(batch, cams, background=0.3, backend="torch")
    sum(((o * wi).sum() for o, wi in zip((out.rgb, out.alpha, out.depth), w))).backward()
    batched = {name: t.grad.clone() for name, t in leaves.items()}
    for t in leaves.values():
        t.grad = None

    sum(((o * wi).sum() for o, wi in zip(per_scene(batch, cams, V, 0.3), w))).backward()
    for name, t in leaves.items():
        grad = batched[name]
        assert torch.isfinite(grad).all(), name
        for i in range(S):
            assert grad[i].abs().sum() > 0, f"no gradient reaches {name} of scene {i}"
        assert torch.allclose(grad, t.grad, rtol=1e-4, atol=1e-5 * t.grad.abs().max().item()), name


def test_camera_count_and_background_are_checked():
    batch, cams = make_batch(n=10), make_cameras()
    with pytest.raises(ValueError, match="cameras"):
        render_gaussian_batch(batch, cams[:5], backend="torch")
    with pytest.raises(ValueError, match="background"):
        render_gaussian_batch(batch, cams, background=torch.ones(4, 3), backend="torch")
    with pytest.raises(UserError):  # gsplat needs CUDA tensors (and gsplat)
        render_gaussian_batch(batch, cams, backend="gsplat")


def test_gsplat_branch_passes_batch_dimensions(monkeypatch):
    """The gsplat branch, run on CPU with a stand-in that checks gsplat's batched shapes (>= 1.5.3)
    and renders with rasterization_torch; and the scene-by-scene call for an older gsplat."""
    batch, cams = make_batch(n=50), make_cameras()
    calls = []

    def batched_stand_in(means, quats, scales, opacities, colors, viewmats, Ks, width, height, *, packed, **kw):
        calls.append(means.shape)
        assert means.shape == (S, 50, 3) and quats.shape == (S, 50, 4) and scales.shape == (S, 50, 3)
        assert opacities.shape == (S, 50) and colors.shape == (S, 50, 3)
        assert viewmats.shape == (S, V, 4, 4) and Ks.shape == (S, V, 3, 3) and (width, height) == (RES, RES)
        assert packed is False and kw["render_mode"] == "RGB+ED" and all(t.is_contiguous() for t in (means, Ks))
        outs = [rasterization_torch(means[i], quats[i], scales[i], opacities[i], colors[i], viewmats[i], Ks[i],
                                    width, height, **kw)[:2] for i in range(S)]
        return torch.stack([o[0] for o in outs]), torch.stack([o[1] for o in outs]), {}

    def single_stand_in(means, *args, packed, **kw):
        calls.append(means.shape)
        assert means.shape == (50, 3) and args[4].shape == (V, 4, 4) and packed is False
        return rasterization_torch(means, *args, **kw)

    want = render_gaussian_batch(batch, cams, backend="torch")
    monkeypatch.setattr(splat, "resolve_backend", lambda backend, device: "gsplat")
    for takes_batches, stand_in, n_calls in ((True, batched_stand_in, 1), (False, single_stand_in, S)):
        calls.clear()
        monkeypatch.setattr(splat, "_gsplat_rasterization", lambda f=stand_in: f)
        monkeypatch.setattr(splat, "_gsplat_takes_batch_dims", lambda b=takes_batches: b)
        got = render_gaussian_batch(batch, cams, backend="gsplat")
        assert len(calls) == n_calls
        for a, b in zip((got.rgb, got.alpha, got.depth), (want.rgb, want.alpha, want.depth)):
            assert torch.equal(a, b)


def test_gsplat_branch_gets_float32_from_a_bf16_batch(monkeypatch):
    """gsplat has no bf16 kernels: a bf16 batch (a student under autocast) reaches it in float32."""
    batch, cams = make_batch(n=20), make_cameras()
    seen = []

    def stand_in(means, quats, scales, opacities, colors, viewmats, Ks, width, height, *, packed, **kw):
        seen.extend(t.dtype for t in (means, quats, scales, opacities, colors, viewmats, Ks))
        outs = [rasterization_torch(means[i], quats[i], scales[i], opacities[i], colors[i], viewmats[i], Ks[i],
                                    width, height, **kw)[:2] for i in range(S)]
        return torch.stack([o[0] for o in outs]), torch.stack([o[1] for o in outs]), {}

    monkeypatch.setattr(splat, "resolve_backend", lambda backend, device: "gsplat")
    monkeypatch.setattr(splat, "_gsplat_rasterization", lambda: stand_in)
    monkeypatch.setattr(splat, "_gsplat_takes_batch_dims", lambda: True)
    out = render_gaussian_batch(batch.to(dtype=torch.bfloat16), cams, backend="gsplat")
    assert seen and set(seen) == {torch.float32} and out.rgb.dtype == torch.float32


@pytest.mark.skipif(not (torch.cuda.is_available() and gsplat_available()), reason="needs CUDA and gsplat")
def test_gsplat_batched_matches_torch():
    batch, cams = make_batch(device="cuda"), make_cameras(device="cuda")
    leaves = {name: t.clone().requires_grad_() for name, t in batch.tensors().items()}
    w = torch.rand(S * V, RES, RES, 3, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    results = {}
    for backend in ("gsplat", "torch"):
        out = render_gaussian_batch(GaussianBatch(**leaves), cams, background=0.5, backend=backend)
        grads = torch.autograd.grad((out.rgb * w).sum() + out.alpha.sum(), list(leaves.values()))
        results[backend] = (out, grads)
    (a, ga), (b, gb) = results["gsplat"], results["torch"]
    assert torch.allclose(a.rgb, b.rgb, atol=1e-4) and torch.allclose(a.alpha, b.alpha, atol=1e-4)
    hit = (a.alpha > 0.05) & (b.alpha > 0.05)
    assert torch.allclose(a.depth[hit], b.depth[hit], rtol=1e-3, atol=1e-3)
    for name, x, y in zip(leaves, ga, gb):
        assert torch.allclose(x, y, rtol=1e-2, atol=1e-3 * y.abs().max().item()), name
    if splat._gsplat_takes_batch_dims():  # one call with [S, ...] inputs: S images per call, not S calls
        assert a.rgb.shape == (S * V, RES, RES, 3)
