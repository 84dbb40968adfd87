"""Gaussians to and from the standard 3DGS PLY file (the layout viewers and tools read).

One ``vertex`` element, binary little endian float32, properties in this order:

    x y z  nx ny nz  f_dc_0 f_dc_1 f_dc_2  f_rest_0 .. f_rest_{3(K-1)-1}  opacity
    scale_0 scale_1 scale_2  rot_0 rot_1 rot_2 rot_3

f_dc are the degree-0 SH coefficients ((rgb - 0.5) / C0 for a plain colour); f_rest hold the
higher coefficients channel-major (all of red's K-1, then green's, then blue's), as the 3DGS
reference code writes them; opacity is the logit, scales are logs, rot is (w, x, y, z) and
normals are zero. Reading accepts any PLY whose vertex element has these properties (extra
properties and other scalar types are tolerated), binary little/big endian.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from distill3d.errors import UserError
from distill3d.scene.gaussians import Gaussians

__all__ = ["write_gaussians_ply", "read_gaussians_ply", "ply_property_names"]

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


def ply_property_names(sh_degree: int) -> list[str]:
    """The vertex properties of a 3DGS PLY file with SH up to ``sh_degree``, in order."""
    n_rest = 3 * ((sh_degree + 1) ** 2 - 1)
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(n_rest)]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def write_gaussians_ply(path: str | os.PathLike, gaussians: Gaussians) -> Path:
    """Write ``gaussians`` to ``path`` (parent folders created; written atomically). Returns the path."""
    path = Path(path)
    g = gaussians.detach().to("cpu", torch.float32)
    n = len(g)
    names = ply_property_names(g.sh_degree)
    columns = [g.means.numpy(), np.zeros((n, 3), np.float32), g.sh_dc[:, 0].numpy(),
               g.sh_rest.transpose(1, 2).reshape(n, -1).numpy(),  # [N, 3, K-1] -> channel-major
               g.opacity_logits[:, None].numpy(), g.log_scales.numpy(), g.quats.numpy()]
    table = np.concatenate(columns, axis=1)
    records = np.empty(n, dtype=[(name, "<f4") for name in names])
    for i, name in enumerate(names):
        records[name] = table[:, i]
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    header += [f"property float {name}" for name in names] + ["end_header"]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(records.tobytes())
    os.replace(tmp, path)
    return path


def _parse_header(f, path: Path) -> tuple[str, list[tuple[str, int, list[tuple[str, str]]]]]:
    if f.readline().strip() != b"ply":
        raise UserError(f"{path} is not a PLY file (it does not start with 'ply')")
    fmt, elements = None, []
    while True:
        line = f.readline()
        if not line:
            raise UserError(f"{path}: PLY header has no end_header line")
        words = line.decode("ascii", errors="replace").split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "end_header":
            break
        if words[0] == "format":
            fmt = words[1]
        elif words[0] == "element":
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property":
            if not elements:
                raise UserError(f"{path}: PLY property before any element")
            if words[1] == "list":
                raise UserError(f"{path}: list property '{words[-1]}' is not supported in a Gaussian PLY")
            if words[1] not in _PLY_TYPES:
                raise UserError(f"{path}: unknown PLY property type '{words[1]}'")
            elements[-1][2].append((words[2], _PLY_TYPES[words[1]]))
    if fmt not in ("binary_little_endian", "binary_big_endian"):
        raise UserError(f"{path}: only binary PLY files are supported, this one is '{fmt}'")
    return fmt, elements


def read_gaussians_ply(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> Gaussians:
    """Read a 3DGS PLY file written by ``write_gaussians_ply`` or the 3DGS tools."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such PLY file: {path}")
    with open(path, "rb") as f:
        fmt, elements = _parse_header(f, path)
        endian = "<" if fmt == "binary_little_endian" else ">"
        data = None
        for name, count, props in elements:
            rec = np.dtype([(p, endian + t) for p, t in props])
            raw = f.read(rec.itemsize * count)
            if len(raw) != rec.itemsize * count:
                raise UserError(f"{path}: file ends inside element '{name}' "
                                f"({len(raw)} of {rec.itemsize * count} bytes)")
            block = np.frombuffer(raw, dtype=rec)
            if name == "vertex":
                data = block
                break
    if data is None:
        raise UserError(f"{path}: PLY file has no 'vertex' element")
    names = set(data.dtype.names)
    n_rest = sum(1 for p in names if p.startswith("f_rest_"))
    k = n_rest // 3 + 1
    if n_rest % 3 or k not in (1, 4, 9, 16):
        raise UserError(f"{path}: {n_rest} f_rest properties do not match an SH degree of 0..3")
    missing = [p for p in ply_property_names(int(round(k ** 0.5)) - 1) if p not in names and p[0] != "n"]
    if missing:
        raise UserError(f"{path}: not a 3D Gaussian PLY, missing properties {missing}")

    def cols(*props: str) -> torch.Tensor:
        arr = np.stack([np.asarray(data[p], dtype=np.float64) for p in props], axis=1) if props else \
            np.zeros((data.shape[0], 0), np.float64)
        return torch.from_numpy(arr).to(dtype)

    n = data.shape[0]
    sh_rest = cols(*[f"f_rest_{i}" for i in range(n_rest)]).reshape(n, 3, k - 1).transpose(1, 2).contiguous()
    return Gaussians(means=cols("x", "y", "z"), quats=cols("rot_0", "rot_1", "rot_2", "rot_3"),
                     log_scales=cols("scale_0", "scale_1", "scale_2"), opacity_logits=cols("opacity")[:, 0],
                     sh_dc=cols("f_dc_0", "f_dc_1", "f_dc_2")[:, None, :], sh_rest=sh_rest)
