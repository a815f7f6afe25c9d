"""The one-shot command forms the README promises, run as real subprocesses on real files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli, save_photo


@pytest.fixture(scope="module")
def motorcycle(tmp_path_factory):
    """The real Middlebury Motorcycle pair that scikit-image ships, with its true disparity."""
    import skimage.data as d

    root = tmp_path_factory.mktemp("moto")
    left, right, disp = d.stereo_motorcycle()
    disp = np.where(np.isfinite(disp), disp, 0).astype(np.float32)
    save_photo(root / "left.png", left)
    np.save(root / "disp.npy", disp)
    return root, left, right, disp


def test_estimate_png_is_8bit_white_near(tmp_path, motorcycle):
    root, left, _, disp = motorcycle
    out = tmp_path / "d.png"
    r = run_cli("estimate", root / "left.png", "-o", out)
    assert r.returncode == 0, r.stderr
    g = np.asarray(Image.open(out))
    assert g.dtype == np.uint8 and g.shape == left.shape[:2]
    assert g.max() - g.min() > 100  # uses the range


def test_estimate_npy_is_float_larger_nearer(tmp_path, motorcycle):
    root, left, _, disp = motorcycle
    out = tmp_path / "d.npy"
    r = run_cli("estimate", root / "left.png", "-o", out)
    assert r.returncode == 0, r.stderr
    a = np.load(out)
    assert a.dtype == np.float32 and a.shape == left.shape[:2]
    from scipy.stats import spearmanr

    ok = disp > 0
    rho = spearmanr(a[ok][::37], disp[ok][::37]).statistic
    assert rho > 0.2  # larger = nearer: ordered like the true disparity


def test_refine_keeps_units(tmp_path, motorcycle):
    root, left, _, disp = motorcycle
    import cv2

    small = cv2.resize(disp, (disp.shape[1] // 8, disp.shape[0] // 8), interpolation=cv2.INTER_AREA)
    blurry = cv2.resize(small, disp.shape[::-1], interpolation=cv2.INTER_LINEAR)
    np.save(tmp_path / "in.npy", blurry)
    out = tmp_path / "out.npy"
    r = run_cli("refine", root / "left.png", "--depth", tmp_path / "in.npy", "--depth-kind", "disparity", "-o", out)
    assert r.returncode == 0, r.stderr
    a = np.load(out)
    assert a.shape == disp.shape and a.dtype == np.float32
    assert abs(np.median(a) - np.median(blurry)) < 0.05 * np.median(blurry)  # pixels, not 0..1
    assert a.max() <= blurry.max() * 1.05 and a.min() >= blurry.min() * 0.95 - 1


def test_stereo_exact_mode_moves_x_to_x_minus_d(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (96, 160, 3), dtype=np.uint8)
    save_photo(tmp_path / "tex.png", img)
    np.save(tmp_path / "d.npy", np.full((96, 160), 5.0, np.float32))
    out = tmp_path / "right.png"
    r = run_cli("stereo", tmp_path / "tex.png", "--depth", tmp_path / "d.npy", "--depth-kind", "disparity",
                "--scale", "1", "--eye", "right", "-o", out)
    assert r.returncode == 0, r.stderr
    right = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert right.shape == img.shape
    # right(x - 5) == left(x) away from the borders
    assert np.abs(right[:, 10:150] - img[:, 15:155].astype(int)).max() <= 2


def test_parallax_video_has_requested_frames_and_size(tmp_path, photos):
    import imageio_ffmpeg

    out = tmp_path / "v.mp4"
    r = run_cli("parallax", photos["chelsea"], "-o", out, "--duration", "1", "--fps", "12", "--size", "320x240")
    assert r.returncode == 0, r.stderr
    gen = imageio_ffmpeg.read_frames(str(out))
    meta = gen.__next__()
    frames = sum(1 for _ in gen)
    assert meta["size"] == (320, 240) and frames == 12
    assert "h264" in meta["codec"]


def test_missing_image_is_named(tmp_path):
    r = run_cli("estimate", tmp_path / "nope.jpg", "-o", tmp_path / "x.png")
    assert r.returncode == 2 and "nope.jpg" in r.stderr and "no such file" in r.stderr


def test_depth_of_wrong_size_is_named(tmp_path, photos):
    np.save(tmp_path / "small.npy", np.zeros((10, 10), np.float32))
    r = run_cli("refine", photos["astronaut"], "--depth", tmp_path / "small.npy", "-o", tmp_path / "o.npy")
    assert r.returncode == 2 and "small.npy" in r.stderr and "10x10" in r.stderr


def test_unsupported_output_suffix(tmp_path, photos):
    r = run_cli("estimate", photos["astronaut"], "-o", tmp_path / "x.docx")
    assert r.returncode == 2 and ".docx" in r.stderr


def test_unsupported_depth_format(tmp_path, photos):
    (tmp_path / "d.txt").write_text("1 2 3")
    r = run_cli("refine", photos["astronaut"], "--depth", tmp_path / "d.txt", "-o", tmp_path / "o.npy")
    assert r.returncode == 2 and "d.txt" in r.stderr


def test_bad_parameter_value_names_flag(tmp_path, photos):
    r = run_cli("parallax", photos["astronaut"], "-o", tmp_path / "v.mp4", "--fps", "fast")
    assert r.returncode == 2 and "--fps" in r.stderr


def test_steps_lists_every_kind():
    r = run_cli("steps")
    assert r.returncode == 0
    for kind in ("estimate", "refine", "parallax", "stereo", "bokeh", "layers", "export"):
        assert kind in r.stdout
