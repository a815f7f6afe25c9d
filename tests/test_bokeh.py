"""Bokeh: focus modes, signed blur, occlusion (no sharp-foreground bleeding, blurred foreground
covering), aperture shapes, highlights, linear light."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data as sd

from depthcraft.tasks import bokeh as B
from depthcraft.tasks.lib.depthio import write_npy
from depthcraft.tasks.lib.images import read_rgb, write_image
from depthcraft.tasks.lib.step import StepContext
from depthcraft.tasks.lib.store import Artifact, sha256_file


def _scene(h=160, w=160):
    """Dark far background with bright dots, a bright near square in the middle."""
    img = np.full((h, w, 3), 30, np.uint8)
    img[::16, ::16] = 255
    near = np.full((h, w), 0.1, np.float32)
    img[60:100, 60:100] = (250, 250, 250)
    near[60:100, 60:100] = 0.9
    return img, near


def test_in_focus_sharp_foreground_does_not_bleed_into_the_blurred_background():
    img, near = _scene()
    out = B.render_bokeh(img, near, focus=0.9, max_radius=10)
    np.testing.assert_array_equal(out[62:98, 62:98], img[62:98, 62:98])  # subject stays sharp
    ring = out[50:58, 60:100].astype(float)  # background just above the bright square
    assert ring.mean() < 60  # dark, not a halo of the square
    # while the background itself is blurred: the dots are spread out
    assert out[0:8, 0:8].std() < img[0:8, 0:8].std() / 3


def test_blurred_foreground_softly_covers_the_sharp_subject_behind():
    img, near = _scene()
    out = B.render_bokeh(img, near, focus=0.1, max_radius=10)
    # the bright near square spreads over the dark background around it
    assert out[54:58, 70:90].mean() > img[54:58, 70:90].mean() + 40
    # and its own edge is soft
    assert 40 < out[60, 80].mean() < 250
    # far from it, the in-focus background is untouched
    np.testing.assert_array_equal(out[:30, :30], img[:30, :30])


def test_signed_radius_and_focus_modes():
    n = np.linspace(0, 1, 101, dtype=np.float32)[None, :].repeat(4, 0)
    r = B.signed_radius(n, 0.5, 20.0, band=0.0)
    assert r[0, 50] == 0 and r[0, -1] == pytest.approx(20.0) and r[0, 0] == pytest.approx(-20.0)
    assert (np.diff(r[0]) >= 0).all()
    assert B.focus_value(n, "depth", depth=0.3) == 0.3
    assert B.focus_value(n, "point", point=(0.25, 0.5)) == pytest.approx(0.25, abs=0.02)
    assert B.focus_value(n, "point", point=(75, 2)) == pytest.approx(0.75, abs=0.02)
    assert B.focus_value(n, "nearest") > 0.95
    with pytest.raises(Exception, match="focus_x"):
        B.focus_value(n, "point", point=(500, 1))


def test_aperture_kernels():
    disc = B.aperture_kernel(6, "disc")
    hexa = B.aperture_kernel(6, "polygon", blades=6)
    assert disc.sum() == pytest.approx(1.0) and hexa.sum() == pytest.approx(1.0)
    c = disc.shape[0] // 2
    assert disc[c, c] > 0 and disc[c, 0] == 0
    # the hexagon is smaller than the disc between its corners
    assert (hexa > 0).sum() < (disc > 0).sum()


def test_highlight_boost_and_linear_light():
    img, near = _scene()
    plain = B.render_bokeh(img, near, focus=0.9, max_radius=8).astype(float)
    boosted = B.render_bokeh(img, near, focus=0.9, max_radius=8, highlight_boost=4.0).astype(float)
    assert boosted[:50].mean() > plain[:50].mean() + 2
    # blur in linear light keeps an average brighter than blurring the sRGB codes would
    half = np.zeros((64, 64, 3), np.uint8)
    half[:, ::2] = 255
    out = B.render_bokeh(half, np.zeros((64, 64), np.float32), focus=1.0, max_radius=6, band=0.0)
    assert out[20:44, 20:44].mean() > 170  # sRGB of 0.5 linear is 188; naive averaging gives 128
    lin = B.srgb_to_linear(np.arange(256, dtype=np.uint8))
    np.testing.assert_array_equal(B.linear_to_srgb_fast(lin), np.arange(256))


def test_bokeh_step_on_a_real_photo(tmp_path):
    img = sd.astronaut()[::2, ::2].copy()
    h, w = img.shape[:2]
    near = np.tile(np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None], (1, w))
    photo = write_image(tmp_path / "p.png", img)
    depth = write_npy(tmp_path / "d.npy", near)
    ctx = StepContext(step_id="bokeh", image_name="p", source=Artifact(str(photo), sha256_file(photo), "image"),
                      workdir=tmp_path / "w", given_depth=Artifact(str(depth), sha256_file(depth), "depth", {"kind": "relative_inverse"}))
    outs = B.run(ctx, B.BokehParams(focus_x=0.5, focus_y=0.9, aperture=2.0, shape="polygon"))
    out = read_rgb(outs["main"].path)
    assert out.shape == img.shape and "image" in outs
    assert outs["main"].meta["focus_mode"] == "point"
    sharp_err = np.abs(out[-20:].astype(int) - img[-20:].astype(int)).mean()
    blur_err = np.abs(out[:20].astype(int) - img[:20].astype(int)).mean()
    assert sharp_err < 2 and blur_err > 5  # the focused bottom stays, the far top blurs
    assert B.params_for_output("x.jpg") == {"format": "jpg"}


# -- the seam where the in-focus region meets a slightly nearer one (issue 12 §4) ---------------
def _two_planes(w: int, h: int, left: int, right: int, dn: float = 0.0535):
    """In focus (nearness 0.5) on the left, a plane slightly nearer on the right: at this size
    its blur radius is just above the sharp threshold (one unblurred slice)."""
    img = np.empty((h, w, 3), np.uint8)
    img[:, : w // 2] = left
    img[:, w // 2:] = right
    n = np.full((h, w), 0.5, np.float32)
    n[:, w // 2:] = 0.5 + dn
    return img, n


@pytest.mark.parametrize("size", [(1600, 1200), (3200, 2400)])  # rendered at 1/2 and 1/4 size
def test_no_seam_where_focus_meets_a_slightly_nearer_plane(size):
    w, h = size
    img, n = _two_planes(w, h, 128, 128)
    maxr = 0.015 * w
    r = float(B.signed_radius(n, 0.5, maxr)[0, -1])
    assert 0.5 * (w // 1600) < r < 1.5 * max(1, w // 1600)  # the near plane is barely blurred
    out = B.render_bokeh(img, n, focus=0.5, max_radius=maxr)
    # one grey everywhere: blurring a flat image changes nothing, so any step is a seam
    band = out[:, w // 2 - 16: w // 2 + 16].astype(int)
    assert np.abs(band - 128).max() <= 1


@pytest.mark.parametrize("tones", [(200, 60), (60, 200)])
def test_step_across_the_boundary_follows_the_blur_profile(tones):
    """Two tones: across the boundary the output ramps monotonically from the in-focus tone to
    the near plane's, over about the near plane's blur diameter, with no dip or overshoot."""
    w, h = 3200, 2400
    a, b = tones
    img, n = _two_planes(w, h, a, b)
    maxr = 0.015 * w
    r = float(B.signed_radius(n, 0.5, maxr)[0, -1])
    out = B.render_bokeh(img, n, focus=0.5, max_radius=maxr)
    row = out[h // 2, w // 2 - 24: w // 2 + 24, 1].astype(int)
    lo, hi = min(a, b), max(a, b)
    assert row.min() >= lo - 1 and row.max() <= hi + 1  # no dark or bright line
    steps = np.diff(row) * np.sign(b - a)
    assert steps.min() >= -1  # monotonic
    ramp = np.flatnonzero((row > lo + 2) & (row < hi - 2))
    assert ramp.size and ramp.size <= 2 * r + 2 * 4  # about the blur diameter (+ the resampling)
    assert abs((ramp.min() + ramp.max()) / 2 - 24) <= r + 2  # centred on the boundary
