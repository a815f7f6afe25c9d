"""The stereo step: modes, every layout, MPO, anaglyph matrices, the comfort check."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import skimage.data as sd
from PIL import Image

from depthcraft.tasks import stereo as S
from depthcraft.tasks.lib.depthio import write_npy
from depthcraft.tasks.lib.depthmap import DepthMap
from depthcraft.tasks.lib.images import read_rgb, write_image
from depthcraft.tasks.lib.step import StepContext
from depthcraft.tasks.lib.store import Artifact, sha256_file


def _ctx(tmp_path, img, depth, kind):
    photo = write_image(tmp_path / "photo.png", img)
    dpath = write_npy(tmp_path / "depth.npy", depth)
    return StepContext(step_id="stereo", image_name="photo", source=Artifact(str(photo), sha256_file(photo), "image"),
                       workdir=tmp_path / "work", given_depth=Artifact(str(dpath), sha256_file(dpath), "depth", {"kind": kind}))


@pytest.fixture(scope="module")
def scene():
    img = sd.chelsea()[::2, ::2].copy()  # 150 x 225
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    near = (0.2 + 0.3 * yy / h).astype(np.float32)
    near[(xx - 110) ** 2 + (yy - 70) ** 2 < 40 ** 2] = 0.9
    return img, near


@pytest.mark.parametrize("layout,shape", [("sbs", (1, 2)), ("cross", (1, 2)), ("tb", (2, 1)), ("hsbs", (1, 1)),
                                          ("htb", (1, 1)), ("anaglyph", (1, 1))])
def test_layouts_have_the_right_size(tmp_path, scene, layout, shape):
    img, near = scene
    h, w = img.shape[:2]
    outs = S.run(_ctx(tmp_path, img, near, "relative_inverse"), S.StereoParams(layout=layout))
    out = read_rgb(outs["main"].path)
    eh, ew = h * shape[0], w * shape[1]
    if layout == "hsbs":
        ew = 2 * (w // 2)
    if layout == "htb":
        eh = 2 * (h // 2)
    assert out.shape == (eh, ew, 3)
    assert {"left", "right"} <= set(outs)


def test_cross_eyed_is_side_by_side_swapped(tmp_path, scene):
    img, near = scene
    sbs = read_rgb(S.run(_ctx(tmp_path / "a", img, near, "relative_inverse"), S.StereoParams(layout="sbs"))["main"].path)
    cross = read_rgb(S.run(_ctx(tmp_path / "b", img, near, "relative_inverse"), S.StereoParams(layout="cross"))["main"].path)
    w = img.shape[1]
    np.testing.assert_array_equal(sbs[:, :w], cross[:, w:])
    assert not np.array_equal(sbs[:, :w], sbs[:, w:])  # the eyes really differ


def test_relative_mode_shifts_the_eyes_in_opposite_directions(scene):
    img, near = scene
    left_d, right_d, exact = S.eye_disparities(DepthMap(near, "relative_inverse"), divergence=4.0, convergence=0.5,
                                               scale=None, width=img.shape[1])
    assert not exact
    views = S.render_pair(img, left_d, right_d)
    yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    disc = (xx - 110) ** 2 + (yy - 70) ** 2 < 30 ** 2
    total = 4.0 / 100 * img.shape[1]
    # each eye gets half of divergence x (nearness - convergence), nearness normalised to 0..1
    n_disc = (0.9 - near.min()) / (near.max() - near.min())
    assert abs(2 * float(np.median(right_d[disc])) - total * (n_disc - 0.5)) < 0.3
    # the near disc moves right in the left view and left in the right view
    np.testing.assert_allclose(views["left"].disparity[70, 100:120], right_d[70, 110], atol=0.3)
    np.testing.assert_allclose(views["right"].disparity[70, 100:120], right_d[70, 110], atol=0.3)
    assert views["left"].filled.any() and views["right"].filled.any()
    assert views["left"].filled[:, :80].sum() > 0 or views["right"].filled[:, 120:].sum() > 0


def test_exact_mode_eye_right_is_the_photo_size_and_shifted_by_d(tmp_path):
    img = np.zeros((64, 120, 3), np.uint8)
    img[:, 60] = 255
    d = np.full((64, 120), 7.5, np.float32)
    outs = S.run(_ctx(tmp_path, img, d, "disparity"), S.StereoParams(eye="right", scale=1.0, interpolation="linear"))
    right = read_rgb(outs["main"].path)
    assert right.shape == img.shape
    row = right[20, :, 0].astype(float)
    assert abs((row * np.arange(120)).sum() / row.sum() - 52.5) < 0.05
    # scale multiplies the disparity
    outs2 = S.run(_ctx(tmp_path / "s", img, d, "disparity"), S.StereoParams(eye="right", scale=2.0, interpolation="linear"))
    row2 = read_rgb(outs2["main"].path)[20, :, 0].astype(float)
    assert abs((row2 * np.arange(120)).sum() / row2.sum() - 45.0) < 0.05


def test_lr_writes_two_files_and_mpo_holds_two_jpegs(tmp_path, scene):
    img, near = scene
    outs = S.run(_ctx(tmp_path / "lr", img, near, "relative_inverse"), S.StereoParams(layout="lr"))
    assert read_rgb(outs["left"].path).shape == img.shape and read_rgb(outs["right"].path).shape == img.shape
    p = S.params_for_output("pair.mpo")
    outs = S.run(_ctx(tmp_path / "mpo", img, near, "relative_inverse"), S.StereoParams(**p))
    with Image.open(outs["main"].path) as im:
        assert im.format == "MPO" and im.n_frames == 2
        im.seek(1)
        assert im.size == (img.shape[1], img.shape[0])


@pytest.mark.parametrize("kind", ["dubois", "half_color", "gray", "color"])
def test_anaglyph_matrices(kind, scene):
    img, _ = scene
    left, right = img, np.roll(img, 5, axis=1)
    a = S.anaglyph(left, right, kind)
    assert a.shape == img.shape and a.dtype == np.uint8
    if kind == "color":  # red from the left eye, green and blue from the right
        np.testing.assert_array_equal(a[..., 0], left[..., 0])
        np.testing.assert_array_equal(a[..., 1:], right[..., 1:])
    # the red channel follows the left image, cyan the right
    corr_l = np.corrcoef(a[..., 0].ravel(), left[..., 0].ravel())[0, 1]
    corr_r = np.corrcoef(a[..., 1].ravel(), right[..., 1].ravel())[0, 1]
    assert corr_l > 0.8 and corr_r > 0.8


def test_comfort_check_warns_above_3_percent(tmp_path, scene, caplog):
    img, near = scene
    with caplog.at_level(logging.WARNING):
        outs = S.run(_ctx(tmp_path / "a", img, near, "relative_inverse"), S.StereoParams(divergence=5.0))
    assert "warning" in outs["main"].meta and "comfortable" in caplog.text
    outs = S.run(_ctx(tmp_path / "b", img, near, "relative_inverse"), S.StereoParams(divergence=2.0))
    assert "warning" not in outs["main"].meta
    assert S.comfort_warning(40, 1000) and not S.comfort_warning(20, 1000)


def test_mask_output_and_output_suffixes(tmp_path, scene):
    img, near = scene
    outs = S.run(_ctx(tmp_path, img, near, "relative_inverse"), S.StereoParams(eye="right"))
    m = np.asarray(Image.open(outs["mask"].path))
    assert m.shape == img.shape[:2] and 0 < (m > 0).mean() < 0.2
    assert S.params_for_output("x.jpg") == {"format": "jpg"} and S.params_for_output("x.png") == {"format": "png"}
    with pytest.raises(Exception, match="mpo"):
        S.params_for_output("x.bmp")


@pytest.mark.parametrize("eye", ["left", "right"])
def test_one_eye_is_that_eye_of_the_pair(tmp_path, scene, eye):
    """Each eye reads its own background layer, so `--eye left` is exactly the left image of
    `--eye both` (the fill differed by up to 63 levels in 172 pixels when both eyes shared a
    layer hiding both sides of every object), and the pair's right eye is the view the
    yardstick scores."""
    img, near = scene
    both = S.run(_ctx(tmp_path / "both", img, near, "relative_inverse"), S.StereoParams(layout="lr"))
    one = S.run(_ctx(tmp_path / eye, img, near, "relative_inverse"), S.StereoParams(eye=eye))
    assert np.array_equal(read_rgb(one["main"].path), read_rgb(both[eye].path))
    assert np.array_equal(read_rgb(one["mask"].path), read_rgb(both[f"{eye}_mask"].path))
