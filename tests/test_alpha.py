"""A transparent PNG (a product shot cut out of its background) through every photo output.

The photo here stores magenta under its transparent pixels, as editors leave whatever was
there: a visible magenta pixel anywhere means a transparent pixel's colour leaked. Where the
output can carry alpha (bokeh and stereo PNGs, layers) it is kept; where it cannot (video,
JPEG, MPO, anaglyph, the viewer's photo, the estimator's input) the photo is composited over
white; a mesh has no surface under transparent pixels. An opaque RGBA photo renders exactly as
its RGB twin. Real files, the real CLI.
"""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli

from depthcraft.tasks.lib import clip as cliplib

ENV = {"DEPTHCRAFT_OFFLINE": "1"}
MAGENTA = (255, 0, 255)


def magenta(a: np.ndarray) -> int:
    """Pixels that are clearly magenta (what the photo stores under alpha 0)."""
    a = a.astype(np.int32)
    return int(((a[..., 0] > 170) & (a[..., 1] < 110) & (a[..., 2] > 170)).sum())


@pytest.fixture(scope="module")
def product(tmp_path_factory, photos):
    d = tmp_path_factory.mktemp("alpha")
    rgb = np.asarray(Image.open(photos["coffee"]).convert("RGB"))[:, :, :3].copy()
    h, w = rgb.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    inside = ((yy - h / 2) ** 2 / (0.36 * h) ** 2 + (xx - w / 2) ** 2 / (0.36 * w) ** 2) < 1
    alpha = np.where(inside, 255, 0).astype(np.uint8)
    alpha[inside & (((yy - h / 2) ** 2 / (0.33 * h) ** 2 + (xx - w / 2) ** 2 / (0.33 * w) ** 2) >= 1)] = 128  # a soft rim
    stored = rgb.copy()
    stored[alpha == 0] = MAGENTA
    Image.fromarray(np.dstack([stored, alpha])).save(d / "product.png")
    flat = (rgb.astype(np.float32) * (alpha[..., None] / 255.0) + 255.0 * (1 - alpha[..., None] / 255.0) + 0.5)
    Image.fromarray(flat.astype(np.uint8)).save(d / "flat.png")  # over white, as a viewer shows it
    Image.fromarray(np.dstack([rgb, np.full((h, w), 255, np.uint8)])).save(d / "opaque-rgba.png")
    Image.fromarray(rgb).save(d / "rgb.png")
    r = run_cli("estimate", d / "product.png", "-o", d / "d.npy", env=ENV)
    assert r.returncode == 0, r.stderr
    return d, alpha


def _run(d, *args):
    r = run_cli(*args, "--depth", d / "d.npy", "--depth-kind", "relative", env=ENV)
    assert r.returncode == 0, r.stderr
    return r


def test_bokeh_keeps_alpha_and_never_shows_the_hidden_colour(product, tmp_path):
    d, alpha = product
    _run(d, "bokeh", d / "product.png", "-o", tmp_path / "b.png", "--aperture", "4")
    out = np.asarray(Image.open(tmp_path / "b.png"))
    assert out.shape[2] == 4  # before: RGB, the magenta background blurred into the product
    a = out[..., 3]
    assert (a[:5, :5] == 0).all() and (a[alpha == 255].mean() > 200)
    assert magenta(out[a >= 16][None, :, :3]) == 0
    # no JPEG alpha: over white
    _run(d, "bokeh", d / "product.png", "-o", tmp_path / "b.jpg", "--aperture", "4")
    jpg = np.asarray(Image.open(tmp_path / "b.jpg"))
    assert magenta(jpg) == 0 and jpg[:5, :5].min() > 240


def test_stereo_png_keeps_alpha_jpeg_mpo_and_anaglyph_are_over_white(product, tmp_path):
    d, alpha = product
    _run(d, "stereo", d / "product.png", "-o", tmp_path / "s.png")
    sbs = np.asarray(Image.open(tmp_path / "s.png"))
    assert sbs.shape[2] == 4 and sbs.shape[1] == 2 * alpha.shape[1]
    assert (sbs[:5, :5, 3] == 0).all() and magenta(sbs[sbs[..., 3] >= 16][None, :, :3]) == 0
    for name, extra in (("s.jpg", ()), ("a.png", ("--layout", "anaglyph")), ("m.mpo", ())):
        _run(d, "stereo", d / "product.png", "-o", tmp_path / name, *extra)
        img = np.asarray(Image.open(tmp_path / name).convert("RGB"))
        assert magenta(img) == 0, name
        if name != "a.png":
            assert img[:5, :5].min() > 240, name


def test_parallax_video_is_over_white(product, tmp_path):
    d, _ = product
    _run(d, "parallax", d / "product.png", "-o", tmp_path / "p.mp4", "--duration", "1", "--fps", "4")
    frames = list(cliplib.read_frames(tmp_path / "p.mp4"))
    assert len(frames) == 4
    assert max(magenta(f) for f in frames) == 0  # before: the magenta background moved in the video
    assert min(float(f[:4, :4].mean()) for f in frames) > 230


