"""One-shot commands on clips: `depthcraft <step> CLIP -o OUT`, through the real command line."""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import run_cli
from cliputil import make_animation, make_clip, shown, vfr_clip, vfr_expected
from depthcraft.tasks.lib.clip import count_frames, probe_clip


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("c") / "walk.mp4", n=14, size=(160, 96), rate="30000/1001")


def ok(r):
    assert r.returncode == 0, r.stderr[-2000:]
    return r


def test_estimate_png16_folder(clip, tmp_path):
    ok(run_cli("estimate", str(clip), "-o", f"{tmp_path}/d/", "--format", "png16"))
    files = sorted((tmp_path / "d").iterdir())
    assert [f.name for f in files[:3]] == ["000000.png", "000001.png", "000002.png"] and len(files) == 14
    a = cv2.imread(str(files[5]), cv2.IMREAD_UNCHANGED)
    assert a.dtype == np.uint16 and a.shape == (96, 160)
    # white = near: the bottom of a photo is nearer than its top in this scene
    assert a[-10:].mean() > a[:10].mean()


def test_estimate_depth_videos_keep_count_rate_and_audio(clip, tmp_path):
    ok(run_cli("estimate", str(clip), "-o", str(tmp_path / "depth.mp4")))
    ok(run_cli("estimate", str(clip), "-o", str(tmp_path / "depth.mkv"), "--set", "temporal=false"))
    for name, codec, bits in (("depth.mp4", "h264", 8), ("depth.mkv", "ffv1", 16)):
        info = probe_clip(tmp_path / name)
        assert info.frames == 14 and info.rate == Fraction(30000, 1001), name
        assert info.codec == codec and info.bit_depth == bits and info.has_audio, name
        assert count_frames(tmp_path / name) == 14


@pytest.mark.parametrize("layout, name, size", [
    ("hsbs", "out_3dh_LR.mp4", (160, 96)), ("sbs", "out_SBS_LR.mp4", (320, 96)), ("tb", "out_TB.mp4", (160, 192)),
    ("htb", "out_3dv_TB.mp4", (160, 96)), ("cross", "out_SBS_RL.mp4", (320, 96)),
    ("anaglyph", "out_anaglyph.mp4", (160, 96)),
])
def test_stereo_layouts_are_named_for_players(clip, tmp_path, layout, name, size):
    r = ok(run_cli("stereo", str(clip), "-o", str(tmp_path / "out.mp4"), "--layout", layout))
    info = probe_clip(tmp_path / name)
    assert name in r.stdout + r.stderr
    assert (info.width, info.height) == size and info.frames == 14 and info.has_audio


def test_stereo_lr_two_files_and_existing_tag_kept(clip, tmp_path):
    ok(run_cli("stereo", str(clip), "-o", str(tmp_path / "m.mp4"), "--layout", "lr"))
    assert probe_clip(tmp_path / "m_L.mp4").frames == 14 and probe_clip(tmp_path / "m_R.mp4").frames == 14
    ok(run_cli("stereo", str(clip), "-o", str(tmp_path / "film.3D.HSBS.mkv"), "--layout", "hsbs"))
    assert probe_clip(tmp_path / "film.3D.HSBS.mkv").frames == 14


def test_other_steps_take_clips(clip, tmp_path):
    ok(run_cli("bokeh", str(clip), "-o", str(tmp_path / "portrait.mp4")))
    ok(run_cli("refine", str(clip), "-o", str(tmp_path / "refined.mkv")))
    ok(run_cli("export", str(clip), "-o", str(tmp_path / "ex/"), "--set", "formats=[png16,npy]"))
    ok(run_cli("layers", str(clip), "-o", str(tmp_path / "layers/"), "--count", "2"))
    ok(run_cli("parallax", str(clip), "-o", str(tmp_path / "move.mp4")))
    for name in ("portrait.mp4", "refined.mkv", "move.mp4"):
        info = probe_clip(tmp_path / name)
        assert info.frames == 14 and info.rate == Fraction(30000, 1001) and info.has_audio, name
    assert len(list((tmp_path / "ex").iterdir())) == 14 and len(list((tmp_path / "ex-npy").glob("*.npy"))) == 14
    layer = cv2.imread(str(tmp_path / "layers-layer_0" / "000003.png"), cv2.IMREAD_UNCHANGED)
    assert layer.shape == (96, 160, 4)


