"""Photos with an embedded ICC profile are read as sRGB (tasks/lib/colour.py).

The profiles are written in the test itself (tests/iccbuild.py: ICC v2 matrix/TRC bytes from
primaries, white and gamma), embedded in real PNG/JPEG/TIFF/WebP/MPO files and read by the real
readers; the truth of every colour is the textbook conversion computed here with numpy, not
LittleCMS. An untagged or sRGB-tagged photo must read bit for bit as before.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

sys.path.insert(0, str(Path(__file__).parent))
import iccbuild as ib  # noqa: E402
from conftest import run_cli  # noqa: E402

from depthcraft.tasks.lib import colour, images, notices  # noqa: E402

PROFILES = {
    "p3": ("Display P3 test", ib.P3_PRIMARIES, ib.D65_XY, 2.2),
    "adobe": ("Adobe RGB test", ib.ADOBE_PRIMARIES, ib.D65_XY, 563 / 256),
    "prophoto": ("ProPhoto test", ib.PROPHOTO_PRIMARIES, ib.D50_XY, 1.8),
}
SAVE = {"png": {}, "tif": {}, "webp": {"lossless": True}, "jpg": {"quality": 95}}


def _icc(kind: str) -> bytes:
    name, prim, white, gamma = PROFILES[kind]
    return ib.rgb_profile(name, prim, white, gamma)


def _truth(rgb: np.ndarray, kind: str) -> np.ndarray:
    _, prim, white, gamma = PROFILES[kind]
    return ib.truth_srgb(rgb, prim, white, gamma)


def _pixels(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    # smooth colours (a JPEG keeps them), all over the cube
    y, x = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    f = rng.uniform(0.02, 0.08, 3)
    return np.stack([(127.5 + 127.5 * np.sin(f[c] * (x + 2 * y) + c)) for c in range(3)], -1).round().astype(np.uint8)


@pytest.fixture
def said(monkeypatch):
    out: list[str] = []
    monkeypatch.setattr(notices, "_sink", out.append)
    monkeypatch.setattr(notices, "_said", set())
    return out


@pytest.mark.parametrize("fmt", sorted(SAVE))
@pytest.mark.parametrize("kind", sorted(PROFILES))
def test_a_tagged_photo_reads_as_its_srgb_truth(tmp_path, kind, fmt):
    rgb = _pixels()
    tagged, plain = tmp_path / f"t.{fmt}", tmp_path / f"u.{fmt}"
    Image.fromarray(rgb).save(tagged, icc_profile=_icc(kind), **SAVE[fmt])
    Image.fromarray(rgb).save(plain, **SAVE[fmt])
    decoded = images.read_image(plain).rgb  # the file's own values (a JPEG's, after its coding)
    got = images.read_image(tagged)
    err = np.abs(got.rgb.astype(float) - _truth(decoded, kind))
    assert err.max() <= 1.5 and err.mean() <= 0.5, (err.max(), err.mean())
    assert got.profile == PROFILES[kind][0]
    assert np.abs(decoded.astype(float) - _truth(decoded, kind)).max() > 8  # (the test can fail)


def test_an_mpo_and_a_rgba_png_are_converted_too(tmp_path):
    rgb = _pixels()
    Image.fromarray(rgb).save(tmp_path / "s.mpo", format="MPO", save_all=True, quality=95,
                              append_images=[Image.fromarray(rgb[::-1].copy())], icc_profile=_icc("p3"))
    Image.fromarray(rgb).save(tmp_path / "u.jpg", quality=95)
    decoded = images.read_image(tmp_path / "u.jpg").rgb
    assert np.abs(images.read_image(tmp_path / "s.mpo").rgb - _truth(decoded, "p3")).max() <= 1.5
    alpha = np.tile(np.linspace(0, 255, 128).astype(np.uint8), (96, 1))
    Image.fromarray(np.dstack([rgb, alpha])).save(tmp_path / "a.png", icc_profile=_icc("adobe"))
    ph = images.read_image(tmp_path / "a.png")
    assert np.array_equal(ph.alpha, alpha)  # alpha is not a colour: kept as it is
    assert np.abs(ph.rgb - _truth(rgb, "adobe")).max() <= 1.5


def test_grey_profiles_keep_16_bits_of_precision(tmp_path):
    v16 = np.linspace(0, 65535, 96 * 128).round().astype(np.uint16).reshape(96, 128)
    g = ib.gray_profile("Gray gamma 1.8 test", 1.8)
    Image.fromarray(v16).save(tmp_path / "g16.png", icc_profile=g)
    ph = images.read_image(tmp_path / "g16.png")
    truth = ib.truth_gray_srgb(v16, 1.8)
    assert ph.profile == "Gray gamma 1.8 test"
    assert np.abs(ph.rgb.astype(float) - truth[..., None]).max() <= 1.0  # from 16 bits, not from 8
    assert (ph.rgb[..., 0] == ph.rgb[..., 1]).all() and (ph.rgb[..., 1] == ph.rgb[..., 2]).all()
    # 8 bits first would lose shadow levels that gamma 1.8 -> sRGB spreads apart
    v8 = np.arange(256, dtype=np.uint8).repeat(64).reshape(128, 128)
    Image.fromarray(v8).save(tmp_path / "g8.png", icc_profile=g)
    ph8 = images.read_image(tmp_path / "g8.png")
    assert np.abs(ph8.rgb[..., 0].astype(float) - ib.truth_gray_srgb(v8, 1.8)).max() <= 1.5
    assert len(np.unique(ph.rgb[..., 0])) > len(np.unique(ph8.rgb[..., 0]))


def test_untagged_and_srgb_tagged_photos_are_unchanged_bit_for_bit(tmp_path, said):
    rgb = np.random.default_rng(3).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for fmt in ("png", "tif", "webp"):
        Image.fromarray(rgb).save(tmp_path / f"s.{fmt}", icc_profile=srgb, **SAVE[fmt])
        Image.fromarray(rgb).save(tmp_path / f"u.{fmt}", **SAVE[fmt])
        for f in (f"s.{fmt}", f"u.{fmt}"):
            ph = images.read_image(tmp_path / f)
            assert np.array_equal(ph.rgb, rgb) and ph.profile is None, f
            assert images.decode_revision(tmp_path / f) == ({"tif": "tiff 2"}.get(fmt)), f
    Image.fromarray(rgb).save(tmp_path / "s.jpg", icc_profile=srgb, quality=90)
    Image.fromarray(rgb).save(tmp_path / "u.jpg", quality=90)
    assert np.array_equal(images.read_image(tmp_path / "s.jpg").rgb, images.read_image(tmp_path / "u.jpg").rgb)
    g = (rgb[..., 0].astype(np.uint16) * 257)
    Image.fromarray(g).save(tmp_path / "g.png")
    assert np.array_equal(images.read_image(tmp_path / "g.png").rgb[..., 0], rgb[..., 0])
    assert said == []


@pytest.mark.parametrize("bad", [b"not a profile at all" * 8, b"\0" * 132, "truncated", "grey on rgb"])
def test_a_broken_profile_is_one_notice_and_srgb(tmp_path, said, bad):
    rgb = _pixels()
    if bad == "truncated":
        bad = _icc("p3")[:200]
    elif bad == "grey on rgb":
        bad = ib.gray_profile("Gray gamma 1.8 test", 1.8)
    Image.fromarray(rgb).save(tmp_path / "b.png", icc_profile=bad)
    ph = images.read_image(tmp_path / "b.png")
    assert np.array_equal(ph.rgb, rgb) and ph.profile is None
    assert len(said) == 1 and str(tmp_path / "b.png") in said[0] and "read as sRGB" in said[0], said
    assert images.decode_revision(tmp_path / "b.png") is None  # read as before: its key is the old one


def test_one_shot_stereo_end_to_end_matches_the_srgb_truth(tmp_path, workspace):
    rgb = _pixels()
    Image.fromarray(rgb).save(tmp_path / "p3.png", icc_profile=_icc("p3"))
    Image.fromarray(rgb).save(tmp_path / "plain.png")
    np.save(tmp_path / "d.npy", np.full(rgb.shape[:2], 5.0, np.float32))
    outs = {}
    for name in ("p3", "plain"):
        out = tmp_path / f"{name}-right.png"
        r = run_cli("stereo", tmp_path / f"{name}.png", "--depth", tmp_path / "d.npy", "--depth-kind", "disparity",
                    "--scale", "1", "--eye", "right", "-o", out, env={"DEPTHCRAFT_OFFLINE": "1"})
        assert r.returncode == 0, r.stderr
        assert "Traceback" not in r.stderr
        with Image.open(out) as im:
            assert im.info.get("srgb") == 0  # says it is sRGB
            outs[name] = np.asarray(im.convert("RGB")).astype(float)
    truth = _truth(rgb, "p3")
    # right(x - 5) == left(x): the converted colours, moved
    assert np.abs(outs["p3"][:, 10:118] - truth[:, 15:123]).max() <= 2.5
    assert np.abs(outs["plain"][:, 10:118] - rgb[:, 15:123]).max() <= 2  # untagged: the old result
    assert np.abs(outs["p3"][:, 10:118] - outs["plain"][:, 10:118]).max() > 8


def test_one_shot_bokeh_jpeg_output_is_tagged_srgb_and_converted(tmp_path, workspace):
    rgb = np.zeros((96, 128, 3), np.uint8)
    rgb[:, :64] = (200, 120, 80)
    rgb[:, 64:] = (40, 150, 210)
    Image.fromarray(rgb).save(tmp_path / "a.png", icc_profile=_icc("adobe"))
    np.save(tmp_path / "d.npy", np.tile(np.linspace(0, 1, 128, dtype=np.float32), (96, 1)))
    r = run_cli("bokeh", tmp_path / "a.png", "--depth", tmp_path / "d.npy", "-o", tmp_path / "b.jpg",
                env={"DEPTHCRAFT_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr
    with Image.open(tmp_path / "b.jpg") as im:
        assert im.info.get("icc_profile") == colour.srgb_icc()
        got = np.asarray(im.convert("RGB")).astype(float)
    truth = _truth(rgb, "adobe")
    for x in (20, 108):  # inside each flat patch, away from the blurred edge
        assert np.abs(got[48, x] - truth[48, x]).max() <= 3, (got[48, x], truth[48, x])


def plan_of(tmp_path: Path, text: str):
    import textwrap

    from depthcraft.flows.compile import compile_plan
    from depthcraft.flows.recipe import load_recipe
    from depthcraft.flows.workspace import Workspace

    p = tmp_path / "r.yaml"
    p.write_text(textwrap.dedent(text))
    r, src = load_recipe(p)
    return compile_plan(r, src, Workspace.default(tmp_path / "ws"), out_root=tmp_path / "out")


def test_a_converted_photo_is_keyed_anew_and_recorded_in_the_manifest(tmp_path, monkeypatch):
    """A result cached from the unconverted colours of a tagged photo is never served: its key
    carries the conversion; an untagged or sRGB photo keeps its old key."""
    from depthcraft.flows import manifest

    monkeypatch.setenv("DEPTHCRAFT_HOME", str(tmp_path / "ws"))
    rgb = _pixels()
    srgb = colour.srgb_icc()
    Image.fromarray(rgb).save(tmp_path / "t.png", icc_profile=_icc("p3"))
    Image.fromarray(rgb).save(tmp_path / "s.png", icc_profile=srgb)
    Image.fromarray(rgb[::-1].copy()).save(tmp_path / "u.png")
    Image.fromarray(rgb).save(tmp_path / "a.tif", icc_profile=_icc("adobe"))
    text = """\
        version: 1
        name: t
        provider: classic
        inputs:
          images: [t.png, s.png, u.png, a.tif]
        steps:
          - {id: depth, uses: estimate}
          - {id: sbs, uses: stereo, from: [depth]}
        output: out/{recipe}/{image}/
        """
    plan = plan_of(tmp_path, text)
    now = {k: n.key for k, n in plan.nodes.items()}
    monkeypatch.setattr(colour, "header_conversion", lambda path: None)  # the decoding before profiles
    before = {k: n.key for k, n in plan_of(tmp_path, text).nodes.items()}
    for step in ("depth", "sbs"):
        assert now[(step, "t")] != before[(step, "t")] and now[(step, "a")] != before[(step, "a")]
        assert now[(step, "s")] == before[(step, "s")] and now[(step, "u")] == before[(step, "u")]
    monkeypatch.undo()
    m = manifest.build(plan, run_id=None, started=time.time(), nodes=[], failures=[], identities={})
    m = json.loads(json.dumps(m))
    by = {i["name"]: i for i in m["inputs"]}
    assert by["t"]["colour"] == "converted from the ICC profile 'Display P3 test' to sRGB (relative colorimetric)"
    assert "'Adobe RGB test' to sRGB" in by["a"]["colour"]
    assert "colour" not in by["s"] and "colour" not in by["u"]


def test_write_image_tags_colour_not_data(tmp_path):
    rgb = _pixels()
    images.write_image(tmp_path / "c.png", rgb)
    images.write_image(tmp_path / "g.png", rgb[..., 0])
    images.write_image(tmp_path / "c.jpg", rgb)
    with Image.open(tmp_path / "c.png") as a, Image.open(tmp_path / "g.png") as b, Image.open(tmp_path / "c.jpg") as c:
        assert a.info.get("srgb") == 0 and "srgb" not in b.info and "icc_profile" not in b.info
        assert c.info["icc_profile"] == colour.srgb_icc()
    assert np.array_equal(images.read_image(tmp_path / "c.png").rgb, rgb)  # read back: sRGB, untouched


def test_clip_frames_of_a_tagged_animation_are_converted(tmp_path):
    from depthcraft.tasks.lib import clip

    cols = [(200, 120, 80), (30, 160, 220), (90, 90, 90)]
    ims = [Image.fromarray(np.full((64, 64, 3), c, np.uint8)) for c in cols]
    for fmt, kw in (("png", {}), ("webp", {"lossless": True})):
        f = tmp_path / f"a.{fmt}"
        ims[0].save(f, save_all=True, append_images=ims[1:], icc_profile=_icc("p3"), duration=100, **kw)
        got = [fr[10, 10].astype(float) for fr in clip.read_frames(f, 0, 3)]
        for g, c in zip(got, cols):
            assert np.abs(g - _truth(np.array(c, np.uint8), "p3")).max() <= 1.5, (fmt, g, c)


def test_a_video_with_wide_primaries_says_they_are_not_converted(tmp_path):
    from depthcraft.tasks.lib import clip

    ff = clip.ffmpeg_exe()
    src, tagged = tmp_path / "v.mp4", tmp_path / "w.mp4"
    subprocess.run([ff, "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=0xC87850:s=64x64:d=0.2", "-pix_fmt",
                    "yuv420p", "-c:v", "libx264", str(src)], check=True)
    subprocess.run([ff, "-v", "error", "-y", "-i", str(src), "-c", "copy", "-bsf:v",
                    "h264_metadata=colour_primaries=9:transfer_characteristics=1:matrix_coefficients=9",
                    str(tagged)], check=True)
    assert not any("primaries" in n for n in clip.probe_clip(src).notices)
    notes = [n for n in clip.probe_clip(tagged).notices if "primaries" in n]
    assert len(notes) == 1 and "bt2020" in notes[0] and "w.mp4" in notes[0]


def test_a_gallery_thumbnail_of_a_tagged_photo_is_in_srgb(tmp_path):
    from depthcraft.flows import gallery

    rgb = np.zeros((96, 128, 3), np.uint8)
    rgb[:] = (200, 120, 80)
    Image.fromarray(rgb).save(tmp_path / "p.png", icc_profile=_icc("p3"))
    thumb = gallery.thumbnail(tmp_path / "p.png", tmp_path, "k" * 40)
    with Image.open(thumb) as im:
        got = np.asarray(im.convert("RGB"))[20, 20].astype(float)
    assert np.abs(got - _truth(rgb[0, 0], "p3")).max() <= 3, got  # (lossy WebP)


def test_a_profile_description_cannot_write_to_the_terminal(tmp_path):
    evil = ib.rgb_profile("P3 \x1b[31mred\x1b[0m\r\nsecond line", ib.P3_PRIMARIES, ib.D65_XY, 2.2)
    Image.fromarray(_pixels()).save(tmp_path / "e.png", icc_profile=evil)
    d = images.read_image(tmp_path / "e.png").profile
    assert d == "P3 [31mred [0m second line"
    assert all(c.isprintable() for c in images.decode_revision(tmp_path / "e.png"))


def test_a_png_profile_over_pillows_limit_is_read_as_srgb(tmp_path, said):
    rgb = _pixels()
    Image.fromarray(rgb).save(tmp_path / "h.png", icc_profile=b"\0" * 3_000_000)  # inflates past 1 MB
    ph = images.read_image(tmp_path / "h.png")
    assert np.array_equal(ph.rgb, rgb) and ph.profile is None
    assert len(said) == 1 and "h.png" in said[0] and "read as sRGB" in said[0], said


def test_the_manifest_records_a_profile_that_is_not_applied(tmp_path, monkeypatch):
    """A broken or mismatched profile was said once in a notice and the manifest recorded nothing,
    as for an untagged photo: after a cached re-run nothing said its colours were not managed."""
    from depthcraft.flows import manifest

    monkeypatch.setenv("DEPTHCRAFT_HOME", str(tmp_path / "ws"))
    rgb = _pixels()
    Image.fromarray(rgb).save(tmp_path / "broken.jpg", icc_profile=b"\0" * 3000)
    Image.fromarray(rgb).convert("L").save(tmp_path / "grey.png", icc_profile=_icc("p3"))
    Image.fromarray(rgb).save(tmp_path / "t.png", icc_profile=_icc("p3"))
    plan = plan_of(tmp_path, """\
        version: 1
        name: t
        provider: classic
        inputs:
          images: [broken.jpg, grey.png, t.png]
        steps:
          - {id: depth, uses: estimate}
        output: out/{recipe}/{image}/
        """)
    m = json.loads(json.dumps(manifest.build(plan, run_id=None, started=time.time(), nodes=[], failures=[],
                                             identities={})))
    by = {i["name"]: i.get("colour") for i in m["inputs"]}
    assert by["broken"].startswith("not applied: its colour profile cannot be read ("), by
    assert by["grey"] == ("not applied: its colour profile (Display P3 test) is for RGB colours, "
                          "the picture is GRAY; read as sRGB"), by
    assert by["t"].startswith("converted from the ICC profile 'Display P3 test'"), by
