import json
import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from distill3d.cameras import orbit_cameras, sample_orbit_cameras
from distill3d.data import (MultiviewDataset, MultiviewGroupsDataset, TextImageDataset, read_cameras,
                            sample_cameras, write_cameras, write_world_dataset)
from distill3d.data import world_datasets
from distill3d.data.kinds import dataset_kind
from distill3d.data.layout import (META_FILE, TEMP_PREFIX, cameras_from_json, composite, encode_rgba_png,
                                   read_rgba_png, straight_rgba)
from distill3d.data.shards import item_generator, source_index, write_dataset
from distill3d.data.text_image import METADATA_FILE
from distill3d.data.world_datasets import WorldSource
from distill3d.errors import UserError
from distill3d.render_output import RenderOutput
from distill3d.world import heldout_objects, render_reference, train_objects

READERS = {"multiview": MultiviewDataset, "text-image": TextImageDataset, "multiview-groups": MultiviewGroupsDataset}
TINY = dict(resolution=16, views=2, targets=2, shard_size=2)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------- layout
def test_camera_json_round_trip_is_exact(tmp_path):
    cams, params = sample_orbit_cameras(5, 24, 16, generator=torch.Generator().manual_seed(3), uniform_sphere=True)
    write_cameras(tmp_path / "cameras.json", cams, params)
    back, back_params = read_cameras(tmp_path / "cameras.json")
    assert torch.equal(back.c2w, cams.c2w) and torch.equal(back.K, cams.K)
    assert (back.width, back.height) == (24, 16)
    for key in params:
        assert torch.equal(back_params[key], params[key].float())
    _, unknown = cameras_from_json(cams.to_dicts())  # plain to_dicts entries: parameters unknown
    assert torch.isnan(unknown["azimuth"]).all()


def test_rgba_png_round_trip_and_alpha(tmp_path):
    levels = torch.randint(0, 256, (9, 7, 4), generator=torch.Generator().manual_seed(0)).float() / 255
    encode_rgba_png(levels, tmp_path / "a.png")
    assert torch.equal(read_rgba_png(tmp_path / "a.png"), levels)
    # A render over black is premultiplied: straight colour composited over white equals a render over white.
    colour, alpha = torch.tensor([0.2, 0.6, 0.9]), torch.tensor([0.0, 0.25, 1.0]).reshape(1, 3, 1, 1)
    over = lambda bg: RenderOutput(rgb=colour * alpha + bg * (1 - alpha), alpha=alpha, depth=torch.zeros_like(alpha))
    rgba = straight_rgba(over(0.0))
    assert torch.allclose(composite(rgba, 1.0), over(1.0).rgb, atol=1e-6)
    assert torch.equal(rgba[0, 0, 0], torch.zeros(4))  # no coverage: no colour


def test_item_generator_and_assignment():
    a = torch.rand(4, generator=item_generator(7, 3))
    torch.manual_seed(123)  # global state must not matter
    assert torch.equal(a, torch.rand(4, generator=item_generator(7, 3)))
    assert not torch.equal(a, torch.rand(4, generator=item_generator(7, 4)))
    assert not torch.equal(a, torch.rand(4, generator=item_generator(8, 3)))
    # every source item is used, in contiguous blocks, when count >= number of items
    assert [source_index(i, 6, 3) for i in range(6)] == [0, 0, 1, 1, 2, 2]
    assert sorted({source_index(i, 10, 7) for i in range(10)}) == list(range(7))


