"""Clips in and out (tasks/lib/clip.py): probe, exact frame ranges, rates, rotation, odd sizes,
audio, GIF/WebP, concatenation, and one clear line for every bad input."""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from cliputil import FF, frame_index, make_animation, make_clip, shown, vfr_clip, vfr_expected
from depthcraft.tasks.lib.clip import (FfmpegWriter, FolderWriter, VIDEO_SUFFIXES, concat_files, count_frames,
                                       is_clip, mux_audio, probe_clip, read_depth_frames, read_frames)
from depthcraft.tasks.lib.errors import InputError


@pytest.mark.parametrize("rate", ["30000/1001", "24000/1001", "25"])
def test_probe_rate_and_exact_ranges(tmp_path, rate):
    p = make_clip(tmp_path / "c.mp4", n=40, size=(96, 64), rate=rate)
    info = probe_clip(p)
    assert info.frames == 40 and info.rate == Fraction(rate) and not info.vfr
    assert info.has_audio and (info.width, info.height) == (96, 64)
    for start in (0, 1, 17, 31, 36):
        got = [frame_index(f) for f in read_frames(p, start, start + 4, info=info)]
        assert got == [(i % 16) for i in range(start, start + 4)], (start, got)
    assert len(list(read_frames(p, 30, None, info=info))) == 10


def test_rotation_is_applied(tmp_path):
    p = make_clip(tmp_path / "r.mp4", n=6, size=(96, 64), rotation=90)
    info = probe_clip(p)
    assert info.rotation == 90 and (info.width, info.height) == (64, 96)
    f = next(read_frames(p, 0, 1, info=info))
    assert f.shape == (96, 64, 3)


def test_odd_size_decodes_and_encodes_padded(tmp_path):
    p = make_clip(tmp_path / "odd.mp4", n=5, size=(97, 65))
    info = probe_clip(p)
    frames = list(read_frames(p, info=info))
    assert len(frames) == 5 and frames[0].shape == (65, 97, 3)
    with FfmpegWriter(tmp_path / "o.mp4", "rgb", (97, 65), info.rate) as w:
        for f in frames:
            w.write(f)
    out = probe_clip(tmp_path / "o.mp4")
    assert (out.width, out.height) == (98, 66) and out.frames == 5 and out.rate == info.rate


def test_writers_keep_rate_and_count_and_16_bits(tmp_path):
    rate = Fraction(24000, 1001)
    ramp = np.tile(np.linspace(0, 1, 80, dtype=np.float32), (48, 1))
    with FfmpegWriter(tmp_path / "d.mkv", "depth16", (80, 48), rate) as w:
        for k in range(7):
            w.write(ramp * (k + 1) / 8)
    info = probe_clip(tmp_path / "d.mkv")
    assert info.frames == 7 and info.rate == rate and info.codec == "ffv1" and info.bit_depth == 16
    back = list(read_depth_frames(tmp_path / "d.mkv"))
    assert len(back) == 7 and np.abs(back[3] - ramp * 4 / 8).max() < 1.0 / 65535 + 1e-6
    with FfmpegWriter(tmp_path / "d.mp4", "depth8", (80, 48), rate) as w:
        for k in range(7):
            w.write(ramp)
    assert count_frames(tmp_path / "d.mp4") == 7 and probe_clip(tmp_path / "d.mp4").rate == rate
    fw = FolderWriter(tmp_path / "pngs", "png16", start_index=98)
    for k in range(3):
        fw.write(ramp)
    assert [f.name for f in sorted((tmp_path / "pngs").iterdir())] == ["000098.png", "000099.png", "000100.png"]


def test_audio_is_muxed_copy_or_reencoded(tmp_path):
    src = make_clip(tmp_path / "a.mp4", n=12, size=(64, 64))
    info = probe_clip(src)
    for suffix in (".mp4", ".mkv", ".webm"):
        with FfmpegWriter(tmp_path / f"v{suffix}", "rgb", (64, 64), info.rate) as w:
            for f in read_frames(src, info=info):
                w.write(f)
        out = mux_audio(tmp_path / f"v{suffix}", src, tmp_path / f"final{suffix}", info=info)
        o = probe_clip(out)
        assert o.has_audio and o.frames == 12, suffix
        assert o.audio_codec == ("opus" if suffix == ".webm" else "aac")


def _segments(src, info, bounds, suffix) -> list:
    """The clip ``src`` written as one file per ``[a, b)`` of ``bounds`` (RGB, ``suffix``)."""
    parts = []
    for a, b in bounds:
        with FfmpegWriter(src.parent / f"p{a}{suffix}", "rgb", (info.width, info.height), info.rate) as w:
            for f in read_frames(src, a, b, info=info):
                w.write(f)
        parts.append(src.parent / f"p{a}{suffix}")
    return parts


def test_concat_without_reencode(tmp_path):
    src = make_clip(tmp_path / "a.mp4", n=30, size=(64, 48), audio=False)
    info = probe_clip(src)
    out = concat_files(_segments(src, info, ((0, 10), (10, 22), (22, 30)), ".mp4"), tmp_path / "all.mp4")
    o = probe_clip(out)
    assert o.frames == 30 and o.rate == info.rate
    assert [frame_index(f) for f in read_frames(out, 8, 13, info=o)] == [8, 9, 10, 11, 12]


