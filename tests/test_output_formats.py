"""An output's contents agree with its name: the suffix picks the format where none is given, a
suffix that contradicts an explicit format/layout/container is refused (one line, nothing written),
in one-shot commands, focus-stack, clips and recipes. Files are checked by their magic bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli, save_photo

PNG = b"\x89PNG\r\n\x1a\n"
EXR = b"\x76\x2f\x31\x01"
NPY = b"\x93NUMPY"


def magic(path) -> str:
    """What a file is, by its first bytes (and, for JPEG, an MPF APP2 segment: MPO)."""
    b = open(path, "rb").read()
    if b.startswith(PNG):
        return "png16" if b[24] == 16 else "png"
    if b.startswith(b"\xff\xd8"):
        return "mpo" if b"MPF\x00" in b[:65536] else "jpeg"
    if b.startswith(EXR):
        return "exr"
    if b.startswith(NPY):
        return "npy"
    if b[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if b.startswith(b"PK"):
        return "npz"
    if b[:2] == b"Pf":
        return "pfm"
    if b.startswith(b"GIF89a") or b.startswith(b"GIF87a"):
        return "gif"
    if b[4:8] == b"ftyp":
        return "mp4"
    if b.startswith(b"glTF"):
        return "glb"
    if b.startswith(b"ply\n"):
        return "ply"
    return "?"


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    import cv2
    import skimage.data as d

    root = tmp_path_factory.mktemp("sfx")
    return save_photo(root / "photo.png", cv2.resize(d.astronaut(), (96, 96), interpolation=cv2.INTER_AREA))


def cli(*args):
    return run_cli(*args, "--provider", "classic", timeout=120)


def wrote(*args) -> str:
    """Run a command that must succeed; the kind of file its last argument (the -o path) holds."""
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    return magic(args[-1])


def refused(r, out, *words):
    """One clear line naming the words, a non-zero exit, no traceback, nothing written."""
    err = r.stderr.strip()
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, (w, err)
    assert not out.exists() and not list(out.parent.glob(out.stem + "*")), list(out.parent.iterdir())


# -- the suffix picks the format ------------------------------------------------------------
@pytest.mark.parametrize("kind,name,what", [
    ("estimate", "d.exr", "exr"), ("estimate", "d.npy", "npy"), ("estimate", "d.TIFF", "tiff"),
    ("estimate", "d.tif", "tiff"), ("estimate", "d.pfm", "pfm"), ("estimate", "d.npz", "npz"),
    ("estimate", "d.png", "png"), ("refine", "r.exr", "exr"), ("refine", "r.npy", "npy"),
    ("stereo", "x.jpg", "jpeg"), ("stereo", "x.JPEG", "jpeg"), ("stereo", "x.mpo", "mpo"),
    ("stereo", "x.png.jpg", "jpeg"), ("bokeh", "b.JPG", "jpeg"), ("bokeh", "b.png", "png"),
    ("mesh", "m.ply", "ply"), ("export", "e.exr", "exr"),
])
def test_suffix_picks_the_format(tmp_path, photo, kind, name, what):
    out = tmp_path / name
    r = cli(kind, photo, "-o", out)
    assert r.returncode == 0, r.stderr
    assert magic(out) == what


def test_explicit_format_sharing_a_suffix_is_kept(tmp_path, photo):
    """png16 is a PNG: `--format png16 -o d.png` writes 16 bits (the naive name check refused it)."""
    assert wrote("estimate", photo, "--format", "png16", "-o", tmp_path / "d.png") == "png16"
    assert wrote("estimate", photo, "--format", "metric_tiff", "--set", "metric={near: 1, far: 5}", "-o", tmp_path / "m.tiff") == "tiff"
    assert wrote("stereo", photo, "--layout", "mpo", "-o", tmp_path / "p.MPO") == "mpo"


def test_export_main_format_from_suffix_keeps_the_others(tmp_path, photo):
    assert wrote("export", photo, "-o", tmp_path / "e.npy") == "npy"
    assert magic(tmp_path / "e-grayscale.png") == "png" and magic(tmp_path / "e-png16.png") == "png16"


def test_no_suffix_with_explicit_format_writes_it(tmp_path, photo):
    assert wrote("estimate", photo, "--format", "exr", "-o", tmp_path / "depth") == "exr"


def test_no_suffix_keeps_working_where_it_did(tmp_path, photo):
    """export and layers never read the suffix: without one they write their defaults, as before."""
    assert wrote("export", photo, "-o", tmp_path / "e") == "png" and magic(tmp_path / "e-npy.npy") == "npy"
    assert wrote("layers", photo, "-o", tmp_path / "l") == "png"


# -- refusals ---------------------------------------------------------------------------------
@pytest.mark.parametrize("args,name,words", [
    (("estimate",), "d.jpg", ["-o", "d.jpg", "JPEG"]),  # wrote PNG bytes into d.jpg
    (("estimate", "--format", "png16"), "d.jpg", ["-o", "d.jpg", "--format png16", ".png"]),
    (("estimate", "--format", "exr"), "d.npy", ["-o", "d.npy", "--format exr", ".exr"]),
    (("estimate",), "d.mp4", ["-o", "d.mp4"]),
    (("refine", "--format", "png16"), "r.exr", ["-o", "r.exr", "--format png16"]),
    (("stereo", "--format", "png"), "x.jpg", ["-o", "x.jpg", "--format png", ".png"]),  # wrote PNG into x.jpg
    (("stereo", "--layout", "mpo"), "x.png", ["-o", "x.png", "--layout mpo", ".mpo"]),  # wrote MPO into x.png
    (("stereo", "--layout", "mpo"), "x.jpg", ["-o", "x.jpg", "--layout mpo"]),
    (("stereo", "--layout", "sbs"), "x.mpo", ["-o", "x.mpo", "--layout sbs"]),
    (("stereo", "--eye", "right", "--divergence", "3"), "r.mpo", ["-o", "r.mpo", "--eye right", ".png"]),  # the option that decides, not the others
    (("stereo",), "x.tif", ["-o", "x.tif"]),
    (("bokeh", "--format", "jpg"), "b.png", ["-o", "b.png", "--format jpg"]),
    (("mesh", "--format", "obj"), "m.glb", ["-o", "m.glb", "--format obj", ".obj"]),
    (("mesh",), "m.png", ["-o", "m.png"]),
    (("parallax", "--container", "gif"), "v.mp4", ["-o", "v.mp4", "--container gif"]),
    (("export", "--set", "formats=[png16]"), "e.npy", ["-o", "e.npy", "formats", "[png16]"]),
    (("layers",), "l.jpg", ["-o", "l.jpg"]),
    (("viewer",), "v.png", ["-o"]),
    (("estimate",), "-", ["-o", "standard output"]),
])
def test_contradicting_or_unwritable_suffix_is_refused(tmp_path, photo, args, name, words):
    out = tmp_path / name
    r = cli(args[0], photo, *args[1:], "-o", out if name != "-" else "-")
    refused(r, out, *words)


def test_folder_output_for_a_photo_still_refused(tmp_path, photo):
    r = cli("estimate", photo, "-o", f"{tmp_path}/d/")
    assert r.returncode == 2 and "folder" in r.stderr and "Traceback" not in r.stderr


def test_focus_stack_checks_outputs_before_work(tmp_path, photo):
    r = run_cli("focus-stack", photo, photo, "-o", tmp_path / "a.jpg", "--depth-out", tmp_path / "d.jpg")
    refused(r, tmp_path / "a.jpg", "--depth-out", "d.jpg")
    r = run_cli("focus-stack", photo, photo, "-o", tmp_path / "a.xyz")
    refused(r, tmp_path / "a.xyz", "-o", ".xyz")
    r = run_cli("focus-stack", photo, photo, "-o", tmp_path / "a.jpg", "--depth-out", tmp_path / "d.exr")
    assert r.returncode == 0, r.stderr
    assert magic(tmp_path / "a.jpg") == "jpeg" and magic(tmp_path / "d.exr") == "exr"


# -- the hooks agree with each other ------------------------------------------------------------
SUFFIXES = (".png", ".jpg", ".jpeg", ".JPG", ".mpo", ".npy", ".pfm", ".npz", ".tif", ".tiff", ".exr", ".mp4",
            ".webm", ".gif", ".glb", ".obj", ".ply", ".html", ".htm", ".mkv", ".docx")


def test_every_suffix_a_step_accepts_is_one_it_writes():
    """For every step and suffix: what ``params_for_output`` implies writes that very suffix."""
    from depthcraft.tasks.catalog import steps
    from depthcraft.tasks.lib.errors import ParameterError

    accepted = 0
    for kind, spec in steps().items():
        assert spec.params_for_output is not None and spec.main_suffixes is not None, kind
        for s in SUFFIXES:
            try:
                implied = spec.params_for_output(f"/tmp/x{s}")
            except ParameterError:
                continue
            p = spec.params.model_validate(implied)
            assert s.lower() in spec.main_suffixes(p), (kind, s, implied)
            accepted += 1
    assert accepted >= 20


def test_depth_suffix_table_covers_every_format_and_writes_its_first():
    from depthcraft.tasks.lib.formats import FORMATS, SUFFIX
    from depthcraft.tasks.lib.outputs import DEPTH_FOR_SUFFIX, DEPTH_SUFFIXES

    assert set(DEPTH_SUFFIXES) == set(FORMATS)
    for fmt in FORMATS:
        assert DEPTH_SUFFIXES[fmt][0] == SUFFIX[fmt]  # what write_format's caller names the file
    for suffix, fmt in DEPTH_FOR_SUFFIX.items():
        assert suffix in DEPTH_SUFFIXES[fmt]


def test_conflict_is_a_mapping_not_a_name_comparison():
    from depthcraft.tasks.catalog import get_step
    from depthcraft.tasks.lib.outputs import conflict

    est = get_step("estimate")
    for fmt in ("grayscale", "png16", "inverse", "preview", "metric_mm"):
        assert conflict(est, "d.png", est.params(format=fmt), {"format"}) is None
    assert conflict(est, "d.tiff", est.params(format="tiff"), {"format"}) is None
    assert conflict(est, "d.tif", est.params(format="metric_tiff"), {"format"}) is None
    assert "png16" in conflict(est, "d.jpg", est.params(format="png16"), {"format"})
    assert conflict(est, "depth", est.params(format="exr"), {"format"}) is None  # no suffix


# -- clips -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from cliputil import make_clip

    return make_clip(tmp_path_factory.mktemp("sfxclip") / "c.mp4", n=6, size=(96, 64), audio=False)


@pytest.mark.parametrize("args,name,words", [
    (("estimate", "--format", "png16"), "d.mp4", ["-o", "d.mp4", "png16", ".mkv"]),
    (("estimate", "--format", "exr"), "d.webm", ["-o", "d.webm", "exr"]),
    (("estimate", "--format", "inverse"), "d.mkv", ["-o", "d.mkv", "inverse", "folder"]),
    (("stereo", "--format", "jpg"), "s.mp4", ["-o", "s.mp4", "jpg"]),
    (("stereo", "--layout", "mpo"), "s.mp4", ["-o", "mpo"]),
    (("parallax", "--container", "gif"), "p.mp4", ["-o", "p.mp4", "gif"]),
    (("export", "--set", "formats=[png16, grayscale]"), "e.mp4", ["-o", "e.mp4", "png16", ".mkv"]),
])
def test_clip_output_contradicting_an_explicit_format_is_refused(tmp_path, clip, args, name, words):
    out = tmp_path / name
    r = cli(args[0], clip, *args[1:], "-o", out)
    refused(r, out, *words)


def test_clip_16bit_format_in_mkv_and_folder_still_work(tmp_path, clip):
    r = cli("estimate", clip, "--format", "png16", "-o", tmp_path / "d.mkv")
    assert r.returncode == 0, r.stderr
    assert open(tmp_path / "d.mkv", "rb").read(4) == b"\x1a\x45\xdf\xa3"  # EBML: Matroska
    r = cli("estimate", clip, "--format", "exr", "-o", f"{tmp_path}/frames/")
    assert r.returncode == 0, r.stderr
    files = sorted((tmp_path / "frames").iterdir())
    assert len(files) == 6 and all(magic(f) == "exr" for f in files)


# -- recipes -----------------------------------------------------------------------------------
RECIPE = """version: 1
name: sfx
provider: classic
inputs:
  images: ["{img}"]
