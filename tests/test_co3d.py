"""CO3Dv2 folders: world renders written in the format from known cameras, read back exactly.

Every expectation comes from an independent source: the cameras the renders were made with,
PyTorch3D's projection formulas written out here, the reference renderer run at the cameras the
reader returns, or annotation files written by hand.
"""

import gzip
import json
import shutil

import pytest
import torch
from PIL import Image

from distill3d.cameras import Cameras, intrinsics_from_fovy, look_at, orbit_cameras
from distill3d.cli import main
from distill3d.data import (
    Co3dDataset,
    MultiviewDataset,
    open_multiview_dataset,
    write_co3d_folder,
)
from distill3d.data.co3d import opencv_from_pytorch3d, pytorch3d_from_opencv
from distill3d.data.layout import straight_rgba
from distill3d.data.world_datasets import write_world_dataset
from distill3d.errors import UserError
from distill3d.methods.dd3g.input_images import InputImages, read_input_image
from distill3d.world import parse_prompt, render_reference

SPHERE, _ = parse_prompt("a red plain sphere")
MUG, _ = parse_prompt("a green checkered mug")
CUBE, _ = parse_prompt("a blue plain cube")  # a training object (the world data set writer refuses held-out ones)
ORBIT_AZIMUTHS = torch.arange(6) * 60.0 - 150.0


def _rgba(obj, cameras: Cameras) -> torch.Tensor:
    """[V, H, W, 4] straight RGBA of a world object (rendered over black, so colour / alpha is exact)."""
    return straight_rgba(render_reference(obj, cameras, background=0.0))


def _orbit() -> Cameras:
    return orbit_cameras(20.0, ORBIT_AZIMUTHS, 2.7, 40.0, 40, 40)


def _wide() -> Cameras:
    """48 x 32 cameras with a shifted principal point and fx != fy, at assorted elevations."""
    eye = torch.tensor([[2.4, 0.3, 0.9], [-0.5, 2.5, 0.2], [-2.2, -1.0, 1.4], [0.8, -2.3, -0.4]])
    K = intrinsics_from_fovy(torch.full((4,), 40.0), 48, 32)
    K[:, 0, 0] *= 1.1
    K[:, 0, 2] += 3.0
    K[:, 1, 2] -= 1.5
    return Cameras(look_at(eye, torch.zeros(4, 3)), K, 48, 32)


def _moved(cameras: Cameras) -> tuple[Cameras, torch.Tensor]:
    """The same cameras in another frame ``X' = s Q X + t`` (what structure from motion would give)."""
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(5)))
    Q = q * torch.sign(torch.diagonal(r))
    Q = Q * torch.sign(torch.det(Q))
    c2w = cameras.c2w.clone()
    c2w[:, :3, :3] = Q @ cameras.c2w[:, :3, :3]
    c2w[:, :3, 3] = 0.37 * cameras.c2w[:, :3, 3] @ Q.T + torch.tensor([3.0, -1.0, 2.0])
    return Cameras(c2w, cameras.K, cameras.width, cameras.height), Q


@pytest.fixture(scope="module")
def world():
    orbit, wide = _orbit(), _wide()
    return {"orbit": (orbit, _rgba(SPHERE, orbit)), "wide": (wide, _rgba(MUG, wide))}


@pytest.fixture(scope="module")
def root(world, tmp_path_factory):
    """A CO3D root: category "sphere" (sequences "moved", "orbit"), category "mug" (sequence "wide")."""
    out = tmp_path_factory.mktemp("co3d") / "co3d"
    orbit, rgba = world["orbit"]
    write_co3d_folder(out, "sphere", [("orbit", rgba, orbit), ("moved", rgba, _moved(orbit)[0])])
    write_co3d_folder(out, "mug", [("wide", *reversed(world["wide"]))])
    return out


def _sequence(dataset: Co3dDataset, name: str) -> dict:
    return dataset[[s.name for s in dataset.sequences].index(name)]


def _read_gzipped_json(path):
    with gzip.open(path, "rt") as file:
        return json.load(file)


def _over_white(rgba: torch.Tensor) -> torch.Tensor:
    return rgba[..., :3] * rgba[..., 3:] + 1.0 - rgba[..., 3:]


