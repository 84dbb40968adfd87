"""Sharded, resumable writing of a data set from any render source.

- Item ``i`` is rendered from cameras drawn by its own generator, seeded by ``(seed, i)``
  (``item_generator``), never from global random state, and shows source item
  ``(i * len(source.items)) // count`` (``source_index``: consecutive items share a source item,
  so their cameras go to the renderer together, and every source item is used when
  ``count >= len(source.items)``).
- Items are rendered in fixed chunks of about ``cameras_per_call`` cameras; the chunk
  boundaries do not depend on what is already written, so a resumed run computes exactly
  what an uninterrupted run computes.
- Every file or item folder is written under a ``.tmp-`` name and renamed into place
  (``atomic_path``); an interrupted run leaves complete items and temporaries that resume
  removes. ``meta.json`` says ``"complete": true`` once every item is written.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterator, Protocol, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from distill3d.cameras import Cameras
from distill3d.data.layout import (LAYOUT_VERSION, META_FILE, TEMP_PREFIX, dumps_json, item_id, read_json,
                                   shard_name, straight_rgba)
from distill3d.data.sources import RenderSource
from distill3d.errors import UserError

DEFAULT_SHARD_SIZE = 1000
DEFAULT_CAMERAS_PER_CALL = 32


@dataclass
class ItemPlan:
    """The cameras of one item ([V] of them) and the orbit parameters they came from ([V] each)."""

    cameras: Cameras
    params: dict[str, torch.Tensor]


class ItemKind(Protocol):
    """How one kind of data set plans, writes and recognises its items."""

    kind: ClassVar[str]

    @property
    def views_per_item(self) -> int: ...

    def options(self) -> dict:
        """JSON-ready creation options, stored as ``meta.json["options"]``."""

    def plan(self, index: int, generator: torch.Generator, resolution: int) -> ItemPlan:
        """Cameras of item ``index``, drawn from ``generator`` only."""

    def is_written(self, shard: Path, item: str) -> bool: ...

    def write(self, shard: Path, item: str, rgba: torch.Tensor, plan: ItemPlan, record: dict) -> None:
        """Write one item atomically; rgba [V, H, W, 4] straight alpha."""

    def finish_shard(self, shard: Path, items: Sequence[str]) -> None:
        """Called once every item of a shard is written."""


# ---------------------------------------------------------------------- determinism
def item_generator(seed: int, index: int) -> torch.Generator:
    """A CPU generator for item ``index`` of a data set with ``seed`` (well mixed, independent of order)."""
    hi, lo = np.random.SeedSequence((int(seed), int(index))).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed((int(hi) << 32) | int(lo))


def source_index(index: int, count: int, num_items: int) -> int:
    """The source item shown by data set item ``index`` of ``count``: contiguous, even blocks."""
    return (index * num_items) // count


# ---------------------------------------------------------------------- atomic writes
def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; create a file or folder there; it is renamed to ``final``.

    On an exception the temporary is removed and ``final`` is left as it was.
    """
    final = Path(final)
    tmp = final.with_name(TEMP_PREFIX + final.name)
    _remove(tmp)
    try:
        yield tmp
        if final.is_dir():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        _remove(tmp)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def remove_temporaries(folder: Path) -> None:
    """Delete what interrupted writes left in ``folder`` (names starting with ``.tmp-``)."""
    if folder.is_dir():
        for entry in folder.iterdir():
            if entry.name.startswith(TEMP_PREFIX):
                _remove(entry)


# ---------------------------------------------------------------------- the data set folder
def _normalised(meta: dict) -> dict:
    """``meta`` as it reads back from JSON (tuples become lists)."""
    return json.loads(dumps_json(meta))