steps:
  - id: {sid}
    uses: estimate
    with: {{format: {fmt}}}
{extra}"""


def _validate(tmp_path, **kw):
    p = tmp_path / "r.yaml"
    p.write_text(RECIPE.format(**{"extra": "", **kw}))
    return run_cli("validate", p, env={"DEPTHCRAFT_HOME": str(tmp_path / "ws")}, timeout=120), p


def test_recipe_clip_output_against_format_refused_by_validate(tmp_path, clip):
    r, p = _validate(tmp_path, img=clip, sid="depth", fmt="png16", extra="    clip_output: mp4\n")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"{p}:10" in r.stderr and "clip_output" in r.stderr and "png16" in r.stderr and ".mkv" in r.stderr
    r, p = _validate(tmp_path, img=clip, sid="depth", fmt="png16", extra="    clip_output: mkv\n")
    assert r.returncode == 0, r.stderr


def test_recipe_clip_default_output_must_hold_the_format(tmp_path, clip):
    """Without clip_output a clip step writes a video; an 8-bit gray video cannot be `inverse`
    (black = near): refused before any step runs, and a folder of frames is fine."""
    r, p = _validate(tmp_path, img=clip, sid="depth", fmt="inverse")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"{p}:9" in r.stderr and "inverse" in r.stderr and "clip_output" in r.stderr
    r, p = _validate(tmp_path, img=clip, sid="depth", fmt="inverse", extra="    clip_output: folder\n")
    assert r.returncode == 0, r.stderr


def test_recipe_step_id_with_a_contradicting_suffix_refused(tmp_path, photo):
    r, p = _validate(tmp_path, img=photo, sid="depth.jpg", fmt="grayscale")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"{p}:7" in r.stderr and "depth.jpg" in r.stderr and ".png" in r.stderr
    r, p = _validate(tmp_path, img=photo, sid="depth.exr", fmt="exr")
    assert r.returncode == 0, r.stderr
    r, p = _validate(tmp_path, img=photo, sid="depth.v2", fmt="png16")  # not a file suffix: a name
    assert r.returncode == 0, r.stderr


# -- hostile cases (found by attacking the feature) ---------------------------------------------
def test_focus_stack_depth_out_same_file_as_the_image_refused(tmp_path, photo):
    """`-o f.png --depth-out f.png` wrote the depth map over the all-in-focus image ("wrote f.png" twice)."""
    out = tmp_path / "f.png"
    r = run_cli("focus-stack", photo, photo, "-o", out, "--depth-out", tmp_path / "." / "f.png")
    refused(r, out, "--depth-out", "f.png")


def test_explicit_flag_and_set_that_disagree_are_refused(tmp_path, photo):
    """`--format npz --set format=png16 -o d.png` silently dropped the explicit --format npz."""
    out = tmp_path / "d.png"
    r = cli("estimate", photo, "--format", "npz", "--set", "format=png16", "-o", out)
    refused(r, out, "--format", "npz", "--set format=png16")
    r = cli("estimate", photo, "--format", "png16", "--set", "format=png16", "-o", out)  # agreeing: fine
    assert r.returncode == 0 and magic(out) == "png16", r.stderr


def test_clip_output_refusal_names_the_file(tmp_path, clip):
    out = tmp_path / "cd.png"
    r = cli("estimate", clip, "-o", out)
    refused(r, out, "-o", "cd.png", ".png")


def test_two_runs_muxing_to_the_same_output_both_finish(tmp_path, monkeypatch):
    """Two runs writing one clip output at once: the second run's mux used the first one's temp
    file name (`.o.mux.mp4`), so the first failed with a FileNotFoundError traceback. Here the
    other run finishes in between this run's mux and its rename."""
    import os as _os

    from cliputil import make_clip
    from depthcraft.tasks.lib import clip as C

    src = make_clip(tmp_path / "src.mp4", n=6, size=(96, 64), audio=True)
    out = tmp_path / "o.mp4"
    real_replace, nested = _os.replace, []

    def replace(a, b):
        if Path(b) == out and not nested:
            nested.append(1)
            C.mux_audio(make_clip(tmp_path / "v2.mp4", n=6, audio=False), src, out)  # the other run
        return real_replace(a, b)

    monkeypatch.setattr(C.os, "replace", replace)
    C.mux_audio(make_clip(tmp_path / "v1.mp4", n=6, audio=False), src, out)
    assert nested and magic(out) == "mp4"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("kind", ["estimate", "bokeh"])
