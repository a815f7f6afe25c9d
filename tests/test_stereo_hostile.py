"""Hostile tests of the stereo view synthesis (issue 12 §3, fourth round): odd disparity
values, one-eye outputs, the frame-edge rule, through the library and the step."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data as sd

from depthcraft.tasks import stereo as S
from depthcraft.tasks.lib import viewsynth as V
from depthcraft.tasks.lib.depthio import write_npy
from depthcraft.tasks.lib.images import write_image
from depthcraft.tasks.lib.step import StepContext
from depthcraft.tasks.lib.store import Artifact, sha256_file

LOWEST = float(np.finfo(np.float32).min)  # -3.4e38: a float map's usual "no data" value


def _ctx(tmp_path, img, depth, kind):
    photo = write_image(tmp_path / "photo.png", img)
    dpath = write_npy(tmp_path / "depth.npy", depth)
    return StepContext(step_id="stereo", image_name="photo", source=Artifact(str(photo), sha256_file(photo), "image"),
                       workdir=tmp_path / "work", given_depth=Artifact(str(dpath), sha256_file(dpath), "depth", {"kind": kind}))


@pytest.mark.parametrize("value", [LOWEST, -LOWEST, 1e37])
def test_float_no_data_sentinels_do_not_crash_the_warp(value):
    """A row of float32's lowest value (the "no data" of float rasters; also what
    ``cv2.dilate`` makes of a NaN row) overflowed the fill's cell sums to inf: shift_view
    raised "cannot convert float infinity to integer"."""
    img = sd.coffee()[:5, :40].copy()
    d = np.random.default_rng(0).uniform(0, 20, (5, 40)).astype(np.float32)
    d[0] = value
    for direction in (-1, 1):
        v = V.shift_view(img, d, direction=direction)
        assert v.image.shape == img.shape and np.isfinite(v.disparity).all()
    # the pair with edge dilation, from a NaN row (dilated before it is cleaned)
    d[0] = np.nan
    pair = S.render_pair(img, d, d, edge_dilation=2)
    assert pair["right"].image.shape == pair["left"].image.shape == img.shape


def test_exact_mode_takes_a_no_data_sentinel_in_the_depth_file(tmp_path):
    """`depthcraft stereo --scale 1 --depth d.npy` where d.npy marks unknown disparity with
    float32's lowest value: a traceback (OverflowError) before; now a pair, and the meta's
    divergence is a finite number (it was inf with --scale 100)."""
    img = sd.coffee()[:80, :100].copy()
    d = np.full((80, 100), 4.0, np.float32)
    d[20:40, 30:50] = 12.0
    d[:, :6] = LOWEST
    for scale in (1.0, 100.0):
        outs = S.run(_ctx(tmp_path / str(scale), img, d, "disparity"), S.StereoParams(scale=scale, layout="lr"))
        assert outs["right"].path.exists()
        assert np.isfinite(outs["main"].meta["divergence_percent"])


@pytest.mark.parametrize("eye", ["left", "right"])
def test_one_eye_into_an_mpo_is_a_jpeg(tmp_path, eye):
    """`depthcraft stereo photo.jpg --eye left -o x.mpo` (the suffix picks layout mpo) wrote a
    PNG under the .mpo name; one eye of an MPO is now that eye's JPEG."""
    img = sd.coffee()[:80, :100].copy()
    d = np.full((80, 100), 0.2, np.float32)
    d[20:60, 30:70] = 0.9
    outs = S.run(_ctx(tmp_path, img, d, "relative_inverse"), S.StereoParams(eye=eye, **S.params_for_output("x.mpo")))
    assert outs["main"].path.read_bytes()[:3] == b"\xff\xd8\xff"


def test_shift_view_builds_its_layers_with_its_own_depth_edge_threshold():
    """``shift_view(tau=...)`` built its background layer's depth layers at the default
    threshold (1.0 px) whatever ``tau`` was: 786 pixels differed by up to 9 levels from the
    layers built at ``tau`` (as parallax does with its own 1.5)."""
    img = sd.coffee()[:120, :200].copy()
    d = np.full((120, 200), 2.0, np.float32)
    d[:, 100:] = 3.3  # a second background plane 1.3 px nearer: one depth layer at 1.5, two at 1.0
    d[30:90, 40:80] = 14.0
    d[20:70, 120:160] = 12.0
    tau = 1.5
    own = V.make_layers(img, V.hidden_mask(d, sides="right", tau=tau), disparity=d, sides="right", jump=tau)
    assert np.array_equal(V.shift_view(img, d, tau=tau).image, V.shift_view(img, d, tau=tau, layers=own).image)