def test_rotated_odd_clip_and_gif(tmp_path):
    c = make_clip(tmp_path / "r.mp4", n=6, size=(97, 65), rate="24000/1001", rotation=90)
    ok(run_cli("estimate", str(c), "-o", f"{tmp_path}/r/", "--format", "png16"))
    a = cv2.imread(str(tmp_path / "r" / "000000.png"), cv2.IMREAD_UNCHANGED)
    assert a.shape == (97, 65)
    r = ok(run_cli("stereo", str(c), "-o", str(tmp_path / "r.mp4".replace("r.", "s."))))
    info = probe_clip(tmp_path / "s_SBS_LR.mp4")
    assert (info.width, info.height) == (130, 98) and info.rate == Fraction(24000, 1001) and info.frames == 6
    assert "padded" in r.stderr
    g = make_animation(tmp_path / "a.gif", n=5)
    ok(run_cli("estimate", str(g), "-o", str(tmp_path / "g.mp4")))
    assert probe_clip(tmp_path / "g.mp4").frames == 5


def test_bad_clip_is_one_line(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x00" * 100)
    r = run_cli("estimate", str(bad), "-o", str(tmp_path / "d.mp4"))
    assert r.returncode != 0 and "broken.mp4" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = run_cli("estimate", str(make_clip(tmp_path / "c.mp4", n=3, size=(64, 64))), "-o", str(tmp_path / "d.txt"))
    assert r.returncode != 0 and "-o" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("layout", ["hsbs", "htb"])
def test_half_size_layouts_of_the_smallest_clip(tmp_path, layout):
    # a 64x64 clip (the smallest taken): each eye of a half-size layout is 32 px
    import imageio_ffmpeg

    clip = tmp_path / "small.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i",
                    "color=red:size=64x64:rate=10", "-frames:v", "4", "-c:v", "libx264", "-pix_fmt", "yuv444p",
                    str(clip)], check=True)
    r = run_cli("stereo", clip, "-o", tmp_path / "s.mp4", "--layout", layout, "--provider", "classic")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert probe_clip(next(tmp_path.glob("s*.mp4"))).frames == 4


@pytest.mark.parametrize("size", ["1x1", "63x80"])
def test_a_clip_under_64_px_is_refused_like_a_photo(tmp_path, size):
    # was: a 1x1 clip was taken (and written as 2x2) while a 1x1 photo is refused
    import imageio_ffmpeg

    clip = tmp_path / "tiny.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i",
                    f"color=red:size={size}:rate=10", "-frames:v", "4", "-c:v", "libx264", "-pix_fmt", "yuv444p",
                    str(clip)], check=True)
    for kind in ("stereo", "estimate"):
        r = run_cli(kind, clip, "-o", tmp_path / f"{kind}.mp4", "--provider", "classic")
        assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "tiny.mp4" in lines[0] and f"frames are {size}; both sides must be at least 64 px" in lines[0], r.stderr
        assert not list(tmp_path.glob(f"{kind}*"))


def test_odd_size_notice_names_the_clip_once(tmp_path):
    # was: "main-000000-000010.mp4: 1x1 has an odd side; padded to 2x2" (a segment's temp file)
    import imageio_ffmpeg

    clip = tmp_path / "odd.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i",
                    "testsrc=size=97x65:rate=2", "-frames:v", "30", "-c:v", "libx264", "-pix_fmt", "yuv444p",
                    str(clip)], check=True)
    r = ok(run_cli("estimate", clip, "-o", tmp_path / "d.mp4", "--provider", "classic"))
    odd = [ln for ln in r.stderr.splitlines() if "odd side" in ln]
    assert odd == ["odd.mp4 (estimate video): 97x65 has an odd side; padded to 98x66 for yuv420p video"], r.stderr
    assert probe_clip(tmp_path / "d.mp4").frames == 30  # two segments of 20 and 10


