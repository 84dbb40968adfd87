"""Perceptual distances (distill3d.eval.perceptual): the world classifier's features and LPIPS from files."""

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from distill3d.cameras import orbit_cameras
from distill3d.errors import UserError
from distill3d.eval.perceptual import MIN_SIZE, ClassifierFeatureDistance, LPIPSDistance, perceptual_distance
from distill3d.world import WorldObject
from distill3d.world.reference_render import render_reference

OBJECTS = [WorldObject("red", "striped", "mug"), WorldObject("blue", "plain", "torus"),
           WorldObject("green", "checkered", "cube"), WorldObject("yellow", "two-tone", "sphere")]


@pytest.fixture(scope="module")
def renders() -> torch.Tensor:
    """[4, 64, 64, 3] reference renders of four objects."""
    cams = orbit_cameras(torch.tensor([20.0, 35.0, 10.0, 50.0]), torch.tensor([30.0, 120.0, 210.0, 300.0]),
                         torch.full((4,), 2.2), torch.full((4,), 40.0), 64, 64)
    return render_reference(OBJECTS, cams, supersample=1).rgb


@pytest.fixture(scope="module")
def classifier_distance() -> ClassifierFeatureDistance:
    return perceptual_distance("classifier", "cpu")


def _blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of images [B, H, W, 3] (reflect padding)."""
    r = int(3 * sigma) + 1
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    y = F.pad(images.permute(0, 3, 1, 2), (r, r, r, r), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    y = F.conv2d(y, k.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
    return y.permute(0, 2, 3, 1)


def _random_lpips_files(tmp_path, net="alex"):
    """Random LPIPS weights written as the real files are laid out: a torchvision backbone state dict
    (safetensors, with a classifier head that must be ignored) and LPIPS's lin file (torch.save)."""
    model = LPIPSDistance(net)
    for lin in model.lins:
        lin.weight.abs_()  # LPIPS keeps its lin weights non-negative
    backbone = {k: v.clone() for k, v in model.trunk.state_dict().items()}
    backbone["classifier.1.weight"] = torch.zeros(4, 9216)
    linear = {f"lin{k}.model.1.weight": lin.weight.clone() for k, lin in enumerate(model.lins)}
    save_file(backbone, str(tmp_path / "backbone.safetensors"))
    torch.save(linear, tmp_path / "lin.pth")
    return model, tmp_path / "backbone.safetensors", tmp_path / "lin.pth"


def test_the_classifier_distance_reads_the_four_stages_of_the_shipped_classifier(classifier_distance, renders):
    d = classifier_distance
    assert isinstance(d, ClassifierFeatureDistance) and d.stage_channels == (32, 64, 128, 256)
    shapes = [tuple(f.shape) for f in d.features(renders[:2])]
    assert shapes == [(2, 32, 64, 64), (2, 64, 32, 32), (2, 128, 16, 16), (2, 256, 8, 8)]
    assert d(renders[:2], renders[[1, 0]]).shape == (2,)
    assert d.per_stage(renders[:2], renders[[1, 0]]).shape == (2, 4)
    half = _blur(renders[:2], 1.0)[:, ::2, ::2]  # other sizes are resized to 64x64 by the classifier
    assert d(half, half).abs().max() < 1e-5


def test_identical_images_are_at_zero_and_other_objects_are_far(classifier_distance, renders):
    assert classifier_distance(renders, renders.clone()).abs().max() < 1e-5
    other = classifier_distance(renders, renders.roll(1, dims=0))
    noisy = classifier_distance(renders, (renders + 0.02 * torch.randn_like(renders)).clamp(0, 1))
    assert (other > 3 * noisy).all(), (other, noisy)


def test_the_classifier_distance_grows_with_noise_and_blur(classifier_distance, renders):
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(renders.shape, generator=g)
    by_noise = torch.stack([classifier_distance(renders, (renders + s * noise).clamp(0, 1))
                            for s in (0.02, 0.05, 0.1, 0.2)])  # [levels, B]
    by_blur = torch.stack([classifier_distance(renders, _blur(renders, s)) for s in (0.5, 1.0, 2.0, 3.0)])
    for name, d in (("noise", by_noise), ("blur", by_blur)):
        assert (d > 0).all() and (d[1:] > d[:-1]).all(), f"{name}: {d}"