@pytest.mark.parametrize("layout", ["sbs", "hsbs", "anaglyph", "lr"])
def test_one_eye_of_a_clip_carries_no_3d_layout_tag(tmp_path, layout):
    """`depthcraft stereo clip.mp4 --eye left -o m.mp4` wrote one eye (a 2D video of the
    clip's size) as ``m_SBS_LR.mp4``: 3D players read the tag and split each frame in two.
    One eye is now written where -o says; the pair keeps its tag."""
    from depthcraft.tasks.clips import output_paths

    out = tmp_path / "m.mp4"
    for eye in ("left", "right"):
        assert output_paths("stereo", out, ["main"], S.StereoParams(eye=eye, layout=layout))["main"] == out
    assert output_paths("stereo", out, ["main"], S.StereoParams(layout=layout))["main"] != out


def test_a_float_photo_renders_as_its_uint8_values():
    """A float32 photo (0..255, as evaluation code reads them) made the fill read
    uninitialised memory where the photo divides into whole fill cells (Middlebury sawtooth:
    4663 pixels up to 199 levels off); now it renders as the same photo in uint8, and other
    dtypes are refused with a clear error."""
    img = sd.coffee()[:120, :200].copy()  # both sides even: the banded fill path
    d = np.full((120, 200), 2.0, np.float32)
    d[30:90, 40:80] = 14.0
    d[20:70, 120:200] = 9.0
    want = V.shift_view(img, d)
    got = V.shift_view(img.astype(np.float32), d)
    assert np.array_equal(got.image, want.image) and np.array_equal(got.filled, want.filled)
    with pytest.raises(Exception, match="uint16"):
        V.shift_view(img.astype(np.uint16) * 257, d)
    # the parallax renderer's background layer too (133600 of 134400 pixels differed)
    near = np.full((120, 200), 0.2, np.float32)
    near[30:90, 40:80] = 0.9
    frames = [V.ParallaxRenderer(im, near, (192, 120), max_parallax=12).render(V.Pose(x=8))[0]
              for im in (img, img.astype(np.float32))]
    assert np.array_equal(frames[0], frames[1])


def test_soft_edges_of_a_wide_band_of_noisy_depth_do_not_crash_the_remap():
    """More than 32767 soft-edge pixels in one 16-row band (noisy depth 6000 px wide, or a
    64 x 20000 strip) made ``_blend``'s one-row ``cv2.remap`` fail its SHRT_MAX assertion."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (16, 6000, 3), dtype=np.uint8)
    d = rng.uniform(0, 20, (16, 6000)).astype(np.float32)
    v = V.shift_view(img, d)
    assert v.image.shape == img.shape and 0 < v.filled.mean() < 1



def test_the_blend_grid_reads_what_one_row_reads(monkeypatch):
    """The grid layout of ``_blend``'s points changes no pixel (cubic and linear reads)."""
    from depthcraft.tasks.lib.viewsynth import shift as SH

    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (40, 300, 3), dtype=np.uint8)
    d = rng.uniform(0, 20, (40, 300)).astype(np.float32)
    for interp in ("cubic", "linear"):
        one_row = V.shift_view(img, d, interpolation=interp).image
        monkeypatch.setattr(SH, "BLEND_COLS", 7)
        assert np.array_equal(V.shift_view(img, d, interpolation=interp).image, one_row)
        monkeypatch.setattr(SH, "BLEND_COLS", 4096)


def test_a_photo_over_16383_rows_is_warped_band_by_band(monkeypatch):
    """The photo and its background layer are one stack twice the photo's height: above
    16383 rows it was over ``cv2.remap``'s 32767 and the pair crashed (a 64 x 20000 scroll
    capture). Such a stack is now read band by band, with the same pixels."""
    from depthcraft.tasks.lib.viewsynth import shift as SH

    rng = np.random.default_rng(2)
    tall = rng.integers(0, 256, (16400, 64, 3), dtype=np.uint8)
    step = np.zeros((16400, 64), np.float32)
    step[:, 20:40] = 6.0
    v = V.shift_view(tall, step)
    assert v.filled[:, 35:40].all() and np.array_equal(v.image[:, 45:], tall[:, 45:])
    img = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    d = np.zeros((90, 120), np.float32)
    d[20:70, 30:80] = 1.0
    d += rng.uniform(0, 0.05, d.shape).astype(np.float32)
    half = (d - 0.5) * 12
    whole = S.render_pair(img, half, half, edge_dilation=1)
    monkeypatch.setattr(SH, "REMAP_MAX", 150)  # the stack (180 rows) over it, the photo under it
    banded = S.render_pair(img, half, half, edge_dilation=1)
    for eye in ("left", "right"):
        assert whole[eye].filled.any()
        assert np.array_equal(banded[eye].image, whole[eye].image)
        assert np.array_equal(banded[eye].filled, whole[eye].filled)
    monkeypatch.setattr(SH, "REMAP_MAX", 100)  # the photo's width over it: one clear error
    with pytest.raises(S.ParameterError, match="at most 99 px"):
        S.render_pair(img, half, half)