def test_output_under_a_file_refused_before_any_work(tmp_path, photo, kind):
    """`-o photo.jpg/x.png` (a file where a folder must be): a FileExistsError traceback after the
    whole step had run."""
    blocker = tmp_path / "a.jpg"
    blocker.write_bytes(b"x")
    r = cli(kind, photo, "-o", blocker / "x.png")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and "-o" in err and "a.jpg" in err and "not a folder" in err, err
    r = run_cli("focus-stack", photo, photo, "-o", tmp_path / "f.png", "--depth-out", blocker / "d.png")
    refused(r, tmp_path / "f.png", "--depth-out", "a.jpg", "not a folder")


def test_output_that_is_the_input_refused(tmp_path, photo):
    """`bokeh p.jpg -o p.jpg` overwrote the photo it was given; `--depth d.png -o d.png` the depth."""
    import shutil

    src = tmp_path / "p.png"
    shutil.copyfile(photo, src)
    before = src.read_bytes()
    r = cli("bokeh", src, "-o", tmp_path / "." / "p.png")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "-o" in r.stderr and "p.png" in r.stderr, r.stderr
    assert src.read_bytes() == before
    d = tmp_path / "d.png"
    assert cli("estimate", src, "-o", d).returncode == 0
    dbefore = d.read_bytes()
    r = cli("refine", src, "--depth", d, "-o", d)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "d.png" in r.stderr, r.stderr
    assert d.read_bytes() == dbefore


