"""FID and KID (distill3d.eval.fid) and their feature networks (distill3d.eval.feature_networks)."""

import sys

import numpy as np
import pytest
import torch

from distill3d.cameras import orbit_cameras
from distill3d.cli import main
from distill3d.data.layout import encode_rgba_png, straight_rgba
from distill3d.errors import UserError
from distill3d.eval import feature_networks
from distill3d.eval.feature_networks import (
    ClassifierFeatures,
    InceptionFeatures,
    feature_network,
)
from distill3d.eval.fid import (
    FolderFIDConfig,
    feature_fid_kid,
    feature_statistics,
    fid_between_folders,
    frechet_distance,
    image_files,
    kernel_inception_distance,
    mmd2_unbiased,
    read_image,
)
from distill3d.world import WorldObject
from distill3d.world.reference_render import render_reference

# --- Frechet distance ----------------------------------------------------------------------------


def _random_rotation(d: int, g: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q * r.diagonal().sign()


def _random_spd(d: int, g: torch.Generator, rank: int | None = None) -> torch.Tensor:
    a = torch.randn(d, rank or d, generator=g, dtype=torch.float64)
    return a @ a.T + (0 if rank else 0.1) * torch.eye(d, dtype=torch.float64)


def _fd_by_eig(mu1, s1, mu2, s2) -> float:
    """|mu1 - mu2|^2 + tr(S1 + S2) - 2 tr((S1 S2)^(1/2)), the root's trace from the eigenvalues of S1 S2
    (real and non-negative: S1 S2 is similar to a PSD matrix), by the general (non-symmetric) solver."""
    eig = torch.linalg.eigvals(s1 @ s2).real.clamp_min(0)
    return float((mu1 - mu2).pow(2).sum() + s1.trace() + s2.trace() - 2 * eig.sqrt().sum())


def test_frechet_distance_of_commuting_gaussians_is_the_closed_form():
    g = torch.Generator().manual_seed(0)
    d = 6
    a, b = torch.rand(d, generator=g, dtype=torch.float64) * 3, torch.rand(d, generator=g, dtype=torch.float64) * 3
    mu1, mu2 = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    closed_form = float((mu1 - mu2).pow(2).sum() + (a.sqrt() - b.sqrt()).pow(2).sum())
    assert frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(closed_form, rel=1e-10)
    q = _random_rotation(d, g)  # rotate both covariances alike: they still commute, the distance is unchanged
    fd = frechet_distance(q @ mu1, q @ torch.diag(a) @ q.T, q @ mu2, q @ torch.diag(b) @ q.T)
    assert fd == pytest.approx(closed_form, rel=1e-9)
    assert frechet_distance(mu1, torch.diag(a), mu1, torch.diag(a)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("rank", [None, 3])  # full-rank covariances, and singular ones (fewer samples than D)
def test_frechet_distance_of_general_gaussians_matches_an_eig_based_computation(rank):
    g = torch.Generator().manual_seed(1)
    d = 8
    mu1, mu2 = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    s1, s2 = _random_spd(d, g, rank), _random_spd(d, g, rank)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_fd_by_eig(mu1, s1, mu2, s2), rel=1e-8, abs=1e-8)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-6)
    # float32 statistics are taken to float64 first
    assert frechet_distance(mu1.float(), s1.float(), mu2.float(), s2.float()) == pytest.approx(
        _fd_by_eig(mu1, s1, mu2, s2), rel=1e-5)


def test_feature_statistics_are_the_mean_and_the_unbiased_covariance():
    f = torch.randn(50, 4, generator=torch.Generator().manual_seed(2))
    mu, sigma = feature_statistics(f)
    assert mu.dtype == sigma.dtype == torch.float64
    torch.testing.assert_close(mu, f.double().mean(0))
    torch.testing.assert_close(sigma, torch.from_numpy(np.cov(f.double().numpy(), rowvar=False)))
    with pytest.raises(UserError):
        feature_statistics(f[:1])


