"""The standard 3DGS PLY layout: exact round trips, property order, channel-major f_rest."""

import numpy as np
import pytest
import torch

from distill3d.errors import UserError
from distill3d.export.ply import ply_property_names, read_gaussians_ply, write_gaussians_ply
from distill3d.scene.gaussians import SH_C0, Gaussians


def scene(n, degree, seed=0):
    g = Gaussians.random_ball(n, sh_degree=degree, generator=torch.Generator().manual_seed(seed))
    g.sh_rest = torch.randn(g.sh_rest.shape, generator=torch.Generator().manual_seed(seed + 1))
    g.quats = torch.randn(n, 4, generator=torch.Generator().manual_seed(seed + 2))  # not normalised
    return g


def read_header(path) -> list[str]:
    lines = []
    with open(path, "rb") as f:
        while (line := f.readline().decode("ascii").strip()) != "end_header":
            lines.append(line)
    return lines


@pytest.mark.parametrize("degree", [0, 1, 3])
def test_round_trip_is_exact(tmp_path, degree):
    g = scene(37, degree)
    path = write_gaussians_ply(tmp_path / "sub" / "scene.ply", g)
    back = read_gaussians_ply(path)
    assert back.sh_degree == degree and len(back) == 37
    for name, t in g.tensors().items():
        assert torch.equal(getattr(back, name), t), name


def test_header_lists_the_standard_properties_in_order(tmp_path):
    path = write_gaussians_ply(tmp_path / "g.ply", scene(5, 3))
    header = read_header(path)
    assert header[:3] == ["ply", "format binary_little_endian 1.0", "element vertex 5"]
    props = [line.split() for line in header[3:]]
    assert all(p[:2] == ["property", "float"] for p in props)
    names = [p[2] for p in props]
    expected = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
                + [f"f_rest_{i}" for i in range(45)]
                + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
    assert names == expected == ply_property_names(3)
    assert path.stat().st_size == len(open(path, "rb").read().split(b"end_header\n")[0]) + 11 + 5 * 62 * 4


def test_values_are_stored_as_3dgs_does(tmp_path):
    g = Gaussians.from_points(torch.zeros(2, 3), torch.tensor([[1.0, 0.5, 0.0], [0.2, 0.4, 0.6]]),
                              sh_degree=1, scale=0.05, opacity=0.25)
    g.sh_rest = torch.arange(3.0).reshape(1, 3, 1) * 10 + torch.arange(3.0).reshape(1, 1, 3) \
        + torch.zeros(2, 3, 3)  # sh_rest[n, k, c] = 10 k + c
    path = write_gaussians_ply(tmp_path / "g.ply", g)
    raw = open(path, "rb").read()
    body = raw[raw.index(b"end_header\n") + 11:]
    rec = np.frombuffer(body, dtype=[(name, "<f4") for name in ply_property_names(1)])
    assert np.allclose(rec["f_dc_0"], (np.array([1.0, 0.2]) - 0.5) / SH_C0)
    # channel-major f_rest: all red coefficients (k = 0, 1, 2), then green, then blue
    assert [float(rec[f"f_rest_{i}"][0]) for i in range(9)] == [0, 10, 20, 1, 11, 21, 2, 12, 22]
    assert np.allclose(rec["opacity"], np.log(0.25 / 0.75))
    assert np.allclose(rec["scale_1"], np.log(0.05))
    assert np.allclose(rec["rot_0"], 1.0) and np.allclose(rec["nx"], 0.0)


def test_reader_reports_bad_files(tmp_path):
    with pytest.raises(UserError):
        read_gaussians_ply(tmp_path / "missing.ply")
    (tmp_path / "text.ply").write_text("ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nend_header\n")
    with pytest.raises(UserError, match="binary"):
        read_gaussians_ply(tmp_path / "text.ply")
    (tmp_path / "mesh.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 1\n"
                                        b"property float x\nproperty float y\nproperty float z\nend_header\n"
                                        + np.zeros(3, "<f4").tobytes())
    with pytest.raises(UserError, match="missing"):
        read_gaussians_ply(tmp_path / "mesh.ply")
    good = write_gaussians_ply(tmp_path / "cut.ply", scene(4, 0))
    good.write_bytes(good.read_bytes()[:-10])
    with pytest.raises(UserError, match="ends inside"):
        read_gaussians_ply(good)