# ---------------------------------------------------------------------- write -> read
@pytest.mark.parametrize("kind", list(READERS))
def test_world_round_trip_with_dataloader(tmp_path, kind):
    out = write_world_dataset(kind, tmp_path / kind, 3, progress=False, **TINY)
    meta = json.loads((out / META_FILE).read_text())
    assert meta["complete"] and meta["kind"] == kind and meta["count"] == 3 and meta["split"] == "train"
    assert sorted(p.name for p in out.iterdir()) == [META_FILE, "shard-00000", "shard-00001"]
    dataset = READERS[kind](out)
    assert len(dataset) == 3
    batch = next(iter(DataLoader(dataset, batch_size=2, num_workers=0)))
    views = {"multiview": 2, "text-image": None, "multiview-groups": 3}[kind]
    lead = (2,) if views is None else (2, views)
    assert batch["c2w"].shape == (*lead, 4, 4) and batch["K"].shape == (*lead, 3, 3)
    assert batch["azimuth"].shape == lead and torch.isfinite(batch["azimuth"]).all()
    images = {"multiview": "images", "text-image": "image", "multiview-groups": "input"}[kind]
    assert batch[images].shape[-3:] == (16, 16, 4)
    assert batch[images].min() >= 0 and batch[images].max() <= 1
    assert len(batch["prompt"]) == 2 and all(isinstance(p, str) for p in batch["prompt"])
    if kind == "text-image":
        pairs = zip(batch["prompt"], batch["base_prompt"])
        assert all(p.startswith(b + ", ") and p.endswith(" view") for p, b in pairs)
    if kind == "multiview-groups":
        assert batch["targets"].shape == (2, 2, 16, 16, 4)
        el = batch["elevation"][:, 1:]
        assert torch.allclose(el, torch.zeros_like(el))  # targets at the fixed elevation
        gap = torch.remainder(batch["azimuth"][:, 2] - batch["azimuth"][:, 1], 360.0)
        assert torch.allclose(gap, torch.full_like(gap, 180.0), atol=1e-3)  # 360 / K apart
        first = torch.remainder(batch["azimuth"][:, 1] - batch["azimuth"][:, 0] + 1.0, 360.0) - 1.0
        assert torch.allclose(first, torch.zeros_like(first), atol=1e-3)  # target 0 at the input azimuth
    assert sample_cameras(batch).c2w.shape[0] == (2 if views is None else 2 * views)


def test_stored_images_match_their_cameras(tmp_path):
    """The frames re-render exactly from the cameras read back (poses and images agree)."""
    out = write_world_dataset("multiview", tmp_path / "mv", 2, progress=False, **TINY)
    sample = MultiviewDataset(out, background=1.0)[1]
    obj = train_objects()[source_index(1, 2, len(train_objects()))]
    assert sample["name"] == obj.prompt
    again = render_reference(obj, sample_cameras(sample), supersample=2, background=1.0)
    assert (sample["images"][..., :3] - again.rgb).abs().max() <= 1.0 / 255 + 1e-3
    assert (sample["images"][..., 3:] - again.alpha).abs().max() <= 0.5 / 255 + 1e-6
    assert sample["images"][..., 3].mean() > 0.05  # the object is in view
    straight = MultiviewDataset(out, background=None)[1]["images"]
    assert torch.allclose(composite(straight, 1.0), sample["images"][..., :3], atol=1e-6)


# ---------------------------------------------------------------------- resume
class _Interrupted(Exception):
    pass


class _InterruptingSource:
    """A world source whose ``render`` fails after ``calls`` calls (a simulated crash)."""

    def __init__(self, calls: int):
        self.inner, self.left = WorldSource("train"), calls

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def render(self, item, cameras):
        if self.left == 0:
            raise _Interrupted()
        self.left -= 1
        return self.inner.render(item, cameras)


@pytest.mark.parametrize("kind", list(READERS))
def test_resume_after_interruption_is_byte_identical(tmp_path, kind):
    writer = dataset_kind(kind, views=2, targets=2)
    args = dict(resolution=16, seed=5, shard_size=2, progress=False, cameras_per_call=2)
    full = write_dataset(writer, WorldSource("train"), tmp_path / "full", 5, **args)
    with pytest.raises(_Interrupted):
        write_dataset(writer, _InterruptingSource(3), tmp_path / "part", 5, **args)
    part = tmp_path / "part"
    assert json.loads((part / META_FILE).read_text())["complete"] is False
    written = _files(part)
    assert written != _files(full) and any(name.startswith("shard-00001/0000002") for name in written)
    if kind == "text-image":  # shard 0 finished, shard 1 still pending
        assert "shard-00000/metadata.jsonl" in written and "shard-00001/_pending/0000002.json" in written
    (part / "shard-00001" / f"{TEMP_PREFIX}0000003").mkdir(parents=True, exist_ok=True)  # a half-written item
    (part / "shard-00001" / f"{TEMP_PREFIX}0000003" / "junk.png").write_bytes(b"half")
    torch.manual_seed(99)  # global random state must not matter
    write_dataset(writer, WorldSource("train"), part, 5, resume=True, **args)
    assert _files(part) == _files(full)