def test_fd_of_sampled_features_converges_to_the_true_distance():
    g = torch.Generator().manual_seed(3)
    d = 3
    mu1, mu2 = torch.zeros(d, dtype=torch.float64), torch.tensor([0.5, -0.3, 0.2], dtype=torch.float64)
    s1, s2 = _random_spd(d, g), _random_spd(d, g)
    truth = _fd_by_eig(mu1, s1, mu2, s2)
    l1, l2 = torch.linalg.cholesky(s1), torch.linalg.cholesky(s2)
    errors = []
    for n in (100, 40000):
        x = mu1 + torch.randn(n, d, generator=g, dtype=torch.float64) @ l1.T
        y = mu2 + torch.randn(n, d, generator=g, dtype=torch.float64) @ l2.T
        errors.append(abs(frechet_distance(*feature_statistics(x), *feature_statistics(y)) - truth))
    assert errors[1] < 0.02 * truth and errors[1] < errors[0], (errors, truth)


# --- KID -----------------------------------------------------------------------------------------


def _mmd2_by_loops(x: torch.Tensor, y: torch.Tensor) -> float:
    """Binkowski et al.'s unbiased MMD^2 with k(a, b) = (a.b / D + 1)^3, one pair at a time."""
    d = x.shape[1]

    def k(a, b):
        return (sum(float(a[i]) * float(b[i]) for i in range(d)) / d + 1) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_feature_fid_kid_takes_kid_subsets_of_half_the_smaller_set():
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(9, 3, generator=g), torch.randn(12, 3, generator=g) + 0.5
    result = feature_fid_kid(x, y, subsets=4, seed=2)
    mean, std = kernel_inception_distance(x, y, 4, 4, torch.Generator().manual_seed(2))
    assert (result["kid_mean"], result["kid_std"], result["kid_subset_size"]) == (mean, std, 4)
    assert result["fid"] == frechet_distance(*feature_statistics(x), *feature_statistics(y))
    assert (result["count"], result["count_reference"]) == (9, 12)


def test_kid_matches_a_direct_double_loop():
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(7, 3, generator=g), torch.randn(6, 3, generator=g) + 0.3
    assert mmd2_unbiased(x.double(), y.double()) == pytest.approx(_mmd2_by_loops(x, y), rel=1e-10)
    # one subset as large as both sets: a reordering of the whole sets, which the estimate ignores
    mean, std = kernel_inception_distance(x[:6], y, subsets=1, subset_size=6, generator=g)
    assert mean == pytest.approx(_mmd2_by_loops(x[:6], y), rel=1e-10) and std == 0.0
    # random subsets, drawn as documented: per subset randperm(N)[:size], then randperm(M)[:size]
    mean, std = kernel_inception_distance(x, y, subsets=5, subset_size=4, generator=torch.Generator().manual_seed(9))
    replay = torch.Generator().manual_seed(9)
    values = []
    for _ in range(5):
        a, b = torch.randperm(7, generator=replay)[:4], torch.randperm(6, generator=replay)[:4]
        values.append(_mmd2_by_loops(x[a], y[b]))
    assert mean == pytest.approx(float(np.mean(values)), rel=1e-10)
    assert std == pytest.approx(float(np.std(values)), rel=1e-8) and std > 0
    with pytest.raises(UserError, match="subset size"):
        kernel_inception_distance(x, y, subsets=1, subset_size=7)


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(1000, 8, generator=g), torch.randn(1000, 8, generator=g)
    same, small, large = (kernel_inception_distance(x, y + shift, subsets=20, subset_size=500, generator=g)
                          for shift in (0.0, 0.2, 0.5))
    assert abs(same[0]) < 2 * same[1], same  # unbiased: zero within its spread over subsets
    assert 3 * small[1] < small[0] < large[0] and large[0] > 3 * large[1], (small, large)


