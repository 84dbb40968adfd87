"""Silhouette antialiasing: the gradient of an image w.r.t. where the mesh's outline lies.

A rasterised image is piecewise constant in the vertex positions at silhouettes (a pixel is in
or out), so without this step geometry learns nothing from its outline. As nvdiffrast's
``antialias`` (Laine et al. 2020, Sec. 3.3) does, for every pair of horizontally or vertically
adjacent pixels that see different faces:

1. the pixel with the nearer surface is the *front* pixel f, the other the *back* pixel o;
2. the segment from f's centre to o's centre is followed across f's surface: it leaves each face
   through the edge whose screen-space edge function turns negative first and enters the face
   across that edge, until it leaves through a *silhouette* edge -- on the mesh's boundary, or
   between a face turned towards the camera and one turned away -- at the fraction
   ``a = w_f / (w_f - w_o)`` of the way (``w`` is that edge's term of ``rasterize``, affine in
   screen space up to a constant factor). A segment that ends on the surface has no silhouette;
3. the colours are blended by the edge's coverage: if a > 1/2 the surface reaches into o's half
   of the segment and o takes the share a - 1/2 of f's colour; if a < 1/2 it stops short in f's
   half and f takes the share 1/2 - a of o's colour. Both read ``out += (a - 1/2) (c_f - c_o)`` at
   the covered pixel, continuous in a. As in nvdiffrast, an edge steeper than 45 degrees is
   blended by horizontal pairs only and a flatter one by vertical pairs only, so that a pixel's
   coverage is not counted twice.

Step 2's walk is what lets meshes with faces smaller than a pixel (a fine DMTet mesh seen at low
resolution) still find their outline; nvdiffrast tests the front pixel's own face only. The
blend is differentiable w.r.t. the colours and, through a, the vertices of the silhouette edge:
moving an outline edge by dx moves the pixel's colour by ``(c_f - c_o) dx / pixel``, the 1D
coverage derivative. What it does not do: coverage is measured along the pair's axis only (a
pixel touched by several pairs adds their deltas, and corners are not exact); a silhouette met
at an edge of the wrong orientation ends the walk (no blend there); a walk longer than
``max_faces`` faces gives up; it needs consistently wound faces (the facing test compares windings
across an edge) and a manifold mesh near the outline (non-manifold edges count as boundary); the
colour of the front pixel stands for the whole surface up to the outline (no re-shading at the
edge); depth and normals are not blended.
"""

from __future__ import annotations

import torch
from torch import Tensor

from distill3d.render.rasterize import Rasterization, edge_terms, pixel_directions
from distill3d.scene.triangle_mesh import edge_neighbours

__all__ = ["antialias"]

_CHUNK = 1 << 20  # adjacent pixel pairs examined at once
_EDGE_CORNERS = ((1, 2), (2, 0), (0, 1))  # edge i of a face joins these corners