def test_a_folder_output_for_a_single_picture_is_one_clear_line(tmp_path):
    # -o DIR/ is for clips; for a photo it used to write a file named like the folder, or fail
    # with "cannot tell a format from ''"
    from skimage import data
    from PIL import Image

    photo = tmp_path / "p.png"
    Image.fromarray(data.astronaut()[::4, ::4]).save(photo)
    for kind in ("layers", "estimate"):
        r = run_cli(kind, photo, "-o", f"{tmp_path / 'out'}/", "--provider", "classic")
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert "'-o'" in r.stderr and "p.png is a single picture" in r.stderr, r.stderr
        assert not (tmp_path / "out").exists()


# -- an output is what its name says: export's formats on clips ----------------------------------------
def levels(path: Path) -> int:
    """Distinct depth levels in the first frame of a depth video (read at its own bit depth)."""
    from depthcraft.tasks.lib.clip import read_depth_frames

    return len(np.unique(np.round(next(read_depth_frames(path)) * 65535.0)))


def wrote(r) -> list[str]:
    """The file names in the command's ``wrote ...`` lines."""
    return [Path(line.split()[1]).name for line in (r.stdout + r.stderr).splitlines()
            if line.startswith("wrote ")]


@pytest.mark.parametrize("suffix, codec", [(".mp4", "h264"), (".webm", "vp9"), (".gif", "gif")])
def test_export_default_deep_formats_beside_an_8bit_video_are_16bit_mkv(clip, tmp_path, suffix, codec):
    """`export c.mp4 -o out.mp4` (default formats grayscale, png16, npy, preview) wrote
    out-png16.mp4 and out-npy.mp4: byte-identical 8-bit H.264 copies of out.mp4. A 16-bit
    format beside an 8-bit video now goes into its own 16-bit FFV1 .mkv."""
    r = ok(run_cli("export", str(clip), "-o", str(tmp_path / f"out{suffix}")))
    names = [f"out{suffix}", "out-png16.mkv", "out-npy.mkv", f"out-preview{suffix}"]
    assert wrote(r) == names and sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    for name in ("out-png16.mkv", "out-npy.mkv"):
        info = probe_clip(tmp_path / name)
        assert (info.codec, info.bit_depth, info.pix_fmt) == ("ffv1", 16, "gray16le"), name
        assert info.frames == 14 and info.rate == Fraction(30000, 1001) and info.has_audio, name
        assert count_frames(tmp_path / name) == 14
        assert levels(tmp_path / name) > 256, name  # more than an 8-bit video can hold
    for name in names[::3]:  # the main (gray) and the preview stay in the container the user chose
        info = probe_clip(tmp_path / name)
        assert info.codec == codec and info.bit_depth == 8 and info.frames == 14, name
        if suffix != ".gif":  # (a GIF's frames are counted by Pillow in probe_clip)
            assert count_frames(tmp_path / name) == 14
    from depthcraft.tasks.lib.clip import read_depth_frames

    main, deep = (next(read_depth_frames(tmp_path / n)) for n in (names[0], "out-png16.mkv"))
    assert levels(tmp_path / names[0]) <= 256
    # the same depth: the 8-bit main is the 16-bit file rounded (up to the lossy codec's error)
    assert float(np.abs(main - deep).mean()) < 0.03


def test_explicit_16bit_formats_beside_an_8bit_video_go_into_mkv_like_the_defaults(clip, tmp_path):
    """`--set formats=[grayscale,png16] -o out.mp4` was refused while the same list as the
    default wrote out-png16.mkv: the main output must fit `-o`, the others are files of their
    own, whether the formats are given or default. A 16-bit main output into .mp4 stays refused."""
    r = ok(run_cli("export", str(clip), "-o", str(tmp_path / "out.mp4"), "--set", "formats=[grayscale,png16]"))
    assert wrote(r) == ["out.mp4", "out-png16.mkv"]
    info = probe_clip(tmp_path / "out-png16.mkv")
    assert (info.codec, info.bit_depth, info.frames) == ("ffv1", 16, 14) and levels(tmp_path / "out-png16.mkv") > 256
    bad = tmp_path / "bad.mp4"
    r = run_cli("export", str(clip), "-o", str(bad), "--set", "formats=[png16,grayscale]")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "png16" in r.stderr and ".mkv" in r.stderr
    assert not bad.exists() and not (tmp_path / "bad-grayscale.mp4").exists()