def test_focus_stack_output_that_is_a_bracket_photo_refused(tmp_path, photo):
    import shutil

    a, b = tmp_path / "a.png", tmp_path / "b.png"
    shutil.copyfile(photo, a), shutil.copyfile(photo, b)
    before = b.read_bytes()
    for opts in (["-o", b], ["-o", tmp_path / "f.png", "--depth-out", b]):
        r = run_cli("focus-stack", a, b, *opts)
        assert r.returncode == 2 and "Traceback" not in r.stderr and "b.png" in r.stderr, r.stderr
        assert b.read_bytes() == before and not (tmp_path / "f.png").exists()


@pytest.mark.parametrize("kind", ["parallax", "viewer", "stereo", "mesh"])
def test_no_suffix_refusal_says_so(tmp_path, photo, kind):
    """`parallax p.jpg -o video` said "cannot tell a video format from '.'"."""
    out = tmp_path / "video"
    r = cli(kind, photo, "-o", out)
    refused(r, out, "-o", "video", "without a suffix")


@pytest.mark.parametrize("name", [".png", ".mp4", "frames."])
def test_clip_output_named_like_a_suffix_is_not_a_folder(tmp_path, clip, name):
    """`estimate clip.mp4 -o .png` wrote a folder of frames named `.png` (Path('.png').suffix is '')."""
    out = tmp_path / name
    r = cli("estimate", clip, "-o", out)
    refused(r, out, "-o", name)
    r = cli("estimate", clip, "-o", f"{out}/")  # said as a folder: one
    assert r.returncode == 0 and out.is_dir(), r.stderr


