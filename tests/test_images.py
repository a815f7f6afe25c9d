"""Photo decoding: every odd kind of photo is handled, every bad one named in a clear error."""

from __future__ import annotations

import io

import numpy as np
import pytest
import skimage.data as d
from PIL import Image

from depthcraft.tasks.lib.errors import InputError
from depthcraft.tasks.lib.images import decode_image, read_image


def _encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    b = io.BytesIO()
    img.save(b, format=fmt, **kw)
    return b.getvalue()


def test_rgb_png_roundtrip(tmp_path):
    a = d.astronaut()
    p = tmp_path / "a.png"
    Image.fromarray(a).save(p)
    ph = read_image(p)
    assert ph.rgb.dtype == np.uint8 and ph.rgb.shape == a.shape
    assert np.array_equal(ph.rgb, a)
    assert ph.alpha is None


def test_grayscale_becomes_three_equal_channels():
    g = d.camera()
    ph = decode_image(_encode(Image.fromarray(g)))
    assert ph.rgb.shape == g.shape + (3,)
    assert np.array_equal(ph.rgb[..., 0], g) and np.array_equal(ph.rgb[..., 2], g)


def test_sixteen_bit_scaled_by_full_range():
    g16 = (d.camera().astype(np.uint16) * 257)
    ph = decode_image(_encode(Image.fromarray(g16)))
    assert np.abs(ph.rgb[..., 0].astype(int) - d.camera().astype(int)).max() <= 1


def test_alpha_is_split_off():
    a = d.astronaut()
    alpha = np.zeros(a.shape[:2], np.uint8)
    alpha[100:200] = 255
    ph = decode_image(_encode(Image.fromarray(np.dstack([a, alpha]))))
    assert ph.rgb.shape == a.shape and np.array_equal(ph.rgb, a)
    assert np.array_equal(ph.alpha, alpha)


def test_cmyk_jpeg_is_converted():
    a = d.coffee()
    cmyk = Image.fromarray(a).convert("CMYK")
    ph = decode_image(_encode(cmyk, "JPEG", quality=95))
    assert ph.rgb.shape == a.shape
    assert np.abs(ph.rgb.astype(float) - a).mean() < 12  # JPEG loss and CMYK round trip only


def test_exif_rotation_is_applied():
    a = d.astronaut()[:, :400]  # 512 high, 400 wide: a rotation shows in the shape
    img = Image.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    ph = decode_image(_encode(img, "JPEG", exif=exif, quality=95))
    assert ph.rgb.shape[:2] == (400, 512)
    # the displayed top-left is the stored bottom-left
    assert np.abs(ph.rgb[0, 0].astype(int) - a[-1, 0].astype(int)).max() < 40


def test_truncated_file_is_named(tmp_path):
    p = tmp_path / "cut.jpg"
    data = _encode(Image.fromarray(d.astronaut()), "JPEG")
    p.write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError) as e:
        read_image(p)
    assert str(p) in str(e.value) and "truncated" in str(e.value)


def test_not_an_image(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("hello")
    with pytest.raises(InputError, match="not an image"):
        read_image(p)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "nope.png")


def test_too_small():
    with pytest.raises(InputError, match="at least 64"):
        decode_image(_encode(Image.fromarray(np.zeros((32, 200, 3), np.uint8))), name="tiny.png")


def test_pixel_limit_refused_or_downscaled():
    data = _encode(Image.fromarray(d.astronaut()))
    with pytest.raises(InputError) as e:
        decode_image(data, name="big.png", max_pixels=100_000)
    assert "big.png" in str(e.value) and "--downscale" in str(e.value)
    ph = decode_image(data, name="big.png", max_pixels=100_000, downscale=True)
    assert ph.rgb.shape[0] * ph.rgb.shape[1] <= 100_000
    assert ph.downscaled_from == (512, 512)