@pytest.mark.parametrize("input_name, args", [
    ("out-png16.mkv", ("export", "-o", "out.mp4")),
    ("out-npy.mkv", ("export", "-o", "out.mp4")),
    ("out_R.mp4", ("stereo", "-o", "out.mp4", "--layout", "lr")),
    ("out-layer_1.mp4", ("layers", "-o", "out.mp4", "--count", "3")),
])
def test_an_input_that_is_one_of_the_files_written_beside_the_output_is_refused_before_any_work(
        tmp_path, input_name, args):
    """Only the main output was checked against the input before the frames were made; a clip
    named like a file written beside it (out-png16.mkv for `export -o out.mp4`) was refused
    only at the end. Now before anything is read: the input here is not even a video (the
    old code said it cannot be read), and it is left as it was."""
    src = tmp_path / input_name
    src.write_bytes(b"not a video, and not to be overwritten")
    r = run_cli(args[0], str(src), "-o", str(tmp_path / args[2]), *args[3:])
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "the same file as the input" in r.stderr and input_name in r.stderr, r.stderr
    assert src.read_bytes() == b"not a video, and not to be overwritten"
    assert sorted(p.name for p in tmp_path.iterdir()) == [input_name]


def test_export_into_mkv_keeps_each_format_at_its_own_bit_depth(clip, tmp_path):
    """`-o out.mkv`: the main output is 16-bit FFV1 (what .mkv means for a depth video), a 16-bit
    format too; an 8-bit format beside it (`out-grayscale.mkv`) was 16-bit FFV1, now 8-bit."""
    r = ok(run_cli("export", str(clip), "-o", str(tmp_path / "out.mkv"), "--set", "formats=[png16,grayscale,npy]"))
    assert wrote(r) == ["out.mkv", "out-grayscale.mkv", "out-npy.mkv"]
    for name, codec, bits in (("out.mkv", "ffv1", 16), ("out-grayscale.mkv", "h264", 8), ("out-npy.mkv", "ffv1", 16)):
        info = probe_clip(tmp_path / name)
        assert (info.codec, info.bit_depth, info.frames) == (codec, bits, 14), name
        assert (levels(tmp_path / name) > 256) == (bits == 16), name


def test_a_depth_gif_holds_every_frame_in_gray(clip, tmp_path):
    """A depth GIF (estimate -o d.gif) was float frames piped as RGB bytes: 4/3 as many frames of
    noise. It is the 8-bit depth, one GIF frame per clip frame."""
    ok(run_cli("estimate", str(clip), "-o", str(tmp_path / "d.gif")))
    ok(run_cli("estimate", str(clip), "-o", str(tmp_path / "d.mp4")))
    from PIL import Image

    with Image.open(tmp_path / "d.gif") as im:
        assert im.n_frames == 14
        im.seek(5)
        g = np.asarray(im.convert("RGB")).astype(np.float32)
    assert np.abs(g[..., 0] - g[..., 1]).max() <= 1 and np.abs(g[..., 0] - g[..., 2]).max() <= 1  # gray
    from depthcraft.tasks.lib.clip import read_depth_frames

    ref = list(read_depth_frames(tmp_path / "d.mp4"))[5] * 255.0
    assert float(np.abs(g[..., 0] - ref).mean()) < 8.0  # the same depth (GIF dither and H.264 apart)