def test_interrupted_frame_folder_has_no_half_frame(tmp_path, clip, monkeypatch):
    """A clip's frame folder was filled with plain copies: Ctrl-C in the middle of one left a
    truncated frame under its final name."""
    import shutil

    from depthcraft.tasks import clips as E

    seg = tmp_path / "seg"
    seg.mkdir()
    for i in range(6):
        (seg / f"{i:06d}.png").write_bytes(PNG + bytes(4000))
    real, calls = shutil.copyfile, []

    def copyfile(src, dst, **kw):
        calls.append(dst)
        if len(calls) == 3:  # Ctrl-C half way through the third frame
            Path(dst).write_bytes(Path(src).read_bytes()[:100])
            raise KeyboardInterrupt
        return real(src, dst, **kw)

    monkeypatch.setattr(shutil, "copyfile", copyfile)
    out = tmp_path / "frames"
    with pytest.raises(KeyboardInterrupt):
        E.assemble("estimate", [E.SegmentResult("estimate", 0, 6, {"main": seg}, 6, 0.0, "folder")], clip,
                   f"{out}/", E.get_step("estimate").params())
    assert [f.name for f in out.iterdir() if f.stat().st_size != 4008] == []


def test_stereo_mpo_with_an_explicit_png_format_refused(tmp_path, photo):
    """`stereo p.jpg -o x.mpo --format png` wrote a stereo JPEG although --format png was given."""
    out = tmp_path / "x.mpo"
    r = cli("stereo", photo, "--format", "png", "-o", out)
    refused(r, out, "-o", "x.mpo", "--format png")
    r = cli("stereo", photo, "--format", "jpg", "-o", out)  # an MPO is JPEGs: fine
    assert r.returncode == 0 and magic(out) == "mpo", r.stderr