def existing_output(root: Path, *, resume: bool) -> bool:
    """Whether the folder ``root`` already holds files; ``UserError`` when it does and ``resume`` is off."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise UserError(f"{root} is a file; give a folder for the data set")
    if root.exists() and any(root.iterdir()):
        if not resume:
            raise UserError(f"{root} is not empty; pass --resume to continue the data set written there, "
                            "or pick another folder")
        return True
    return False


def open_dataset_dir(root: Path, meta: dict, *, resume: bool) -> None:
    """Create ``root`` for a new data set, or check that an existing one may be resumed.

    A non-empty folder is only reused with ``resume`` and only when its ``meta.json`` was
    written with the same settings.
    """
    root = Path(root)
    if existing_output(root, resume=resume):
        meta_path = root / META_FILE
        if not meta_path.is_file():
            raise UserError(f"{root} holds files but no {META_FILE}, so it is not a distill3d data set; "
                            "pick another folder")
        old, new = read_json(meta_path), _normalised(meta)
        changed = [k for k in sorted(set(old) | set(new)) if k != "complete" and old.get(k) != new.get(k)]
        if changed:
            diff = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
            raise UserError(f"{root} was written with other settings ({diff}); resume with the same "
                            "settings or pick another folder")
        remove_temporaries(root)
    root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(root / META_FILE, dumps_json({**meta, "complete": False}))


def dataset_meta(kind: ItemKind, source: RenderSource, count: int, *, resolution: int, seed: int,
                 shard_size: int) -> dict:
    """``meta.json`` of a data set (everything but ``complete``), after checking the numbers."""
    for name, value, low in (("count", count, 1), ("resolution", resolution, 1), ("shard size", shard_size, 1),
                             ("seed", seed, 0)):
        if int(value) != value or value < low:
            raise UserError(f"{name} must be an integer >= {low}, got {value}")
    if not source.items:
        raise UserError("the source has nothing to render")
    return {"format": "distill3d-dataset", "layout_version": LAYOUT_VERSION, "kind": kind.kind,
            "count": int(count), "shard_size": int(shard_size), "resolution": int(resolution),
            "seed": int(seed), "split": source.split, "source": source.describe(), "options": kind.options()}


def write_dataset(kind: ItemKind, source: RenderSource, out_dir: Path, count: int, *, resolution: int = 64,
                  seed: int = 0, shard_size: int = DEFAULT_SHARD_SIZE, resume: bool = False,
                  cameras_per_call: int = DEFAULT_CAMERAS_PER_CALL, progress: bool = True) -> Path:
    """Render ``count`` items of ``kind`` from ``source`` into ``out_dir``; returns ``out_dir``.

    With ``resume`` the items already in ``out_dir`` are kept and the rest written; the result
    is byte-identical to an uninterrupted run.
    """
    out_dir = Path(out_dir)
    meta = dataset_meta(kind, source, count, resolution=resolution, seed=seed, shard_size=shard_size)
    open_dataset_dir(out_dir, meta, resume=resume)
    n_items = len(source.items)
    chunk = max(1, cameras_per_call // kind.views_per_item)
    with tqdm(total=count, desc=f"{kind.kind} -> {out_dir.name}", unit="item",
              disable=None if progress else True) as bar:
        for first in range(0, count, shard_size):
            shard = out_dir / shard_name(first // shard_size)
            shard.mkdir(exist_ok=True)
            remove_temporaries(shard)
            last = min(first + shard_size, count)
            for lo in range(first, last, chunk):
                indices = range(lo, min(lo + chunk, last))
                todo = {i for i in indices if not kind.is_written(shard, item_id(i))}
                bar.update(len(indices) - len(todo))
                if todo:
                    _write_chunk(kind, source, shard, indices, todo, count, n_items, resolution, seed, bar)
            kind.finish_shard(shard, [item_id(i) for i in range(first, last)])
    write_text_atomic(out_dir / META_FILE, dumps_json({**meta, "complete": True}))
    return out_dir


def _write_chunk(kind: ItemKind, source: RenderSource, shard: Path, indices: range, todo: set[int],
                 count: int, n_items: int, resolution: int, seed: int, bar) -> None:
    """Render a fixed chunk (one call per source item with missing items) and write its missing items."""
    plans = {i: kind.plan(i, item_generator(seed, i), resolution) for i in indices}
    for src, group in itertools.groupby(indices, key=lambda i: source_index(i, count, n_items)):
        group = list(group)
        if todo.isdisjoint(group):  # a render call of its own: skipping it changes no other
            continue
        item = source.items[src]
        rgba = straight_rgba(source.render(item, Cameras.cat([plans[i].cameras for i in group]))).cpu()
        for k, i in enumerate(group):
            if i not in todo:
                continue
            plan = plans[i]
            az, el = plan.params["azimuth"].tolist(), plan.params["elevation"].tolist()
            record = {"index": i, "name": source.names[src], "prompt": source.prompt(item),
                      "source": source.record(item),
                      "view_prompts": [source.view_prompt(item, a, e) for a, e in zip(az, el)]}
            views = kind.views_per_item
            kind.write(shard, item_id(i), rgba[k * views:(k + 1) * views], plan, record)
            bar.update(1)