def test_gif_segments_join_with_every_frame_and_depth_gifs_are_gray(tmp_path):
    """A recipe's GIF output (clip_output: gif) is joined from segment GIFs: a stream copy kept
    only the first segment's frames (18 of 72). And a depth GIF's float frames were piped as RGB
    bytes (4/3 as many frames of noise)."""
    from PIL import Image

    src = make_clip(tmp_path / "a.mp4", n=20, size=(64, 48), audio=False, rate="10")
    info = probe_clip(src)
    out = concat_files(_segments(src, info, ((0, 7), (7, 15), (15, 20)), ".gif"), tmp_path / "all.gif")
    with Image.open(out) as im:
        assert im.n_frames == 20
        got = []
        for i in (6, 7, 8, 15, 19):  # both sides of each join, in order
            im.seek(i)
            got.append(frame_index(np.asarray(im.convert("RGB"))))
    assert got == [6, 7, 8, 15, 3]  # (indices modulo 16)
    ramp = np.tile(np.linspace(0.0, 1.0, 64, dtype=np.float32), (48, 1))
    with FfmpegWriter(tmp_path / "d.gif", "depth8", (64, 48), Fraction(10)) as w:
        for _ in range(5):
            w.write(ramp)
    with Image.open(tmp_path / "d.gif") as im:
        assert im.n_frames == 5
        g = np.asarray(im.convert("RGB")).astype(np.float32)
    assert np.abs(g[..., 0] - g[..., 2]).max() <= 1 and np.abs(g[..., 0] - ramp * 255).mean() < 6


def test_gif_and_webp_are_clips(tmp_path):
    for suffix in (".gif", ".webp"):
        a = make_animation(tmp_path / f"a{suffix}", n=6)
        assert is_clip(a)
        info = probe_clip(a)
        assert info.frames == 6 and info.rate == 10
        assert len(list(read_frames(a, 2, 6, info=info))) == 4
    from PIL import Image

    Image.new("RGB", (80, 80)).save(tmp_path / "still.gif")
    assert not is_clip(tmp_path / "still.gif")
    assert {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".gif", ".webp"} <= VIDEO_SUFFIXES


def test_animated_gif_is_not_cut_to_a_photo(tmp_path):
    from depthcraft.tasks.lib.images import read_image

    a = make_animation(tmp_path / "a.gif", n=6)
    with pytest.raises(InputError, match="animated"):
        read_image(a)