def test_layers_keep_the_photo_alpha(product, tmp_path):
    d, alpha = product
    _run(d, "layers", d / "product.png", "-o", tmp_path / "l.png", "--count", "3")
    for i in range(3):
        layer = np.asarray(Image.open(tmp_path / f"l-layer_{i}.png"))
        assert (layer[..., 3][alpha == 0] == 0).all()  # before: every layer showed magenta there
        assert (layer[..., 3] <= alpha).all()
    assert magenta(np.asarray(Image.open(tmp_path / "l.png").convert("RGB"))) == 0


def test_mesh_has_no_surface_under_transparent_pixels(product, tmp_path):
    import trimesh

    d, alpha = product
    _run(d, "mesh", d / "product.png", "-o", tmp_path / "m.ply", "--stride", "1")
    cloud = trimesh.load(tmp_path / "m.ply")
    assert len(cloud.vertices) == int((alpha >= 128).sum())  # before: every pixel, the magenta wall too
    assert magenta(np.asarray(cloud.colors)[None, :, :3]) == 0
    _run(d, "mesh", d / "product.png", "-o", tmp_path / "m.glb")
    assert (tmp_path / "m.glb").stat().st_size > 0


def test_viewer_photo_is_over_white(product, tmp_path):
    d, _ = product
    _run(d, "viewer", d / "product.png", "-o", tmp_path / "v.html")
    page = (tmp_path / "v.html").read_text()
    m = re.search(r"data:image/(?:jpeg|webp);base64,([A-Za-z0-9+/=]+)", page)
    import io

    photo = np.asarray(Image.open(io.BytesIO(base64.b64decode(m.group(1)))).convert("RGB"))
    assert magenta(photo) == 0 and photo[:4, :4].min() > 230


def test_the_estimator_sees_the_photo_over_white(product, tmp_path):
    d, _ = product
    for name in ("product", "flat"):
        r = run_cli("estimate", d / f"{name}.png", "-o", tmp_path / f"{name}.png", env=ENV)
        assert r.returncode == 0, r.stderr
    assert (tmp_path / "product.png").read_bytes() == (tmp_path / "flat.png").read_bytes()
    for name in ("product", "flat"):  # the edge refinement follows the same picture
        _run(d, "refine", d / f"{name}.png", "-o", tmp_path / f"r-{name}.npy")
    assert np.array_equal(np.load(tmp_path / "r-product.npy"), np.load(tmp_path / "r-flat.npy"))


@pytest.mark.parametrize("kind,out", [("bokeh", "x.png"), ("stereo", "x.png"), ("layers", "x.png")])
def test_an_opaque_rgba_photo_renders_as_its_rgb_twin(product, tmp_path, kind, out):
    d, _ = product
    for name in ("rgb", "opaque-rgba"):
        (tmp_path / name).mkdir()
        _run(d, kind, d / f"{name}.png", "-o", tmp_path / name / out)
    assert (tmp_path / "rgb" / out).read_bytes() == (tmp_path / "opaque-rgba" / out).read_bytes()


@pytest.mark.parametrize("suffix", [".png", ".gif"])
def test_a_transparent_animation_is_over_white_in_its_videos(tmp_path, photos, suffix):
    """A clip's outputs are videos: an animated PNG/GIF's transparent pixels are white there,
    never the colour the file stores under them."""
    rgb = np.asarray(Image.open(photos["coffee"]).convert("RGB"))[:144, :192].copy()
    frames = []
    for i in range(3):
        a = np.full(rgb.shape[:2], 255, np.uint8)
        a[:, : 40 + 8 * i] = 0
        stored = np.roll(rgb, 6 * i, axis=1).copy()
        stored[a == 0] = MAGENTA
        im = Image.fromarray(np.dstack([stored, a]))
        frames.append(im)
    src = tmp_path / f"anim{suffix}"  # (Pillow writes the GIF's alpha as its transparent palette entry)
    frames[0].save(src, save_all=True, append_images=frames[1:], duration=100, loop=0,
                   **({"disposal": 2} if suffix == ".gif" else {}))
    r = run_cli("bokeh", src, "-o", tmp_path / "b.mp4", env=ENV)
    assert r.returncode == 0, r.stderr
    out = list(cliplib.read_frames(tmp_path / "b.mp4"))
    assert len(out) == 3 and max(magenta(f) for f in out) == 0
    assert min(float(f[:, :20].mean()) for f in out) > 230


def test_bokeh_with_alpha_on_a_large_photo_and_a_large_aperture():
    """Five channels (colour x alpha, alpha, coverage) through OpenCV's resize, which takes at most
    four: a 1.8 MP photo (blurred at half resolution) failed with `cn <= 4` in resize."""
    from depthcraft.tasks.bokeh import render_bokeh

    h, w = 1000, 1800
    rgb = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    near = np.tile(np.linspace(0, 1, w, dtype=np.float32), (h, 1))
    alpha = np.zeros((h, w), np.uint8)
    alpha[200:800, 300:1500] = 255
    out = render_bokeh(rgb, near, focus=0.5, max_radius=40, alpha=alpha)
    assert out.shape == (h, w, 4) and out[0, 0, 3] == 0 and out[500, 900, 3] == 255