# ---------------------------------------------------------------------- conventions
def _pytorch3d_pixels(points, R, T, focal, principal, height, width, intrinsics_format):
    """PyTorch3D written out: X_view = X @ R + T, x_ndc = f X/Z + p, NDC (+X left, +Y up) to pixels."""
    view = torch.einsum("bni,bij->bnj", points, R) + T[:, None]
    ndc = focal[:, None] * view[..., :2] / view[..., 2:] + principal[:, None]
    if intrinsics_format == "ndc_isotropic":
        sx = sy = min(height, width) / 2.0
    else:
        sx, sy = width / 2.0, height / 2.0
    return torch.stack([width / 2.0 - sx * ndc[..., 0], height / 2.0 - sy * ndc[..., 1]], dim=-1)


def test_conversion_projects_points_where_pytorch3d_does():
    cams = _wide().to(dtype=torch.float64)
    points = (torch.rand(4, 50, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) - 0.5)
    size = torch.tensor([[32, 48]] * 4)
    R, T, focal, principal = pytorch3d_from_opencv(cams.c2w, cams.K, size)
    uv, _ = cams.project(points)
    assert torch.allclose(_pytorch3d_pixels(points, R, T, focal, principal, 32, 48, "ndc_isotropic"), uv, atol=1e-9)
    c2w, K = opencv_from_pytorch3d(R, T, focal, principal, size, "ndc_isotropic")
    assert torch.allclose(c2w, cams.c2w, atol=1e-12) and torch.allclose(K, cams.K, atol=1e-12)
    # CO3Dv1's ndc_norm_image_bounds: each image side spans [-1, 1], so NDC values scale per axis
    legacy_focal = torch.stack([cams.K[:, 0, 0] * 2 / 48, cams.K[:, 1, 1] * 2 / 32], -1)
    legacy_principal = torch.stack([(24 - cams.K[:, 0, 2]) * 2 / 48, (16 - cams.K[:, 1, 2]) * 2 / 32], -1)
    projected = _pytorch3d_pixels(points, R, T, legacy_focal, legacy_principal, 32, 48, "ndc_norm_image_bounds")
    assert torch.allclose(projected, uv, atol=1e-9)
    _, K_legacy = opencv_from_pytorch3d(R, T, legacy_focal, legacy_principal, size, "ndc_norm_image_bounds")
    assert torch.allclose(K_legacy, cams.K, atol=1e-12)
    with pytest.raises(UserError, match="intrinsics format"):
        opencv_from_pytorch3d(R, T, focal, principal, size, "screen")


# ---------------------------------------------------------------------- the writer and plain reading
def test_written_folder_is_co3d_and_reads_back_exactly_without_crop(root, world):
    orbit, rgba = world["orbit"]
    frames = _read_gzipped_json(root / "sphere" / "frame_annotations.jgz")
    sequences = _read_gzipped_json(root / "sphere" / "sequence_annotations.jgz")
    assert sorted(s["sequence_name"] for s in sequences) == ["moved", "orbit"] and sequences[0]["category"] == "sphere"
    first = next(f for f in frames if f["sequence_name"] == "orbit" and f["frame_number"] == 0)
    assert first["image"] == {"path": "sphere/orbit/images/frame000001.jpg", "size": [40, 40]}
    assert first["mask"]["path"] == "sphere/orbit/masks/frame000001.png"
    assert first["mask"]["mass"] == pytest.approx(rgba[0, ..., 3].sum().item(), rel=1e-3)
    assert first["viewpoint"]["intrinsics_format"] == "ndc_isotropic" and len(first["viewpoint"]["R"]) == 3
    assert (root / first["image"]["path"]).is_file() and (root / first["mask"]["path"]).is_file()

    sample = _sequence(Co3dDataset(root, crop=False, normalize=None, resolution=40), "orbit")
    assert set(sample) == {"images", "c2w", "K", "elevation", "azimuth", "distance", "fovy", "prompt", "name", "index"}
    assert torch.allclose(sample["c2w"], orbit.c2w, atol=1e-4) and torch.allclose(sample["K"], orbit.K, atol=1e-4)
    assert torch.allclose(sample["elevation"], torch.full((6,), 20.0), atol=1e-3)
    assert torch.allclose(sample["azimuth"], ORBIT_AZIMUTHS, atol=1e-3)
    assert torch.allclose(sample["distance"], torch.full((6,), 2.7), atol=1e-5)
    assert torch.allclose(sample["fovy"], torch.full((6,), 40.0), atol=1e-3)
    assert sample["prompt"] == "a sphere" and sample["name"] == "orbit"
    images = sample["images"]
    assert images.shape == (6, 40, 40, 4)
    assert (images[..., 3] - rgba[..., 3]).abs().max() <= 0.5 / 255 + 1e-6  # PNG masks: 8 bits, no resampling
    photo = _over_white(rgba)  # the JPEG holds the colour over white (background None: the photograph)
    assert (images[..., :3] - photo).abs().mean() < 0.01 and (images[..., :3] - photo).abs().max() < 0.25
    cut_out = Co3dDataset(root, crop=False, normalize=None, resolution=40, background=0.0)[2]["images"]
    assert torch.allclose(cut_out[..., :3], images[..., :3] * images[..., 3:], atol=1e-6)