def _bad(tmp_path, name):
    src = make_clip(tmp_path / "good.mp4", n=20, size=(64, 64))
    p = tmp_path / name
    if name == "truncated.mp4":
        data = src.read_bytes()
        subprocess.run([FF, "-y", "-loglevel", "error", "-i", str(src), "-c", "copy", str(tmp_path / "slow.mp4")], check=True)
        p.write_bytes((tmp_path / "slow.mp4").read_bytes()[: len(data) // 2])  # no faststart: moov at the end
    elif name == "audio_only.m4a":
        subprocess.run([FF, "-y", "-loglevel", "error", "-f", "lavfi", "-t", "1", "-i", "sine", "-c:a", "aac", str(p)],
                       check=True)
    elif name == "zero.mkv":
        # the header and the start of the first cluster: a video stream, no frame in it
        subprocess.run([FF, "-y", "-loglevel", "error", "-i", str(src), "-c", "copy", str(tmp_path / "g.mkv")], check=True)
        d = (tmp_path / "g.mkv").read_bytes()
        p.write_bytes(d[:d.find(bytes.fromhex("1F43B675")) + 12])
    elif name == "unknown.avi":
        # an AVI whose video FourCC no decoder knows (patched in the header)
        subprocess.run([FF, "-y", "-loglevel", "error", "-i", str(src), "-an", "-c", "copy", str(tmp_path / "h.avi")],
                       check=True)
        d = bytearray((tmp_path / "h.avi").read_bytes())
        head = bytes(d[:4096]).replace(b"H264", b"XQZV").replace(b"h264", b"XQZV").replace(b"avc1", b"XQZV")
        p.write_bytes(head + bytes(d[4096:]))
    elif name == "tenbit_hdr.mp4":
        subprocess.run([FF, "-y", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=64x64", "-frames:v", "3",
                        "-vf", "setparams=color_trc=smpte2084:color_primaries=bt2020:colorspace=bt2020nc",
                        "-c:v", "libx264", "-pix_fmt", "yuv420p10le", str(p)], check=True)
    elif name == "notvideo.mp4":
        p.write_text("hello")
    return p


@pytest.mark.parametrize("name, words", [
    ("truncated.mp4", "no index"), ("audio_only.m4a", "no video stream"), ("zero.mkv", "no frames"),
    ("unknown.avi", "unsupported video codec"), ("tenbit_hdr.mp4", "HDR"), ("notvideo.mp4", "not a video"),
])
def test_bad_input_is_one_line_naming_the_file(tmp_path, name, words):
    p = _bad(tmp_path, name)
    with pytest.raises(InputError) as e:
        probe_clip(p)
    msg = str(e.value)
    assert str(p) in msg and words in msg and "\n" not in msg


def test_pixel_limit_refuses_or_downscales(tmp_path):
    p = make_clip(tmp_path / "big.mp4", n=3, size=(128, 96))
    with pytest.raises(InputError, match="over the limit"):
        probe_clip(p, max_pixels=5000)
    info = probe_clip(p, max_pixels=5000, downscale=True)
    f = next(read_frames(p, 0, 1, info=info))
    assert f.shape[0] * f.shape[1] <= 5000 and f.shape[:2] == (info.size[1], info.size[0])


def test_ten_bit_sdr_is_converted_with_a_notice(tmp_path, caplog):
    p = tmp_path / "ten.mkv"
    subprocess.run([FF, "-y", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=64x64", "-frames:v", "3",
                    "-c:v", "ffv1", "-pix_fmt", "yuv420p10le", str(p)], check=True)
    info = probe_clip(p)
    assert info.bit_depth == 10 and any("10-bit" in n for n in info.notices)
    assert next(read_frames(p, 0, 1, info=info)).dtype == np.uint8


def test_variable_frame_rate_is_converted_with_a_notice(tmp_path):
    p = tmp_path / "vfr.mp4"
    # 15 frames at 30 fps, then 15 at 15 fps: 1.5 s
    subprocess.run([FF, "-y", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=30", "-frames:v", "30",
                    "-vf", "setpts='(N+if(gte(N,15),N-15,0))/30/TB'", "-fps_mode", "vfr", "-c:v", "libx264",
                    "-preset", "ultrafast", str(p)], check=True)
    info = probe_clip(p)
    assert info.vfr and any("variable frame rate" in n and "30.000 fps, 44 frames" in n for n in info.notices)
    # the rate of its 30 fps stretch (no frame of it dropped), frames for its 1.467 s (the last
    # frame lasts its packet's 1/30 s)
    assert info.rate == 30 and info.frames == 44
    assert len(list(read_frames(p, info=info))) == 44 and len(list(read_frames(p, 10, 20, info=info))) == 10


def test_variable_frame_rate_keeps_every_frame_at_its_time_in_any_segment(tmp_path):
    # was: converted at the mean rate (18.113 fps, 64 frames), dropping 40 % of the 30 fps part
    p = vfr_clip(tmp_path / "vfr.mp4", audio=False)
    info = probe_clip(p)
    assert info.vfr and info.rate == 30 and info.frames == 106  # 3.533 s at 30 fps
    full = shown(read_frames(p, info=info))
    assert len(full) == 106
    # each output frame k shows the source frame on screen at k / 30 s (the grey read back is
    # within a level or two, so within one source frame; the kept ones are 15 apart)
    assert all(abs(got - vfr_expected(k)) <= 1 for k, got in enumerate(full)), full
    assert abs(full[59] - 59) <= 1 and abs(full[60] - 60) <= 1 and abs(full[74] - 60) <= 1 and abs(full[75] - 75) <= 1
    # any segment decodes exactly what the whole clip does there (seeks between source frames)
    for a, b in [(1, 5), (30, 61), (59, 62), (61, 80), (74, 76), (90, 106), (105, 106)]:
        assert shown(read_frames(p, a, b, info=info)) == full[a:b], (a, b)


def test_an_animation_of_unequal_durations_keeps_each_frame_for_its_own_time(tmp_path):
    # was: every frame taken for the most common duration (a 0.5 s frame shown 0.1 s: 1.0 s -> 0.6 s)
    from PIL import Image

    fr = [Image.fromarray(np.full((64, 80, 3), 16 + 20 * i, np.uint8)) for i in range(6)]
    p = tmp_path / "u.gif"
    fr[0].save(p, save_all=True, append_images=fr[1:], duration=[100, 100, 500, 100, 100, 100], loop=0)
    info = probe_clip(p)
    assert info.rate == 10 and info.frames == 10 and any("unequal duration" in n and "10 frames" in n for n in info.notices)
    grey = [int(round((float(f.mean()) - 16) / 20)) for f in read_frames(p, info=info)]
    assert grey == [0, 1, 2, 2, 2, 2, 2, 3, 4, 5]
    assert [int(round((float(f.mean()) - 16) / 20)) for f in read_frames(p, 3, 9, info=info)] == grey[3:9]
    # durations one GIF tick apart are a constant rate's rounding: one frame per frame, 29.97 fps
    # (the most common duration, 30 ms, made it 33.3 fps)
    q = tmp_path / "j.gif"
    fr[0].save(q, save_all=True, append_images=fr[1:] * 2 + fr[1:4], duration=[30, 40, 30] * 4 + [30, 40], loop=0)
    j = probe_clip(q)
    assert j.frames == 14 and j.rate == Fraction(30000, 1001) and j.source_pts is None