def test_resume_rewrites_a_deleted_item(tmp_path):
    out = write_world_dataset("multiview", tmp_path / "mv", 3, progress=False, **TINY)
    before = _files(out)
    for p in sorted((out / "shard-00000" / "0000001").rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    (out / "shard-00000" / "0000001").rmdir()
    write_world_dataset("multiview", out, 3, resume=True, progress=False, **TINY)
    assert _files(out) == before


def test_refuses_to_overwrite_without_resume(tmp_path):
    out = write_world_dataset("text-image", tmp_path / "ti", 2, progress=False, **TINY)
    with pytest.raises(UserError, match="--resume"):
        write_world_dataset("text-image", out, 2, progress=False, **TINY)
    with pytest.raises(UserError, match="other settings.*seed"):
        write_world_dataset("text-image", out, 2, seed=1, resume=True, progress=False, **TINY)
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="--resume"):
        write_world_dataset("text-image", stranger, 2, progress=False, **TINY)
    with pytest.raises(UserError, match="not a distill3d data set"):
        write_world_dataset("text-image", stranger, 2, resume=True, progress=False, **TINY)
    assert (stranger / "notes.txt").read_text() == "mine"


def test_unknown_kind_or_split_lists_valid_ones(tmp_path):
    with pytest.raises(UserError, match="multiview, text-image, multiview-groups"):
        write_world_dataset("pointclouds", tmp_path / "x", 1)
    with pytest.raises(UserError, match="train, heldout"):
        write_world_dataset("multiview", tmp_path / "x", 1, split="test")
    with pytest.raises(UserError, match="incomplete|no meta.json"):
        MultiviewDataset(tmp_path)


# ---------------------------------------------------------------------- splits
def _flat_render(item, cameras):
    """Stand-in for the reference renderer: the selection of objects is what is tested here."""
    shape = (len(cameras), cameras.height, cameras.width)
    return RenderOutput(rgb=torch.zeros(*shape, 3), alpha=torch.ones(*shape, 1), depth=torch.ones(*shape, 1))


def test_heldout_objects_never_in_train_sets(tmp_path, monkeypatch):
    monkeypatch.setattr(world_datasets, "render_reference", lambda obj, cams, **kw: _flat_render(obj, cams))
    train, heldout = train_objects(), heldout_objects()
    heldout_prompts = {o.prompt for o in heldout}
    assert heldout and not heldout_prompts & {o.prompt for o in train}
    count = 2 * len(train) + 1
    out = write_world_dataset("text-image", tmp_path / "train", count, resolution=2, shard_size=200, progress=False)
    names = [r["name"] for r in TextImageDataset(out).records]
    assert len(names) == count
    assert set(names) == {o.prompt for o in train}  # every training object, never a held-out one
    assert not set(names) & heldout_prompts
    out = write_world_dataset("multiview", tmp_path / "heldout", len(heldout), split="heldout", resolution=2,
                              views=1, progress=False)
    assert {MultiviewDataset(out)[i]["name"] for i in range(len(heldout))} == heldout_prompts
    assert json.loads((out / META_FILE).read_text())["split"] == "heldout"


def test_text_image_shards_list_their_images(tmp_path):
    out = write_world_dataset("text-image", tmp_path / "ti", 3, progress=False, **TINY)
    lines = [json.loads(x) for x in (out / "shard-00001" / METADATA_FILE).read_text().splitlines()]
    assert [x["file_name"] for x in lines] == ["0000002.png"]
    assert not (out / "shard-00000" / "_pending").exists()
    cam = orbit_cameras(lines[0]["camera"]["elevation"], lines[0]["camera"]["azimuth"],
                        lines[0]["camera"]["distance"], lines[0]["camera"]["fovy"], 16, 16)
    assert torch.allclose(cam.c2w[0], torch.tensor(lines[0]["camera"]["c2w_opencv"]), atol=1e-5)
    assert math.isclose(lines[0]["camera"]["fovy"], 40.0)