def _adjacent_pairs(face_id: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Horizontally and vertically adjacent pixels seeing different faces: flat indices a [n],
    b [n] and whether the pair is horizontal [n]."""
    B, H, W = face_id.shape
    idx = torch.arange(B * H * W, device=face_id.device).reshape(B, H, W)
    across = idx[:, :, :-1][face_id[:, :, :-1] != face_id[:, :, 1:]]
    down = idx[:, :-1, :][face_id[:, :-1, :] != face_id[:, 1:, :]]
    horizontal = torch.cat([torch.ones_like(across, dtype=torch.bool), torch.zeros_like(down, dtype=torch.bool)])
    return torch.cat([across, down]), torch.cat([across + 1, down + W]), horizontal


@torch.no_grad()
def _silhouette_crossings(rast: Rasterization, front: Tensor, back: Tensor, horizontal: Tensor,
                          neighbours: Tensor, max_faces: int) -> tuple[Tensor, Tensor, Tensor]:
    """Walk the segment from each front pixel's centre towards its back pixel's across the front
    surface (face to face through shared edges) until it leaves through a silhouette edge.

    front, back: [n] flat pixel indices; horizontal: [n] whether they lie side by side. Returns
    found [n] bool, and the face [n] and its edge [n] (index 0..2) where the segment crosses the
    silhouette. Not found: the segment ends on the surface, crosses more than ``max_faces`` faces
    first, or meets an edge of the other orientation (steeper than 45 degrees for a vertical pair,
    flatter for a horizontal one: that edge is the other pair's to blend, as in nvdiffrast).
    """
    H, W = rast.cameras.height, rast.cameras.width
    verts, faces = rast.verts_cam.detach(), rast.faces
    cam = front // (H * W)
    rest_f, rest_b = front % (H * W), back % (H * W)
    d0 = pixel_directions(rast.cameras, cam, rest_f % W, rest_f // W, verts.dtype)
    d1 = pixel_directions(rast.cameras, cam, rest_b % W, rest_b // W, verts.dtype)
    face = rast.face_id.reshape(-1)[front].clone()
    entered = torch.zeros(len(front), dtype=verts.dtype, device=verts.device)  # segment fraction
    found = torch.zeros(len(front), dtype=torch.bool, device=verts.device)
    edge = torch.zeros_like(face)
    walking = torch.arange(len(front), device=verts.device)
    for _ in range(max_faces):
        if walking.numel() == 0:
            break
        c = cam[walking]
        cross, det = edge_terms(verts[c[:, None], faces[face[walking]]])
        facing = torch.sign(det)[:, None]                                # the face's winding as seen
        w0 = torch.einsum("nij,nj->ni", cross, d0[walking]) * facing     # >= 0 inside the face
        w1 = torch.einsum("nij,nj->ni", cross, d1[walking]) * facing
        falling = w1 < w0
        crossing = torch.where(falling, w0 / torch.where(falling, w0 - w1, torch.ones_like(w0)),
                               torch.full_like(w0, float("inf")))
        leave, exit_edge = crossing.min(dim=-1)
        on_segment = torch.maximum(leave, entered[walking]) < 1.0
        other = neighbours[face[walking], exit_edge]
        _, other_det = edge_terms(verts[c[:, None], faces[other.clamp_min(0)]])
        silhouette = on_segment & ((other < 0) | (torch.sign(other_det) != facing[:, 0]))
        # the edge line's normal in pixel units is (c_x / fx, c_y / fy) for its cross product c
        K = rast.cameras.K.to(verts.dtype)[c]
        c_edge = cross[torch.arange(len(walking), device=verts.device), exit_edge]
        steep = (c_edge[:, 0] / K[:, 0, 0]).abs() >= (c_edge[:, 1] / K[:, 1, 1]).abs()
        ours = silhouette & (steep == horizontal[walking])
        done = walking[ours]
        found[done], edge[done] = True, exit_edge[ours]
        go_on = on_segment & ~silhouette                                 # every silhouette ends the walk
        nxt = walking[go_on]
        face[nxt], entered[nxt] = other[go_on], torch.maximum(leave[go_on], entered[nxt])
        walking = nxt
    return found, face, edge


def antialias(color: Tensor, rast: Rasterization, *, neighbours: Tensor | None = None,
              max_faces: int = 16) -> Tensor:
    """Blend colours across silhouette edges by their sub-pixel coverage (module docstring).

    color: [B, H, W, C] image made from ``rast`` (background already composited where no face).
    rast: the rasterisation the image came from.
    neighbours: [F, 3] face across each edge (``edge_neighbours(rast.faces)``, computed if None;
        pass it when rendering one mesh many times).
    max_faces: faces the walk from a pixel towards its neighbour crosses at most in search of the
        silhouette (faces smaller than a pixel put it several faces away).
    Returns [B, H, W, C], differentiable w.r.t. ``color`` and the vertex positions.
    """
    B, H, W, C = color.shape
    if neighbours is None:
        neighbours = edge_neighbours(rast.faces)
    depth = torch.where(rast.mask, rast.depth.detach(), torch.full_like(rast.depth, float("inf"))).reshape(-1)
    a, b, horizontal = _adjacent_pairs(rast.face_id)
    a_front = depth[a] <= depth[b]
    front, back = torch.where(a_front, a, b), torch.where(a_front, b, a)
    keep, faces, edges = [], [], []
    for start in range(0, len(front), _CHUNK):
        sl = slice(start, start + _CHUNK)
        found, face, edge = _silhouette_crossings(rast, front[sl], back[sl], horizontal[sl], neighbours,
                                                  max_faces)
        keep.append(torch.nonzero(found).squeeze(1) + start)
        faces.append(face[found])
        edges.append(edge[found])
    flat = color.reshape(-1, C)
    if not keep:
        return color
    keep, face, edge = torch.cat(keep), torch.cat(faces), torch.cat(edges)
    front, back = front[keep], back[keep]

    # the crossing, now with gradient: only the crossed edge's term is needed
    cam = front // (H * W)
    corners = torch.tensor(_EDGE_CORNERS, device=edge.device)[edge]      # [n, 2]
    face_verts = rast.faces[face]                                        # [n, 3]
    ends = torch.gather(face_verts, 1, corners)                          # [n, 2]
    pj, pk = rast.verts_cam[cam, ends[:, 0]], rast.verts_cam[cam, ends[:, 1]]
    normal = torch.cross(pj, pk, dim=-1)
    rest_f, rest_b = front % (H * W), back % (H * W)
    w_f = (normal * pixel_directions(rast.cameras, cam, rest_f % W, rest_f // W, pj.dtype)).sum(-1)
    w_b = (normal * pixel_directions(rast.cameras, cam, rest_b % W, rest_b // W, pj.dtype)).sum(-1)
    share = w_f / (w_f - w_b)                                            # a in the module docstring
    delta = (share - 0.5)[:, None] * (flat[front] - flat[back])
    target = torch.where(share.detach() > 0.5, back, front)
    return flat.index_add(0, target, delta.to(flat.dtype)).reshape(B, H, W, C)
