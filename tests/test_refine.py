"""The ``refine`` step: two-layer edge matting guided by the photo, on real stereo data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from depthcraft.tasks.lib.depthio import write_npy
from depthcraft.tasks.lib.errors import InputError, ParameterError
from depthcraft.tasks.refine import RefineParams, SPEC, params_for_output, refine_depth, run
from depthcraft.tasks.lib.step import StepContext
from depthcraft.tasks.lib.store import Store

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def _motorcycle():
    """Left photo and its true disparity (unknown pixels filled along the row from the left)."""
    left, _, disp = skdata.stereo_motorcycle()
    d = disp.astype(np.float32).copy()
    ok = np.isfinite(d)
    for y in range(d.shape[0]):
        idx = np.where(ok[y], np.arange(d.shape[1]), 0)
        np.maximum.accumulate(idx, out=idx)
        d[y] = d[y, idx]
    d[~np.isfinite(d)] = np.nanmedian(d[np.isfinite(d)])
    return left, d, ok


def _degrade(d, factor=8):
    """The true disparity at 1/factor resolution, bilinearly enlarged (blurry edges)."""
    h, w = d.shape
    small = cv2.resize(d, (w // factor, h // factor), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _edge_band(d, jump=2.0, radius=3):
    gx = np.abs(np.diff(d, axis=1, append=d[:, -1:]))
    gy = np.abs(np.diff(d, axis=0, append=d[-1:, :]))
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(((gx >= jump) | (gy >= jump)).astype(np.uint8), k).astype(bool)


@pytest.fixture(scope="module")
def moto():
    left, truth, known = _motorcycle()
    return left, truth, known, _degrade(truth)


def test_edges_are_rebuilt_on_a_real_stereo_pair(moto):
    left, truth, known, blurry = moto
    out = refine_depth(left, blurry)
    band = _edge_band(truth) & known
    rmse = lambda a, m: float(np.sqrt(np.mean((a[m] - truth[m]) ** 2)))
    assert rmse(out, band) < 0.85 * rmse(blurry, band)  # edges rebuilt, not just smoothed
    assert rmse(out, known) < rmse(blurry, known)  # and nothing made worse overall
    # Units kept: still disparity in pixels over the same range.
    assert out.dtype == np.float32 and out.shape == truth.shape
    assert abs(np.median(out) - np.median(blurry)) < 0.5
    assert out.min() >= blurry.min() - 1e-3 and out.max() <= blurry.max() + 1e-3


def test_the_near_side_stays_inside_its_object():
    # A bright square (near, 40 px) on a dark textured background (far, 10 px), blurred depth.
    rng = np.random.default_rng(0)
    rgb = (rng.integers(20, 60, (128, 128, 3))).astype(np.uint8)
    rgb[40:90, 30:100] = rng.integers(190, 230, (50, 70, 3))
    truth = np.full((128, 128), 10.0, np.float32)
    truth[40:90, 30:100] = 40.0
    blurry = _degrade(truth)
    out = refine_depth(rgb, blurry)
    inside = np.zeros_like(truth, bool)
    inside[40:90, 30:100] = True
    edge = _edge_band(truth, radius=2)
    assert np.abs(out - truth)[edge].mean() < 0.25 * np.abs(blurry - truth)[edge].mean()
    # The near value never leaks outside the object; the object keeps it but for a few corner pixels.
    assert out[~inside].max() < 25.0
    assert (out[inside] > 25.0).mean() > 0.99


def test_flat_regions_stay_flat_and_constant_maps_are_untouched(moto):
    left, *_ = moto
    flat = np.full(left.shape[:2], 7.5, np.float32)
    assert np.array_equal(refine_depth(left, flat), flat)
    ramp = np.repeat(np.linspace(1.0, 3.0, left.shape[0], dtype=np.float32)[:, None], left.shape[1], 1)
    out = refine_depth(left, ramp)  # a smooth slope has no edge to snap
    assert np.abs(out - ramp).max() < 0.05


def test_margin_and_tiling(moto, monkeypatch):
    left, truth, known, blurry = moto
    # margin 1 keeps the input's own position on every ramp: nothing changes.
    assert np.allclose(refine_depth(left, blurry, margin=1.0), blurry, atol=1e-4)
    # Work is split into tiles with a halo as wide as the filter's support: the result does not
    # depend on the tile size.
    import tasks.refine as R
    whole = refine_depth(left, blurry)
    monkeypatch.setattr(R, "TILE", 37)
    assert np.allclose(refine_depth(left, blurry), whole, atol=1e-4)


def test_a_step_on_a_slanted_plane_is_rebuilt():
    # Two slanted surfaces (a wedge in front of a tilted wall) meeting at a colour edge.
    rng = np.random.default_rng(1)
    h, w = 160, 200
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    truth = 10.0 + 0.05 * xx
    near = xx > 90 + 0.3 * yy
    truth[near] = 40.0 + 0.05 * yy[near]
    rgb = rng.integers(60, 90, (h, w, 3)).astype(np.uint8)
    rgb[near] = rng.integers(150, 200, (int(near.sum()), 3))
    blurry = _degrade(truth)
    out = refine_depth(rgb, blurry)
    edge = _edge_band(truth, radius=2)
    assert np.sqrt(np.mean((out - truth)[edge] ** 2)) < 0.4 * np.sqrt(np.mean((blurry - truth)[edge] ** 2))
    assert np.sqrt(np.mean((out - truth)[~edge] ** 2)) <= np.sqrt(np.mean((blurry - truth)[~edge] ** 2)) + 1e-3


def test_non_finite_values_are_put_back_where_they_were(moto):
    left, truth, known, blurry = moto
    d = blurry.copy()
    d[:5, :5] = np.inf
    d[10, 10] = np.nan
    out = refine_depth(left, d)
    assert np.isinf(out[:5, :5]).all() and np.isnan(out[10, 10])
    assert np.isfinite(out[20:, 20:]).all()


def test_size_mismatch_and_bad_parameters_are_clear_errors(moto):
    left, truth, *_ = moto
    with pytest.raises(InputError, match="depth map is"):
        refine_depth(left, truth[:-4])
    with pytest.raises(ParameterError, match="median"):
        refine_depth(left, truth, median=4)
    with pytest.raises(ParameterError, match="margin"):
        refine_depth(left, truth, margin=1.5)


def _ctx(tmp_path, rgb, depth, meta, options=None):
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    write_npy(tmp_path / "d.npy", depth)
    store = Store(tmp_path / "store")
    return StepContext(step_id="refine", image_name="photo", source=store.put_file(tmp_path / "photo.png", "image"),
                       workdir=tmp_path / "work", options=options or {},
                       given_depth=store.put_file(tmp_path / "d.npy", "depth", meta))


def test_step_keeps_kind_and_units_and_writes_both_outputs(tmp_path, moto):
    left, truth, known, blurry = moto
    ctx = _ctx(tmp_path, left, blurry, {"kind": "disparity", "source": "test"})
    outs = run(ctx, RefineParams(**params_for_output(Path("out.npy"))))
    assert set(outs) == {"depth", "main", "main_meta"} and outs["depth"].meta["kind"] == "disparity"
    assert json.loads(Path(outs["main_meta"].path).read_text())["kind"] == "disparity"  # the .npy's sidecar
    raw = np.load(outs["main"].path)
    assert raw.dtype == np.float32 and raw.shape == truth.shape
    assert np.allclose(raw, np.load(outs["depth"].path))
    assert 0.5 * truth.max() < raw.max() <= blurry.max() + 1e-3  # pixels, not 0..1
    png = run(ctx, RefineParams(**params_for_output(Path("out.png"))))["main"]
    assert np.asarray(Image.open(png.path)).dtype == np.uint8


def test_step_refuses_a_depth_map_of_another_size(tmp_path, moto):
    left, truth, *_ = moto
    ctx = _ctx(tmp_path, left, truth[::2, ::2], {"kind": "disparity"})
    with pytest.raises(InputError, match="depth map is .* but the image is"):
        run(ctx, RefineParams())


def test_step_provider_without_refine_is_refused(tmp_path, moto):
    left, truth, *_ = moto
    ctx = _ctx(tmp_path, left, truth, {"kind": "disparity"}, options={"step_provider": True})
    ctx.provider = "classic"
    with pytest.raises(ParameterError, match="cannot refine"):
        run(ctx, RefineParams())


def test_spec_and_params():
    assert SPEC.kind == "refine" and "message" in RefineParams.model_fields
    assert params_for_output(Path("x.npy")) == {"format": "raw"}
    assert params_for_output(Path("x.png")) == {"format": "grayscale"}
    with pytest.raises(Exception):
        RefineParams(radius=0)
    from depthcraft.tasks.catalog import get_step
    assert get_step("refine") is SPEC


def test_one_shot_command_on_a_shared_scene(tmp_path):
    scene = SHARED / "data" / "stereo" / "middlebury2003-teddy"
    if not scene.exists():
        pytest.skip("../shared data not present")
    sys.path.insert(0, str(SHARED / "eval"))
    import dc_eval as E

    meta = json.loads((scene / "scene.json").read_text())
    _, _, dl, _, _ = E.load_scene(str(scene))
    np.save(tmp_path / "in.npy", E.degrade(dl))
    r = subprocess.run([sys.executable, "-m", "depthcraft.flows.cli", "refine", str(scene / meta["left"]), "--depth",
                        str(tmp_path / "in.npy"), "--depth-kind", "disparity", "-o", str(tmp_path / "out.npy")],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    m = E.edge_metrics(np.load(tmp_path / "out.npy"), dl)
    b = E.edge_metrics(np.load(tmp_path / "in.npy"), dl)
    assert m["rmse_edge_band"] < 0.85 * b["rmse_edge_band"] and m["rmse_all"] < b["rmse_all"]
