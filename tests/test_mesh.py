"""3D export: geometry from depth + field of view, edge cutting, and files a standard reader opens."""

from __future__ import annotations

import math

import numpy as np
import pytest
import trimesh
from PIL import Image
from skimage import data

from depthcraft.tasks.lib.depthio import write_npy
from depthcraft.tasks.lib.depthmap import DepthMap
from depthcraft.tasks.lib.errors import ParameterError
from depthcraft.tasks.lib.formats import MetricScale
from depthcraft.tasks.mesh import (MeshParams, depth_mesh, export_3d, grid_indices, params_for_output, point_cloud, run,
                        stride_for)
from depthcraft.tasks.lib.step import StepContext
from depthcraft.tasks.lib.store import Store

RGB = data.astronaut()[::4, ::4].copy()  # 128 x 128 real photo


def step_depth(h=128, w=128, near=1.5, far=3.0):
    z = np.full((h, w), far, np.float32)
    z[32:96, 40:100] = near  # a box in front of a wall
    return z


def test_depth_edge_is_cut_not_stretched():
    z = step_depth()
    m = depth_mesh(z, RGB, 60.0, stride=1, edge_cut=0.1)
    zf = -m.vertices[m.faces][..., 2]  # glTF: the camera looks down -z
    assert (zf.max(1) / zf.min(1) <= 1.1).all()  # no triangle joins box and wall
    # and every triangle lying wholly on the box or wholly on the wall is kept
    near = z == 1.5
    tl, tr, bl, br = near[:-1, :-1], near[:-1, 1:], near[1:, :-1], near[1:, 1:]
    uniform = lambda a, b, c: ((a == b) & (b == c)).sum()  # noqa: E731
    assert len(m.faces) == uniform(tl, bl, tr) + uniform(tr, bl, br)
    full = 2 * 127 * 127
    assert full - len(m.faces) > 2 * 2 * (64 + 60 - 2)  # the whole outline went, both sides
    kept = depth_mesh(z, RGB, 60.0, stride=1, edge_cut=None)
    assert len(kept.faces) == full
    assert (np.ptp(-kept.vertices[kept.faces][..., 2], axis=1) > 1).any()  # without the cut: stretched curtains


def test_back_projection_follows_the_field_of_view():
    z = np.full((128, 128), 2.0, np.float32)
    m = depth_mesh(z, RGB, 90.0, stride=1)
    v = m.vertices.reshape(128, 128, 3)
    # horizontal fov 90 degrees: the outer pixel edges lie at x = +-z; pixel centres half a pixel in
    assert v[0, -1, 0] == pytest.approx(2.0 * (127 / 2) / 64, rel=1e-5)
    assert v[0, 0, 0] == pytest.approx(-v[0, -1, 0], rel=1e-6)
    assert v[0, 0, 1] > 0 > v[-1, 0, 1]  # top row is up (glTF y up)
    assert np.allclose(v[..., 2], -2.0)
    normals = trimesh.Trimesh(m.vertices, m.faces, process=False).face_normals
    assert (normals[:, 2] > 0.99).all()  # counter-clockwise as seen from the camera


def test_glb_opens_in_trimesh_with_counts_and_texture(tmp_path):
    dm = DepthMap(step_depth(), kind="metric", fov_deg=50.0)
    path, info = export_3d(RGB, dm, tmp_path / "m.glb", fmt="glb", stride=2)
    scene = trimesh.load(path)
    (g,) = scene.geometry.values()
    assert len(g.vertices) == info["vertices"] and len(g.faces) == info["faces"] > 0
    assert info["stride"] == 2 and info["fov_deg"] == 50.0 and info["units"] == "meters"
    tex = np.asarray(g.visual.material.baseColorTexture.convert("RGB"))
    assert tex.shape == RGB.shape
    psnr = 10 * np.log10(255**2 / np.mean((tex.astype(float) - RGB) ** 2))
    assert psnr > 30  # JPEG of the photo itself
    # each vertex's uv points at the pixel it was back-projected from
    uv = g.visual.uv  # trimesh flips v to the bottom-left origin on load
    px, py = uv[:, 0] * 128 - 0.5, (1 - uv[:, 1]) * 128 - 0.5
    assert np.allclose(px, np.round(px), atol=1e-3) and set(np.round(px).astype(int) % 2) <= {0, 1}
    fx = 64 / math.tan(math.radians(25))
    zc = -g.vertices[:, 2]
    assert np.allclose(g.vertices[:, 0], zc * (px - 63.5) / fx, atol=1e-4)
    assert np.allclose(g.vertices[:, 1], -zc * (py - 63.5) / fx, atol=1e-4)
    box = (py >= 32) & (py <= 95) & (px >= 40) & (px <= 99)
    assert np.allclose(zc[box], 1.5) and np.allclose(zc[~box], 3.0)