def test_gradients_reach_both_images_and_not_the_network(classifier_distance, renders):
    a = renders.clone().requires_grad_(True)
    b = _blur(renders, 1.0).requires_grad_(True)
    classifier_distance(a, b).sum().backward()
    for x in (a, b):
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    params = list(classifier_distance.classifier.parameters())
    assert params and all(not p.requires_grad and p.grad is None for p in params)
    # a few steps of gradient descent on an image bring it nearer the other
    x = b.detach().clone().requires_grad_(True)
    start = classifier_distance(renders, x).sum().item()
    opt = torch.optim.Adam([x], lr=0.01)
    for _ in range(5):
        opt.zero_grad()
        classifier_distance(renders, x).sum().backward()
        opt.step()
    assert classifier_distance(renders, x.detach()).sum().item() < start


def test_lpips_loads_from_files_and_matches_the_weights_it_was_given(tmp_path, renders):
    model, backbone, linear = _random_lpips_files(tmp_path)
    loaded = perceptual_distance(f"lpips:{backbone}:{linear}", "cpu")
    assert isinstance(loaded, LPIPSDistance) and loaded.net == "alex"
    assert loaded.stage_channels == (64, 192, 384, 256, 256)
    for k, v in model.trunk.state_dict().items():
        assert torch.equal(loaded.trunk.state_dict()[k], v)
    for mine, theirs in zip(model.lins, loaded.lins):
        assert torch.equal(mine.weight, theirs.weight)
    b = _blur(renders, 1.5)
    assert torch.allclose(loaded(renders, b), model(renders, b))
    assert loaded(renders, renders.clone()).abs().max() < 1e-6 and (loaded(renders, b) > 0).all()
    # the lins.K spelling of the lin keys (a full LPIPS state dict) loads as well
    torch.save({f"lins.{k}.model.1.weight": lin.weight for k, lin in enumerate(model.lins)}, tmp_path / "lins.pth")
    again = LPIPSDistance.from_files(backbone, tmp_path / "lins.pth")
    assert torch.equal(again.lins[2].weight, model.lins[2].weight)
    a = renders.clone().requires_grad_(True)
    loaded(a, b).sum().backward()
    assert torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in [*loaded.trunk.parameters(), *loaded.lins.parameters()])


def test_the_vgg_trunk_is_laid_out_as_torchvision_numbers_it():
    model = LPIPSDistance("vgg")
    convs = {int(k.split(".")[1]) for k in model.trunk.state_dict()}
    assert convs == {0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28}
    assert model.trunk.taps == [3, 8, 15, 22, 29] and model.stage_channels == (64, 128, 256, 512, 512)
    x = torch.rand(1, MIN_SIZE["vgg"], MIN_SIZE["vgg"], 3)
    assert [f.shape[-1] for f in model.features(x)] == [16, 8, 4, 2, 1]
    with pytest.raises(ValueError, match="at least"):
        model.features(torch.rand(1, 8, 8, 3))


def test_missing_or_wrong_files_are_user_errors(tmp_path):
    _, backbone, linear = _random_lpips_files(tmp_path)
    with pytest.raises(UserError, match="no LPIPS backbone file.*alexnet-owt-7be5be79"):
        LPIPSDistance.from_files(tmp_path / "absent.pth", linear)
    with pytest.raises(UserError, match="no LPIPS linear weights file.*PerceptualSimilarity"):
        LPIPSDistance.from_files(backbone, tmp_path / "absent.pth")
    with pytest.raises(UserError, match="does not fit LPIPS"):
        LPIPSDistance.from_files(backbone, linear, net="vgg")
    save_file({"lin0.model.1.weight": torch.ones(1, 64, 1, 1)}, str(tmp_path / "short.safetensors"))
    with pytest.raises(UserError, match="missing"):
        LPIPSDistance.from_files(backbone, tmp_path / "short.safetensors")
    with pytest.raises(UserError, match="not a torchvision AlexNet or VGG16"):
        LPIPSDistance.from_files(linear, linear)
    for name in ("lpips", f"lpips:{backbone}", "vgg", "classifier:/no/such/folder"):
        with pytest.raises(UserError):
            perceptual_distance(name, "cpu")