def test_recipe_mpo_layout_with_png_format_refused(tmp_path, photo):
    p = tmp_path / "r.yaml"
    body = ("version: 1\nname: m\nprovider: classic\ninputs:\n  images: [\"{img}\"]\nsteps:\n  - id: d\n    uses: estimate\n"
            "  - id: s\n    uses: stereo\n    from: d\n    with: {{layout: mpo, format: {fmt}}}\n")
    p.write_text(body.format(img=photo, fmt="png"))
    r = run_cli("validate", p, env={"DEPTHCRAFT_HOME": str(tmp_path / "ws")}, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"{p}:12" in r.stderr and "png" in r.stderr and "mpo" in r.stderr, r.stderr
    p.write_text(body.format(img=photo, fmt="jpg"))
    r = run_cli("validate", p, env={"DEPTHCRAFT_HOME": str(tmp_path / "ws")}, timeout=120)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("kind,name", [("mesh", "m.glb"), ("viewer", "v.html"), ("mesh", "m.mp4")])
def test_a_step_that_takes_no_clips_says_so_first(tmp_path, clip, kind, name):
    """`mesh clip.mp4 -o m.glb` said "a clip's output is a video file", then `-o m.mp4` "mesh does
    not take clips": the first answer sent the user the wrong way."""
    out = tmp_path / name
    r = cli(kind, clip, "-o", out)
    refused(r, out, f"a clip; {kind} takes photos")  # (docs/odd-inputs.md: and where clips go)


def test_a_file_beside_the_output_never_overwrites_the_input(tmp_path, photo):
    """`stereo pair-right.png -o pair.png` wrote its right eye, pair-right.png, over the photo it
    was given. Refused before anything is written."""
    import shutil

    src = tmp_path / "pair-right.png"
    shutil.copyfile(photo, src)
    before = src.read_bytes()
    out = tmp_path / "pair.png"
    r = cli("stereo", src, "-o", out)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "pair-right.png" in r.stderr, r.stderr
    assert src.read_bytes() == before and not out.exists()


def test_a_renamed_clip_output_never_overwrites_the_input(tmp_path, clip):
    """`stereo s_SBS_LR.mp4 -o s.mp4` writes s_SBS_LR.mp4 (3D players read the tag): it was the input."""
    import shutil

    src = tmp_path / "s_SBS_LR.mp4"
    shutil.copyfile(clip, src)
    before = src.read_bytes()
    r = cli("stereo", src, "-o", tmp_path / "s.mp4")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "s_SBS_LR.mp4" in r.stderr, r.stderr
    assert src.read_bytes() == before


@pytest.mark.parametrize("src", ["photo", "clip"])
def test_an_empty_output_name_refused(tmp_path, request, src, monkeypatch):
    """`estimate clip.mp4 -o ""` wrote its frames into the current folder."""
    monkeypatch.chdir(tmp_path)
    r = cli("estimate", request.getfixturevalue(src), "-o", "")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "empty" in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []


def test_interrupted_focus_stack_leaves_no_half_image(tmp_path, photo, monkeypatch):
    """focus-stack wrote its image straight to -o: Ctrl-C during the write left a truncated file."""
    import argparse

    from depthcraft.flows import cli as C
    from depthcraft.tasks.lib import images

    real = images.write_image

    def write_image(path, arr, **kw):
        real(path, arr, **kw)
        Path(path).write_bytes(Path(path).read_bytes()[:50])  # half written when Ctrl-C came
        raise KeyboardInterrupt

    monkeypatch.setattr(images, "write_image", write_image)
    out = tmp_path / "f.png"
    a = argparse.Namespace(images=[str(photo), str(photo)], output=str(out), depth_out=None, order=None,
                           no_align=True, max_pixels=None, downscale=False)
    with pytest.raises(KeyboardInterrupt):
        C.cmd_focus_stack(a)
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == []
