"""Files that are not what they look like, folder names from input names, and notices.

- a colour-mapped picture (turbo, viridis, depthcraft's own preview.png) given as depth is
  refused by name, saying what to give instead; multi-channel depth files use the channel the
  format's conventions name, or are refused when that is ambiguous;
- an output folder keeps its photo's own name (Unicode included), depends on that photo alone,
  and colliding names get a suffix from their own path;
- silent changes (a photo downscaled, an odd video size trimmed) say so in one notice line.
"""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from depthcraft.flows.naming import assign_names, path_suffix, safe_name
from depthcraft.tasks.lib.depthio import read_depth, write_exr, write_pfm
from depthcraft.tasks.lib.depthmap import DepthMap
from depthcraft.tasks.lib.errors import InputError
from depthcraft.tasks.lib.formats import write_format

H, W = 72, 96


def _nearness() -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    return (0.6 * y / H + 0.4 * x / W).astype(np.float32)


def _photo(path: Path) -> Path:
    rng = np.random.default_rng(3)
    Image.fromarray((rng.random((H, W, 3)) * 255).astype(np.uint8)).save(path)
    return path


# -- colour-mapped and multi-channel depth files ----------------------------------------------
def test_depthcrafts_own_preview_is_refused_by_its_metadata(tmp_path):
    p = write_format(DepthMap(data=_nearness(), kind="relative_inverse", source="test"), "preview",
                     tmp_path / "preview.png")
    with pytest.raises(InputError) as ei:
        read_depth(p)
    msg = str(ei.value)
    assert str(p) in msg and "depthcraft colour preview" in msg and "grayscale" in msg


@pytest.mark.parametrize("cmap", [cv2.COLORMAP_TURBO, cv2.COLORMAP_VIRIDIS, cv2.COLORMAP_JET])
@pytest.mark.parametrize("suffix", [".png", ".tif", ".ppm"])
def test_a_foreign_colour_map_is_refused(tmp_path, cmap, suffix):
    rgb = cv2.applyColorMap((_nearness() * 255).astype(np.uint8), cmap)[..., ::-1]
    p = tmp_path / f"colour{suffix}"
    Image.fromarray(np.ascontiguousarray(rgb)).save(p)
    with pytest.raises(InputError, match="colour channels that differ") as ei:
        read_depth(p)
    assert str(p) in str(ei.value) and "single-channel" in str(ei.value)


def test_gray_stored_as_rgb_palette_or_gray_alpha_is_read(tmp_path):
    g = (_nearness() * 255).astype(np.uint8)
    Image.fromarray(np.dstack([g, g, g])).save(tmp_path / "rgb.png")
    Image.fromarray(np.dstack([g, g, g, np.full_like(g, 255)])).save(tmp_path / "rgba.png")
    Image.fromarray(np.dstack([g, np.full_like(g, 128)]), "LA").save(tmp_path / "la.png")
    Image.fromarray(g).convert("P").save(tmp_path / "p.png")
    Image.fromarray(np.dstack([g, g, g])).save(tmp_path / "rgb.jpg", quality=95)
    for name in ("rgb.png", "rgba.png", "la.png", "p.png"):
        a, _ = read_depth(tmp_path / name)
        assert np.array_equal(a, g.astype(np.float32)), name


def test_arrays_with_channels(tmp_path):
    n = _nearness()
    np.save(tmp_path / "chw.npy", n[None])  # (1, H, W): a model's output
    np.save(tmp_path / "hw1.npy", n[..., None])
    np.save(tmp_path / "same.npy", np.dstack([n, n, n]))
    np.save(tmp_path / "colour.npy", np.dstack([n, 1 - n, n * 0.5]))
    np.save(tmp_path / "two.npy", np.dstack([n, n * 0 + 1]))
    for name in ("chw.npy", "hw1.npy", "same.npy"):
        assert np.allclose(read_depth(tmp_path / name)[0], n), name
    with pytest.raises(InputError, match="colour channels that differ"):
        read_depth(tmp_path / "colour.npy")
    with pytest.raises(InputError, match="2 channels .* ambiguous"):
        read_depth(tmp_path / "two.npy")


def test_colour_pfm_is_read_only_when_its_channels_agree(tmp_path):
    n = _nearness()

    def pfm3(path, rgb):
        with open(path, "wb") as f:
            f.write(b"PF\n%d %d\n-1.0\n" % (W, H))
            f.write(np.ascontiguousarray(rgb[::-1], dtype="<f4").tobytes())

    pfm3(tmp_path / "gray.pfm", np.dstack([n, n, n]))
    pfm3(tmp_path / "colour.pfm", np.dstack([n, 1 - n, n]))
    assert np.allclose(read_depth(tmp_path / "gray.pfm")[0], n)
    with pytest.raises(InputError, match="colour channels"):
        read_depth(tmp_path / "colour.pfm")
    write_pfm(tmp_path / "one.pfm", n)
    assert np.allclose(read_depth(tmp_path / "one.pfm")[0], n)


def _exr(path: Path, planes: dict[str, np.ndarray]) -> Path:
    """A scanline EXR with FLOAT channels (names sorted, as the format requires)."""
    from depthcraft.tasks.lib.depthio import _exr_attr

    names = sorted(planes)
    chlist = b"".join(n.encode() + b"\0" + struct.pack("<i", 2) + b"\0\0\0\0" + struct.pack("<ii", 1, 1)
                      for n in names) + b"\0"
    box = struct.pack("<iiii", 0, 0, W - 1, H - 1)
    header = b"".join([_exr_attr("channels", "chlist", chlist), _exr_attr("compression", "compression", b"\0"),
                       _exr_attr("dataWindow", "box2i", box), _exr_attr("displayWindow", "box2i", box),
                       _exr_attr("lineOrder", "lineOrder", b"\0"),
                       _exr_attr("pixelAspectRatio", "float", struct.pack("<f", 1)),
                       _exr_attr("screenWindowCenter", "v2f", struct.pack("<ff", 0, 0)),
                       _exr_attr("screenWindowWidth", "float", struct.pack("<f", 1))]) + b"\0"
    start = 8 + len(header) + 8 * H
    row = 8 + 4 * W * len(names)
    with open(path, "wb") as f:
        f.write(struct.pack("<ii", 20000630, 2) + header)
        f.write(b"".join(struct.pack("<Q", start + row * y) for y in range(H)))
        for y in range(H):
            f.write(struct.pack("<ii", y, 4 * W * len(names)))
            for n in names:
                f.write(np.asarray(planes[n][y], "<f4").tobytes())
    return path


def test_exr_channels_by_the_formats_conventions(tmp_path):
    n = _nearness()
    z = 1.0 / (0.1 + n)
    a, _ = read_depth(_exr(tmp_path / "rgbz.exr", {"R": n, "G": 1 - n, "B": n, "Z": z}))
    assert np.allclose(a, z)  # Z is depth, whatever the colour channels hold
    a, _ = read_depth(_exr(tmp_path / "layer.exr", {"beauty.R": n, "depth.Z": z}))
    assert np.allclose(a, z)
    a, _ = read_depth(_exr(tmp_path / "gray.exr", {"R": n, "G": n, "B": n}))
    assert np.allclose(a, n)
    with pytest.raises(InputError, match="colour channels"):
        read_depth(_exr(tmp_path / "colour.exr", {"R": n, "G": 1 - n, "B": n}))
    with pytest.raises(InputError, match="ambiguous"):
        read_depth(_exr(tmp_path / "unknown.exr", {"foo": n, "bar": z}))
    a, _ = read_depth(write_exr(tmp_path / "ours.exr", z))
    assert np.allclose(a, z)


def test_a_preview_given_as_depth_on_the_command_line(tmp_path):
    photo = _photo(tmp_path / "photo.png")
    prev = write_format(DepthMap(data=_nearness(), kind="relative_inverse", source="t"), "preview",
                        tmp_path / "preview.png")
    r = run_cli("stereo", photo, "--depth", prev, "-o", tmp_path / "sbs.png", timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode == 2 and "Traceback" not in out, out
    assert [ln for ln in out.splitlines() if ln.startswith("error")] == [ln for ln in out.splitlines()
                                                                         if "preview.png" in ln]
    assert "colour preview" in out and not (tmp_path / "sbs.png").exists()


def test_a_colour_depth_in_a_recipe_input_is_named_by_validate(tmp_path):
    _photo(tmp_path / "photo.png")
    rgb = cv2.applyColorMap((_nearness() * 255).astype(np.uint8), cv2.COLORMAP_VIRIDIS)
    Image.fromarray(np.ascontiguousarray(rgb[..., ::-1])).save(tmp_path / "viridis.png")
    (tmp_path / "r.yaml").write_text("version: 1\nname: given\ninputs:\n  images:\n"
                                     "    - {image: photo.png, depth: viridis.png}\n"
                                     "steps: [{id: fx, uses: stereo}]\n")
    r = run_cli("validate", tmp_path / "r.yaml", env={"DEPTHCRAFT_HOME": str(tmp_path / "ws")}, timeout=120)
    assert r.returncode == 2 and "viridis.png" in r.stderr and "colour channels" in r.stderr, r.stderr


# -- folder names ------------------------------------------------------------------------------
def test_names_keep_unicode_and_replace_only_what_filesystems_refuse():
    assert safe_name("café") == "café"
    assert safe_name("cafe\u0301") == "café"  # NFD (as macOS writes it) -> NFC
    assert safe_name("שלום עולם") == "שלום עולם"
    assert safe_name("夕焼けの写真") == "夕焼けの写真"
    assert safe_name('a:b*c?"d<e>f|g\\h') == "a_b_c__d_e_f_g_h"
    assert safe_name("tab\there\x00") == "tab_here_"
    assert safe_name("..hidden. ") == "hidden"
    assert safe_name("CON") == "CON_" and safe_name("lpt1.txt") == "lpt1.txt_"
    assert safe_name("...") == "image"
    long = safe_name("é" * 200)
    assert len(long.encode()) <= 120 and set(long) == {"é"}


def test_a_name_depends_on_its_photo_alone():
    alone = assign_names([("café", "/p/café.jpg")])
    batch = assign_names([("other", "/p/other.jpg"), ("café", "/p/café.jpg"), ("写真", "/p/写真.png")])
    assert alone == ["café"] and batch[1] == "café" and batch[2] == "写真"
    # colliding names: each gets a suffix from its own path, whatever the order or the rest
    a = assign_names([("IMG_1", "/a/IMG_1.jpg"), ("img_1", "/b/img_1.jpg")])
    b = assign_names([("x", "/c/x.jpg"), ("img_1", "/b/img_1.jpg"), ("IMG_1", "/a/IMG_1.jpg")])
    assert a == [f"IMG_1-{path_suffix('/a/IMG_1.jpg')}", f"img_1-{path_suffix('/b/img_1.jpg')}"]
    assert b[1:] == a[::-1] and b[0] == "x"


def test_recipe_output_folders_keep_unicode_names(tmp_path):
    from depthcraft.flows.compile import compile_plan
    from depthcraft.flows.recipe import load_recipe
    from depthcraft.flows.workspace import Workspace

    (tmp_path / "photos" / "a").mkdir(parents=True)
    (tmp_path / "photos" / "b").mkdir(parents=True)
    for rel in ("café.jpg", "שלום.jpg", "夕焼け.png", "a/same.png", "b/same.png"):
        _photo(tmp_path / "photos" / rel)
    (tmp_path / "r.yaml").write_text("version: 1\nname: uni\ninputs: {images: ['photos/**/*.*']}\n"
                                     "steps: [{id: d, uses: estimate}]\n")
    recipe, src = load_recipe(tmp_path / "r.yaml")
    plan = compile_plan(recipe, src, Workspace.default(tmp_path / "ws"), out_root=tmp_path, fetch=False)
    names = sorted(i.name for i in plan.images)
    sa = path_suffix(str(tmp_path / "photos" / "a" / "same.png"))
    sb = path_suffix(str(tmp_path / "photos" / "b" / "same.png"))
    assert names == sorted(["café", "שלום", "夕焼け", f"same-{sa}", f"same-{sb}"])
    assert plan.out_dirs["café"] == tmp_path / "out" / "uni" / "café"


# -- notices -----------------------------------------------------------------------------------
def test_an_odd_size_trimmed_for_yuv420p_says_so():
    from depthcraft.tasks import parallax
    from depthcraft.tasks.lib import notices

    said = []
    notices.set_sink(said.append)
    try:
        p = parallax.ParallaxParams(size="641x361")
        assert parallax.output_size(p, (100, 100, 3)) == (640, 360)
        assert parallax.output_size(p, (100, 100, 3)) == (640, 360)  # said once
        assert parallax.output_size(parallax.ParallaxParams(size="640x360"), (1, 1, 3)) == (640, 360)
    finally:
        notices.set_sink(None)
    assert said == ["parallax: video size 641x361 trimmed to 640x360 (yuv420p needs even sides; give an even "
                    "--size or pix_fmt yuv444p to keep it)"]


def test_a_downscaled_photo_says_its_old_and_new_size_on_the_command_line(tmp_path):
    photo = tmp_path / "big.png"
    rng = np.random.default_rng(5)
    Image.fromarray((rng.random((300, 400, 3)) * 255).astype(np.uint8)).save(photo)
    r = run_cli("estimate", photo, "--max-pixels", "30000", "--downscale", "-o", tmp_path / "d.png", timeout=120)
    assert r.returncode == 0, r.stderr
    notes = [ln for ln in r.stderr.splitlines() if "downscaled from" in ln]
    assert notes == [f"notice: {photo}: downscaled from 400x300 to 200x150 to fit 0.03 MP (--downscale)"]
    assert Image.open(tmp_path / "d.png").size == (200, 150)