def test_crop_cameras_agree_with_the_cropped_frames(root, world):
    """Crop on: the reference renderer at the returned cameras draws the returned frames."""
    full_rgba = world["orbit"][1]
    dataset = Co3dDataset(root, resolution=32, background=1.0)
    sample = _sequence(dataset, "orbit")
    cams = Cameras(sample["c2w"], sample["K"], 32, 32)
    render = render_reference(SPHERE, cams)
    alpha, expected = sample["images"][..., 3], render.alpha[..., 0]
    iou = ((alpha > 0.5) & (expected > 0.5)).sum() / ((alpha > 0.5) | (expected > 0.5)).sum()
    assert iou > 0.93 and (alpha - expected).abs().mean() < 0.03, iou
    assert (sample["images"][..., :3] - render.rgb).abs().mean() < 0.03
    # the object's centre projects onto the middle of the mask, and the crop is the mask box grown by 30 %
    uv, _ = cams.project(torch.zeros(6, 1, 3))
    v, u = torch.meshgrid(torch.arange(32) + 0.5, torch.arange(32) + 0.5, indexing="ij")
    centroid = torch.stack([(alpha * u).sum((1, 2)), (alpha * v).sum((1, 2))], -1) / alpha.sum((1, 2))[:, None]
    assert torch.allclose(uv[:, 0], centroid, atol=0.6)
    full_side = ((full_rgba[0, ..., 3] > 0.4).any(0)).sum().item()
    assert sample["K"][0, 0, 0].item() == pytest.approx(_orbit().K[0, 0, 0].item() * 32 / round(full_side * 1.3))
    assert (sample["images"][0, ..., 3] > 0.4).any(0).sum().item() == pytest.approx(32 / 1.3, abs=1.5)


def test_non_square_frames_crop_to_squares(root, world):
    wide, rgba = world["wide"]
    plain = _sequence(Co3dDataset(root, category="mug", crop=False, normalize=None, resolution=32), "wide")
    K = wide.K.clone()
    K[:, 0, 2] -= 8.0  # the centred 32 x 32 square of a 48 x 32 frame starts at column 8
    assert torch.allclose(plain["K"], K, atol=1e-4) and torch.allclose(plain["c2w"], wide.c2w, atol=1e-4)
    assert (plain["images"][..., 3] - rgba[:, :, 8:40, 3]).abs().max() <= 0.5 / 255 + 1e-6
    cropped = Co3dDataset(root / "mug", resolution=24, normalize=None)[0]
    render = render_reference(MUG, Cameras(cropped["c2w"], cropped["K"], 24, 24))
    alpha, expected = cropped["images"][..., 3], render.alpha[..., 0]
    iou = ((alpha > 0.5) & (expected > 0.5)).sum() / ((alpha > 0.5) | (expected > 0.5)).sum()
    assert iou > 0.85 and (alpha - expected).abs().mean() < 0.05, iou


def test_legacy_ndc_norm_image_bounds_annotations(root, world, tmp_path):
    """A CO3Dv1-style annotation, written here by hand, reads to the same cameras."""
    wide, _ = world["wide"]
    copy = tmp_path / "v1"
    shutil.copytree(root / "mug", copy / "mug")
    path = copy / "mug" / "frame_annotations.jgz"
    frames = _read_gzipped_json(path)
    for frame in frames:
        K, view = wide.K[frame["frame_number"]].double(), frame["viewpoint"]
        view["focal_length"] = [K[0, 0].item() * 2 / 48, K[1, 1].item() * 2 / 32]
        view["principal_point"] = [(24 - K[0, 2].item()) * 2 / 48, (16 - K[1, 2].item()) * 2 / 32]
        view["intrinsics_format"] = "ndc_norm_image_bounds"
    del frames[0]["viewpoint"]["intrinsics_format"]  # absent: CO3D's default, the legacy format
    with gzip.open(path, "wt") as file:
        json.dump(frames, file)
    sample = Co3dDataset(copy, crop=False, normalize=None, resolution=32)[0]
    K = wide.K.clone()
    K[:, 0, 2] -= 8.0
    assert torch.allclose(sample["K"], K, atol=1e-4) and torch.allclose(sample["c2w"], wide.c2w, atol=1e-4)