def test_point_cloud_ply_and_obj_open_in_trimesh(tmp_path):
    z = step_depth()
    z[0:4, 0:4] = np.nan  # no depth: no point
    dm = DepthMap(z, kind="metric")
    ply, info = export_3d(RGB, dm, tmp_path / "p.ply", fmt="ply", stride=1)
    pc = trimesh.load(ply)
    assert isinstance(pc, trimesh.PointCloud) and len(pc.vertices) == 128 * 128 - 16 == info["points"]
    assert np.array_equal(pc.colors[:, :3], RGB.reshape(-1, 3)[np.isfinite(z).ravel()])
    pts, _ = point_cloud(z, RGB, 60.0)
    assert np.allclose(pc.vertices, pts)
    obj, info = export_3d(RGB, dm, tmp_path / "m.obj", fmt="obj", stride=4)
    mesh = trimesh.load(obj, process=False)
    assert len(mesh.vertices) == info["vertices"] and len(mesh.faces) == info["faces"]
    assert mesh.visual.kind == "vertex"
    ys, xs = grid_indices(128, 4), grid_indices(128, 4)
    assert set(map(tuple, mesh.visual.vertex_colors[:, :3])) <= set(map(tuple, RGB[np.ix_(ys, xs)].reshape(-1, 3)))


def test_face_budget_picks_the_stride():
    for budget in (1000, 20_000, 500_000):
        s = stride_for(640, 480, budget)
        faces = 2 * (len(grid_indices(640, s)) - 1) * (len(grid_indices(480, s)) - 1)
        assert faces <= budget
        if s > 1:  # and it is the finest stride within the budget
            assert 2 * (len(grid_indices(640, s - 1)) - 1) * (len(grid_indices(480, s - 1)) - 1) > budget
        sp = stride_for(640, 480, budget, points=True)
        assert len(grid_indices(640, sp)) * len(grid_indices(480, sp)) <= budget
        assert sp == 1 or len(grid_indices(640, sp - 1)) * len(grid_indices(480, sp - 1)) > budget


def test_relative_map_gets_relative_units_or_a_metric_scale(tmp_path):
    rel = DepthMap(1.0 / step_depth(), kind="relative_inverse")
    _, info = export_3d(RGB, rel, tmp_path / "r.glb", stride=4)
    assert info["units"] == "relative"
    p, info = export_3d(RGB, rel, tmp_path / "m.glb", stride=4, scale=MetricScale(near=0.8, far=1.6))
    g = next(iter(trimesh.load(p).geometry.values()))
    assert info["units"] == "meters" and -g.vertices[:, 2].max() == pytest.approx(0.8, rel=1e-4)
    assert -g.vertices[:, 2].min() == pytest.approx(1.6, rel=1e-4)


def test_mesh_step_and_output_suffix(tmp_path):
    Image.fromarray(RGB).save(tmp_path / "photo.png")
    write_npy(tmp_path / "d.npy", 1.0 / step_depth())
    store = Store(tmp_path / "store")
    ctx = StepContext(step_id="mesh", image_name="photo", source=store.put_file(tmp_path / "photo.png", "image"),
                      workdir=tmp_path / "work", given_depth=store.put_file(tmp_path / "d.npy", "depth",
                                                                            {"kind": "relative_inverse"}))
    outs = run(ctx, MeshParams(format="glb", max_faces=5000, fov_deg=40))
    assert outs["main"].kind == "mesh" and outs["main"].path.suffix == ".glb"
    assert outs["main"].meta["faces"] <= 5000 and outs["main"].meta["fov_deg"] == 40
    assert trimesh.load(outs["main"].path).geometry
    assert params_for_output("x.PLY") == {"format": "ply"}
    with pytest.raises(ParameterError):
        params_for_output("x.stl")
    with pytest.raises(ParameterError):
        depth_mesh(np.ones((10, 10), np.float32), RGB, 60.0)
    with pytest.raises(ParameterError, match="edge_cut"):
        export_3d(RGB, DepthMap(np.full((128, 128), np.nan, np.float32), kind="metric"), tmp_path / "x.glb")