def _duration(path) -> float:
    """The video stream's duration (its packets' timestamps, read without decoding)."""
    from depthcraft.tasks.lib.clip import ffmpeg_exe

    r = subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", str(path), "-map", "0:v:0", "-c", "copy",
                        "-f", "framecrc", "-"], capture_output=True, text=True)
    tb = Fraction(r.stdout.split("#tb 0:")[1].split()[0])
    rows = [[int(x) for x in ln.split(",")[1:4]] for ln in r.stdout.splitlines() if ln[:1].isdigit()]
    return float((max(p + d for _, p, d in rows) - min(p for _, p, _ in rows)) * tb)


def test_a_variable_frame_rate_clip_stays_in_sync(tmp_path):
    # was: "converted to constant 18.113 fps": 64 frames evenly spaced, the 30 fps part lost 40 %
    # of its frames; now 30 fps, each source frame at its own time, the audio as it was
    src = vfr_clip(tmp_path / "vfra.mp4")
    r = ok(run_cli("stereo", src, "-o", tmp_path / "s.mp4", "--provider", "classic"))
    assert "variable frame rate" in r.stderr and "converted to constant 30.000 fps, 106 frames" in r.stderr
    out = next(tmp_path.glob("s*.mp4"))
    info = probe_clip(out)
    assert info.rate == 30 and info.frames == 106 and info.has_audio and not info.vfr
    # grey frames stay grey side by side: output frame k (at k / 30 s) shows the source frame on
    # screen then, within one frame (source frame 60 at 2.000 s was at 3.312 s)
    from depthcraft.tasks.lib.clip import read_frames

    got = shown(read_frames(out, info=info))
    assert all(abs(g - vfr_expected(k)) <= 1 for k, g in enumerate(got)), got
    assert abs(_duration(out) - _duration(src)) <= 1 / 30 + 1e-3
    r = ok(run_cli("estimate", src, "-o", tmp_path / "d.mp4", "--provider", "classic"))
    d = probe_clip(tmp_path / "d.mp4")
    assert d.rate == 30 and d.frames == 106 and d.has_audio
    assert abs(_duration(tmp_path / "d.mp4") - _duration(src)) <= 1 / 30 + 1e-3


def test_a_vfr_clip_whose_video_starts_late_keeps_its_audio_in_sync(tmp_path):
    # the video stream starts 0.3 s after the audio: output frame 0 is the first video frame, so
    # the audio is taken from 0.3 s (a beep at audio time 2.0 s, 0.3 s before source frame 60,
    # belongs at 1.7 s in the output, where frame 60 is at 2.0 s)
    import re

    from cliputil import FF

    beep = tmp_path / "beep.mkv"
    subprocess.run([FF, "-y", "-loglevel", "error", "-f", "lavfi", "-i",
                    "color=c=black:s=96x96:r=30,format=gray,geq=lum='16+2*N'", "-f", "lavfi", "-i",
                    "aevalsrc='if(between(t\\,2\\,2.1)\\,sin(2*PI*440*t)\\,0)'", "-t", "4", "-filter_complex",
                    "[0:v]select='lt(t\\,2)+not(mod(n\\,15))'[v]", "-map", "[v]", "-map", "1:a", "-fps_mode", "vfr",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "pcm_s16le", "-shortest", str(beep)], check=True)
    late = tmp_path / "late.mkv"
    subprocess.run([FF, "-y", "-loglevel", "error", "-itsoffset", "0.3", "-i", beep, "-i", beep, "-map", "0:v",
                    "-map", "1:a", "-c", "copy", str(late)], check=True)
    ok(run_cli("stereo", late, "-o", tmp_path / "s.mkv", "--provider", "classic"))
    out = next(tmp_path.glob("s*.mkv"))
    got = shown(read_frames_all(out))
    assert abs(got[60] - 60) <= 1 and abs(got[59] - 59) <= 1
    r = subprocess.run([FF, "-hide_banner", "-i", str(out), "-af", "silencedetect=n=-30dB:d=0.05", "-f", "null", "-"],
                       capture_output=True, text=True)
    beep_at = float(re.findall(r"silence_end: ([\d.]+)", r.stderr)[0])
    assert abs(beep_at - 1.7) < 0.03, r.stderr[-1500:]


def read_frames_all(path):
    from depthcraft.tasks.lib.clip import read_frames

    return read_frames(path)