# ---------------------------------------------------------------------- normalisation, subsets
def test_normalisation_undoes_an_arbitrary_sequence_frame(root, world):
    """Cameras written in a rotated, scaled, shifted frame come back in the world frame, up to a turn
    about +Z (CO3D has no front): centre where the axes meet, mean image-up on +Z, distance 2.7."""
    orbit, _ = world["orbit"]
    moved, _ = _moved(orbit)
    dataset = Co3dDataset(root, category="sphere", crop=False, resolution=40)
    sample = _sequence(dataset, "moved")
    turn = torch.deg2rad(sample["azimuth"][0] - ORBIT_AZIMUTHS[0])
    Rz = torch.eye(4)
    Rz[0, 0], Rz[0, 1], Rz[1, 0], Rz[1, 1] = turn.cos(), -turn.sin(), turn.sin(), turn.cos()
    assert torch.allclose(sample["c2w"], Rz @ orbit.c2w, atol=1e-4)
    assert torch.allclose(sample["elevation"], torch.full((6,), 20.0), atol=1e-3)
    assert torch.allclose(sample["distance"], torch.full((6,), 2.7), atol=1e-5)
    S = dataset.world_transform([s.name for s in dataset.sequences].index("moved")).float()
    centres = moved.c2w[:, :3, 3] @ S[:3, :3].T + S[:3, 3]
    assert torch.allclose(centres, sample["c2w"][:, :3, 3], atol=1e-4)
    # the orbit, written in the world frame, keeps it: the normalisation is the identity there
    assert torch.allclose(_sequence(dataset, "orbit")["c2w"], orbit.c2w, atol=1e-4)
    raw = _sequence(Co3dDataset(root, category="sphere", crop=False, normalize=None, resolution=40), "moved")
    assert torch.allclose(raw["c2w"], moved.c2w, atol=1e-4)


def test_set_lists_max_frames_and_categories(root, world, tmp_path):
    orbit, _ = world["orbit"]
    copy = tmp_path / "lists"
    shutil.copytree(root, copy)

    def entry(n: int) -> list:  # [sequence_name, frame_number, image path]
        return ["orbit", n, f"sphere/orbit/images/frame{n + 1:06d}.jpg"]

    (copy / "sphere" / "set_lists").mkdir()
    (copy / "sphere" / "set_lists" / "set_lists_manyview_dev_0.json").write_text(
        json.dumps({"train": [entry(0), entry(2), entry(4)], "val": [], "test": [entry(5)]}))
    options = {"crop": False, "normalize": None, "resolution": 40}
    train = Co3dDataset(copy, category="sphere", subset="manyview_dev_0", **options)
    assert len(train) == 1 and torch.allclose(train[0]["c2w"], orbit.c2w[[0, 2, 4]], atol=1e-4)
    test = Co3dDataset(copy / "sphere", subset="manyview_dev_0", split="test", **options)
    assert torch.allclose(test[0]["c2w"], orbit.c2w[[5]], atol=1e-4)
    with pytest.raises(UserError, match="no split"):
        Co3dDataset(copy, category="sphere", subset="manyview_dev_0", split="dev")
    with pytest.raises(UserError, match="no set list"):
        Co3dDataset(copy, subset="fewview_dev")
    few = _sequence(Co3dDataset(copy, max_frames=3, **options), "orbit")
    picked = [int((orbit.c2w - c).abs().amax((1, 2)).argmin()) for c in few["c2w"]]
    assert picked[0] == 0 and picked[-1] == 5 and len(picked) == 3 and picked == sorted(set(picked))
    assert len(Co3dDataset(copy)) == 3 and len(Co3dDataset(copy, category="mug")) == 1
    with pytest.raises(UserError, match="has: mug, sphere"):
        Co3dDataset(copy, category="teddybear")


# ---------------------------------------------------------------------- every command that reads multi-view data
def test_open_multiview_dataset_dispatches_and_refuses_other_folders(root, tmp_path):
    assert isinstance(open_multiview_dataset(root), Co3dDataset) and len(open_multiview_dataset(root)) == 3
    assert [s.name for s in open_multiview_dataset(root / "sphere", resolution=16).sequences] == ["moved", "orbit"]
    world_folder = write_world_dataset("multiview", tmp_path / "mv", 1, views=2, resolution=16, objects=[CUBE],
                                       progress=False)
    assert isinstance(open_multiview_dataset(world_folder, background=1.0), MultiviewDataset)
    with pytest.raises(UserError, match="only apply to CO3D"):
        open_multiview_dataset(world_folder, resolution=32)
    (tmp_path / "empty").mkdir()
    for path, message in ((tmp_path / "empty", "neither"), (tmp_path / "missing", "does not exist")):
        with pytest.raises(UserError, match=message) as error:
            open_multiview_dataset(path)
        assert "\n" not in str(error.value)


def test_fit_reconstructs_from_a_co3d_folder(root, tmp_path):
    run = tmp_path / "run"
    assert main(["fit", str(root / "sphere"), "--item", "1", "--steps", "2", "--scene.gaussians.count", "200",
                 "--heldout-views", "2", "--turntable-frames", "0", "--out", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["heldout_views"] == 2 and summary["train_views"] == 4
    assert summary["label"] == "a sphere" and summary["resolution"] == 128  # Co3dDataset's default


def test_dd3g_input_images_take_co3d_frames(root):
    sources = InputImages(root / "sphere", 32, elevation_range=(-10.0, 45.0))
    assert sources.names[:2] == ["moved/frame000001.jpg", "moved/frame000002.jpg"] and len(sources.names) == 12
    reference = Co3dDataset(root / "sphere", resolution=32, background=1.0)
    expected = torch.cat([reference[0]["fovy"], reference[1]["fovy"]])
    elevation, distance, fovy = sources.input_cameras(torch.arange(12))
    assert torch.allclose(elevation, torch.full((12,), 20.0), atol=1e-3)
    assert torch.allclose(distance, torch.full((12,), 2.7), atol=1e-5) and torch.allclose(fovy, expected)
    images = sources.images(torch.tensor([1, 7]), torch.zeros(2))
    assert images.shape == (2, 32, 32, 3)
    assert torch.allclose(images[0], reference[0]["images"][1, ..., :3], atol=1e-6)
    assert torch.allclose(images[1], reference[1]["images"][1, ..., :3], atol=1e-6)
    assert torch.allclose(read_input_image(sources.files[7], 32), images[1])
    with pytest.raises(UserError, match="no frame"):
        InputImages(root / "sphere", 32, elevation_range=(50.0, 60.0))


def test_mistakes_are_one_line_user_errors(root, world, tmp_path):
    orbit, rgba = world["orbit"]
    with pytest.raises(UserError, match="does not match"):
        write_co3d_folder(tmp_path / "w", "sphere", [("short", rgba[:2], orbit)])
    with pytest.raises(UserError, match="cannot be a folder name"):
        write_co3d_folder(tmp_path / "w", "sphere", [("../up", rgba, orbit)])
    copy = tmp_path / "resized"
    shutil.copytree(root / "mug", copy / "mug")
    image = copy / "mug" / "wide" / "images" / "frame000001.jpg"
    Image.open(image).resize((40, 32)).save(image)
    with pytest.raises(UserError, match="annotation says 48x32") as error:
        Co3dDataset(copy, crop=False)[0]
    assert "\n" not in str(error.value)


def test_writing_a_sequence_again_replaces_it_and_keeps_the_others(root, world, tmp_path):
    orbit, rgba = world["orbit"]
    copy = tmp_path / "again"
    shutil.copytree(root, copy)
    write_co3d_folder(copy, "sphere", [("orbit", rgba[:2], orbit[0:2])])
    dataset = Co3dDataset(copy, category="sphere", crop=False, normalize=None, resolution=40)
    assert [s.name for s in dataset.sequences] == ["moved", "orbit"]
    assert torch.allclose(_sequence(dataset, "orbit")["c2w"], orbit.c2w[:2], atol=1e-4)
    assert sorted(p.name for p in (copy / "sphere" / "orbit" / "images").iterdir()) == ["frame000001.jpg",
                                                                                          "frame000002.jpg"]
    assert len(_sequence(dataset, "moved")["c2w"]) == 6