# --- folders of world renders --------------------------------------------------------------------

OBJECTS = [WorldObject("red", "striped", "mug"), WorldObject("blue", "plain", "torus"),
           WorldObject("green", "checkered", "cube"), WorldObject("yellow", "two-tone", "sphere"),
           WorldObject("purple", "plain", "cone"), WorldObject("orange", "striped", "cylinder")]
OTHERS = [WorldObject("white", "checkered", "capsule"), WorldObject("black", "plain", "cube"),
          WorldObject("red", "plain", "sphere"), WorldObject("blue", "striped", "cone"),
          WorldObject("green", "two-tone", "torus"), WorldObject("yellow", "checkered", "mug")]


def _render(objects, azimuth0: float, size: int = 32):
    n = len(objects)
    cams = orbit_cameras(torch.full((n,), 20.0), azimuth0 + torch.arange(n) * 60.0, torch.full((n,), 2.2),
                         torch.full((n,), 40.0), size, size)
    return render_reference(objects, cams, supersample=1, background=0.0)  # premultiplied, as straight_rgba reads


def _write(folder, output):
    folder.mkdir()
    for i, rgba in enumerate(straight_rgba(output)):
        encode_rgba_png(rgba, folder / f"{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Three folders of 6 world renders (32x32 RGBA PNGs): objects, the same objects from other views,
    other objects; and the first render set itself."""
    root = tmp_path_factory.mktemp("fid")
    first = _render(OBJECTS, 10.0)
    return {"a": _write(root / "a", first), "a_views": _write(root / "a_views", _render(OBJECTS, 40.0)),
            "other": _write(root / "other", _render(OTHERS, 10.0)), "render": first}


@pytest.fixture(scope="module")
def classifier_features() -> ClassifierFeatures:
    return feature_network("classifier", "cpu")


def test_images_are_read_over_white(folders):
    out = folders["render"]
    image = read_image(image_files(folders["a"])[0])  # the render is over black: premultiplied
    expected = out.rgb[0] + (1 - out.alpha[0])
    assert image.shape == (32, 32, 3) and (out.alpha[0] < 0.5).any()
    assert (image - expected).abs().max() < 2.5 / 255


def test_classifier_features_are_the_pooled_last_stage_and_deterministic(classifier_features, folders):
    net = classifier_features
    images = folders["render"].rgb + 1 - folders["render"].alpha  # over white
    f = net.features(images)
    assert isinstance(net, ClassifierFeatures) and f.shape == (6, 256) == (6, net.feature_dim)
    torch.testing.assert_close(net.features(images), f, rtol=0, atol=0)
    clf = net.classifier  # the same numbers by the classifier's own forward: its heads are linear in them
    logits = clf(clf.prepare(images))
    torch.testing.assert_close(clf.heads["shape"](f), logits["shape"], rtol=1e-5, atol=1e-5)


def test_fid_of_a_folder_with_itself_is_zero_and_other_objects_are_farther(classifier_features, folders):
    config = FolderFIDConfig(kid_subsets=10)

    def fid(a, b):
        return fid_between_folders(folders[a], folders[b], classifier_features, config)

    itself, views, other = fid("a", "a"), fid("a", "a_views"), fid("a", "other")
    assert (itself["count_a"], itself["count_b"], itself["kid_subset_size"]) == (6, 6, 6)  # clipped from 1000
    assert itself["network"] == "classifier" and itself["feature_dim"] == 256
    assert abs(itself["fid"]) < 1e-9 * other["fid"]  # 256-D covariances of rank 5
    assert 0 < views["fid"] < other["fid"], (views["fid"], other["fid"])
    assert itself["kid_mean"] < views["kid_mean"] < other["kid_mean"]


def test_an_unreadable_image_is_named(tmp_path, classifier_features):
    (tmp_path / "fine.png").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    with pytest.raises(UserError, match="fine.png"):
        read_image(tmp_path / "fine.png")
    with pytest.raises(UserError, match="no .png"):
        image_files(tmp_path / "sub")
    with pytest.raises(UserError, match="not a folder"):
        image_files(tmp_path / "missing")


# --- Inception -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name, says", [("inception:/nowhere/pt_inception.pth", "/nowhere/pt_inception.pth"),
                                        ("inception", "no Inception weights file given")])
def test_inception_without_its_weights_file_says_which_file_to_get(name, says):
    with pytest.raises(UserError) as err:
        feature_network(name, "cpu")
    message = str(err.value)
    assert says in message and "pt_inception-2015-12-05" in message and "inception_v3" in message
    assert "nothing is downloaded" in message and "\n" not in message


def test_inception_without_torchvision_says_what_to_install(tmp_path, monkeypatch):
    weights = tmp_path / "pt_inception.pth"
    torch.save({"fc.weight": torch.zeros(1008, 2048)}, weights)
    for module in ("torchvision", "torchvision.models", "torchvision.models.inception"):
        monkeypatch.setitem(sys.modules, module, None)  # as if torchvision were not installed
    with pytest.raises(UserError, match="pip install torchvision"):
        InceptionFeatures.from_file(weights)


def test_inception_features_from_random_weights_in_both_layouts(tmp_path):
    inception = pytest.importorskip("torchvision.models.inception")
    torch.manual_seed(0)
    images = torch.rand(2, 40, 40, 3)
    features = {}
    for classes in (1008, 1000):
        net = inception.Inception3(num_classes=classes, aux_logits=classes == 1000, init_weights=False)
        torch.save(net.state_dict(), tmp_path / f"w{classes}.pth")  # torchvision's file keeps its aux head
        features[classes] = feature_network(f"inception:{tmp_path / f'w{classes}.pth'}", "cpu")
    fid_net, tv_net = features[1008], features[1000]
    assert (fid_net.name, tv_net.name) == ("inception-fid", "inception-torchvision")
    f = fid_net.features(images)
    assert f.shape == (2, 2048) and torch.isfinite(f).all()
    # with the same weights, the FID graph's pooling gives other features than torchvision's blocks
    tv_net.trunk.load_state_dict({k: v for k, v in fid_net.trunk.state_dict().items() if not k.startswith("fc.")},
                                 strict=False)  # all but the logits, which pool3 does not reach
    assert not torch.allclose(tv_net.features(images), f)


# --- the command ---------------------------------------------------------------------------------


def test_the_command_on_an_empty_folder_is_one_line_and_loads_no_network(tmp_path, folders, monkeypatch, capsys):
    def no_loading(*args, **kwargs):
        raise AssertionError("a network was loaded before the folders were checked")

    monkeypatch.setattr(feature_networks.ClassifierFeatures, "from_pretrained", no_loading)
    (tmp_path / "empty").mkdir()
    assert main(["eval", "fid", str(tmp_path / "empty"), str(folders["a"])]) == 2
    err = capsys.readouterr().err
    assert "empty" in err and "no .png" in err and "Traceback" not in err and err.count("\n") == 1, err


def test_the_command_writes_what_the_library_computes(tmp_path, folders, classifier_features, capsys):
    import json

    out = tmp_path / "fid.json"
    argv = ["eval", "fid", str(folders["a"]), str(folders["other"]), "--kid-subsets", "3", "--kid-subset-size", "4",
            "--device", "cpu", "--batch-size", "4", "--out", str(out)]
    assert main(argv) == 0
    written = json.loads(out.read_text())
    expected = fid_between_folders(folders["a"], folders["other"], classifier_features,
                                   FolderFIDConfig(batch_size=4, kid_subsets=3, kid_subset_size=4))
    assert written.keys() == expected.keys() and written["kid_subset_size"] == 4
    for key in ("fid", "kid_mean", "kid_std"):
        assert written[key] == pytest.approx(expected[key], rel=1e-5), key
