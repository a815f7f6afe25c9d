"""The parallax step: every motion, containers, frame counts and sizes, loops that close,
keyframes and easing, streaming with bounded memory."""

from __future__ import annotations

import math

import numpy as np
import pytest
import skimage.data as sd

from depthcraft.tasks.lib import camera as C
from depthcraft.tasks import parallax as P
from depthcraft.tasks.lib.depthio import write_npy
from depthcraft.tasks.lib.images import write_image
from depthcraft.tasks.lib.step import StepContext
from depthcraft.tasks.lib.store import Artifact, sha256_file
from depthcraft.tasks.lib.video import VideoWriter, ordered_map, probe


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("parallax")
    img = sd.coffee()[::3, ::3].copy()  # 134 x 200
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    near = (0.2 + 0.3 * yy / h).astype(np.float32)
    near[(xx - 100) ** 2 + (yy - 60) ** 2 < 30 ** 2] = 0.9
    return write_image(root / "photo.png", img), write_npy(root / "depth.npy", near), img.shape


def _ctx(tmp_path, files, progress=None):
    photo, depth, _ = files
    return StepContext(step_id="parallax", image_name="photo", source=Artifact(str(photo), sha256_file(photo), "image"),
                       workdir=tmp_path, given_depth=Artifact(str(depth), sha256_file(depth), "depth", {"kind": "relative_inverse"}),
                       progress=progress)


@pytest.mark.parametrize("motion", [m for m in C.MOTIONS if m != "keyframes"])
def test_every_motion_renders_a_decodable_video_with_the_right_frames(tmp_path, photo_files, motion):
    ticks = []
    outs = P.run(_ctx(tmp_path, photo_files, progress=lambda d, t: ticks.append((d, t))),
                 P.ParallaxParams(motion=motion, duration=0.5, fps=10, size="96x64", preset="ultrafast"))
    info = probe(outs["main"].path)
    assert (info["codec"], info["width"], info["height"], info["frames"]) == ("h264", 96, 64, 5)
    assert info["pix_fmt"] == "yuv420p"
    assert ticks[-1] == (5, 5) and len(ticks) == 5


def test_keyframes_with_easing(tmp_path, photo_files):
    keys = [C.Keyframe(t=0.0, x=-0.02), C.Keyframe(t=0.5, x=0.02, zoom=1.1, easing="linear"), C.Keyframe(t=1.0, dolly=0.2)]
    outs = P.run(_ctx(tmp_path, photo_files), P.ParallaxParams(motion="keyframes", keyframes=keys, loop=False,
                                                               duration=0.4, fps=10, size="96x64", preset="ultrafast"))
    assert probe(outs["main"].path)["frames"] == 4
    path = C.motion_path("keyframes", width=100, keyframes=keys, loop=False)
    assert path(0.0).x == pytest.approx(-2.0) and path(0.5).x == pytest.approx(2.0) and path(1.0).z == pytest.approx(0.2)
    assert path(0.25).x == pytest.approx(0.0, abs=1e-9)  # ease_in_out: half way at the middle
    assert path(0.75).zoom == pytest.approx(1.05)  # linear from 1.1 to 1.0


@pytest.mark.parametrize("motion", ["orbit", "circle", "swing", "swing_vertical", "dolly", "zoom", "ken_burns", "dolly_zoom"])
def test_loops_close(motion):
    path = C.motion_path(motion, width=1000, loop=True)
    a, b = path(0.0), path(1.0)
    for f in ("x", "y", "z", "zoom", "pan_x", "pan_y"):
        assert getattr(a, f) == pytest.approx(getattr(b, f), abs=1e-9)
    times = C.frame_times(10, loop=True)
    assert times[0] == 0 and times[-1] == pytest.approx(0.9)  # frame N would be frame 0 again
    assert C.frame_times(10, loop=False)[-1] == 1.0
    # and the motion really moves
    mid = path(0.25) if motion not in ("dolly", "zoom", "ken_burns", "dolly_zoom") else path(0.5)
    assert any(abs(getattr(mid, f) - getattr(a, f)) > 1e-3 for f in ("x", "y", "z", "zoom", "pan_x"))


def test_dolly_zoom_keeps_the_focus_plane_size():
    path = C.motion_path("dolly_zoom", width=1000, dolly=0.3, focus=0.6)
    p = path(0.5)
    assert p.z == pytest.approx(0.3)
    assert p.zoom / (1 - p.z * p.focus) == pytest.approx(1.0)


def test_loop_video_first_and_last_frames_are_neighbours(tmp_path, photo_files):
    """A seamless loop: the step from the last frame back to the first is like any other."""
    import cv2

    outs = P.run(_ctx(tmp_path, photo_files), P.ParallaxParams(motion="orbit", duration=1.0, fps=12, size="128x96",
                                                               crf=10, preset="ultrafast", intensity=0.05))
    cap = cv2.VideoCapture(str(outs["main"].path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f.astype(np.float32))
    assert len(frames) == 12
    steps = [np.abs(frames[i + 1] - frames[i]).mean() for i in range(11)]
    wrap = np.abs(frames[0] - frames[-1]).mean()
    assert wrap < 1.5 * max(steps) and min(steps) > 0


@pytest.mark.parametrize("container,codec", [("webm", "vp9"), ("gif", "gif")])
def test_other_containers(tmp_path, photo_files, container, codec):
    p = P.ParallaxParams(**P.params_for_output(f"out.{container}"), duration=0.3, fps=10, size="64x48")
    outs = P.run(_ctx(tmp_path, photo_files), p)
    assert outs["main"].path.suffix == f".{container}"
    info = probe(outs["main"].path)
    assert (info["codec"], info["width"], info["height"], info["frames"]) == (codec, 64, 48, 3)


def test_yuv444_supersampling_and_mask(tmp_path, photo_files):
    p = P.ParallaxParams(motion="swing", duration=0.3, fps=10, size="96x64", pix_fmt="yuv444p", supersample=2,
                         mask=True, preset="ultrafast", intensity=0.08)
    outs = P.run(_ctx(tmp_path, photo_files), p)
    assert probe(outs["main"].path)["pix_fmt"] == "yuv444p"
    m = probe(outs["mask"].path)
    assert (m["width"], m["height"], m["frames"]) == (96, 64, 3)
    assert outs["main"].meta["filled_share"] > 0


def test_size_defaults_to_the_photo_made_even_and_bad_sizes_are_named(photo_files):
    _, _, shape = photo_files
    assert P.output_size(P.ParallaxParams(), (135, 201, 3)) == (200, 134)
    assert P.output_size(P.ParallaxParams(size="1920x1080"), shape) == (1920, 1080)
    with pytest.raises(Exception, match="size"):
        P.ParallaxParams(size="big")
    with pytest.raises(Exception, match="even"):
        VideoWriter("/tmp/never.mp4", (101, 64), 10)
    with pytest.raises(Exception, match=r"\.mp4"):
        P.params_for_output("x.avi")


def _ffmpeg_convert(img: np.ndarray, pix_fmt: str) -> np.ndarray:
    """What ffmpeg's own rgb24 -> pix_fmt conversion (swscale) gives."""
    import subprocess

    from depthcraft.tasks.lib.video import ffmpeg_exe

    h, w = img.shape[:2]
    r = subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
                        "-i", "-", "-f", "rawvideo", "-pix_fmt", pix_fmt, "-"], input=img.tobytes(), capture_output=True,
                       check=True)
    return np.frombuffer(r.stdout, np.uint8)


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv444p"])
def test_frames_are_converted_as_ffmpeg_would(pix_fmt):
    """The writer pipes YUV made here; it must match ffmpeg's own conversion of RGB (BT.601,
    limited range; 4:2:0 chroma from 2x2 averages)."""
    import cv2

    from depthcraft.tasks.lib.video import FrameBuilder, to_input

    img = np.ascontiguousarray(sd.astronaut()[100:228, 60:252])  # 192 x 128
    ref = _ffmpeg_convert(img, pix_fmt).astype(int)
    ours = to_input(img, pix_fmt).ravel().astype(int)
    n = 192 * 128
    assert ours.size == ref.size
    assert np.abs(ours[:n] - ref[:n]).max() <= 1  # luma
    chroma = np.abs(ours[n:] - ref[n:])
    assert chroma.max() <= (1 if pix_fmt == "yuv444p" else 3) and chroma.mean() < 0.3
    # RGBA in, band by band (as the renderer hands frames over): the same bytes
    b = FrameBuilder((192, 128), pix_fmt)
    rgba = cv2.cvtColor(img, cv2.COLOR_RGB2RGBA)
    for y in range(0, 128, 32):
        b.put(slice(y, y + 32), rgba[y:y + 32])
    np.testing.assert_array_equal(b.data.ravel(), ours)


def test_writer_pipes_yuv_to_moviepys_writer(tmp_path):
    """moviepy's FFMPEG_VideoWriter (a subclass) gets yuv420p, not rgb24, and the decoded video
    shows the frames written."""
    import cv2
    from moviepy.video.io.ffmpeg_writer import FFMPEG_VideoWriter

    img = np.ascontiguousarray(sd.coffee()[::4, ::4][:100, :150])  # 150 x 100
    with VideoWriter(tmp_path / "v.mp4", (150, 100), 10, crf=0, preset="ultrafast") as w:
        assert isinstance(w._writer, FFMPEG_VideoWriter)
        cmd = w._writer.command
        inputs = cmd[:cmd.index("-i")]  # options before -i describe the piped frames
        assert inputs[inputs.index("-pix_fmt") + 1] == "yuv420p"
        for _ in range(3):
            w.write(img)
    cap = cv2.VideoCapture(str(tmp_path / "v.mp4"))
    ok, f = cap.read()
    assert ok
    err = np.abs(cv2.cvtColor(f, cv2.COLOR_BGR2RGB).astype(float) - img)
    assert err.mean() < 4.0  # lossless luma; chroma at half resolution


def test_4k_encodes_with_bounded_x264_buffers():
    """From 4K up, x264's lookahead and frame threads are bounded (its memory), and the
    benchmark's re-encode uses the same settings."""
    from depthcraft.tasks.lib.video import encoder_args, reencode_command

    _, _, small = encoder_args("mp4", size=(1920, 1080))
    _, _, big = encoder_args("mp4", size=(3840, 2160))
    assert "-x264-params" not in small and "-threads" not in small
    assert "rc-lookahead=10" in big[big.index("-x264-params") + 1] and big[big.index("-threads") + 1] == "2"
    cmd = reencode_command("a.mp4", "b.mp4", "mp4", size=(3840, 2160))
    assert all(x in cmd for x in big)


def test_frames_stream_with_a_bounded_number_in_flight():
    pulled = []

    def items():
        for i in range(50):
            pulled.append(i)
            yield i

    seen_ahead = []
    for i, r in enumerate(ordered_map(lambda x: x * 2, items(), workers=2, ahead=4)):
        assert r == 2 * i
        seen_ahead.append(len(pulled) - i)
    assert max(seen_ahead) <= 5  # never more than `ahead` frames rendered but not yet written


def test_overscan_covers_the_motion():
    poses = [C.motion_path("orbit", width=200, intensity=0.05)(t) for t in C.frame_times(8, True)]
    s = C.needed_overscan(poses, (200, 100))
    assert 1.0 < s < 1.3
    assert math.isclose(C.needed_overscan([C.Pose()], (200, 100)), 1.01)


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv444p"])
def test_frames_from_forked_workers_are_the_threads_frames(monkeypatch, pix_fmt):
    """`rendered_frames` on forked worker processes (Linux; 4:2:0 at the output size) and on
    threads gives the same bytes, mask and filled counts, in order."""
    from depthcraft.tasks.lib import forked
    from depthcraft.tasks.lib.viewsynth import ParallaxRenderer

    if not forked.available():
        pytest.skip("forked workers are Linux only")
    img = sd.coffee()[::2, ::2].copy()
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    near = (0.2 + 0.3 * yy / h).astype(np.float32)
    near[(xx - 150) ** 2 + (yy - 100) ** 2 < 50 ** 2] = 0.9
    size = (240, 160)
    poses = [C.motion_path("circle", width=size[0], intensity=0.06)(t) for t in C.frame_times(9, True)]
    r = ParallaxRenderer(img, near, size, overscan=C.needed_overscan(poses, size),
                         max_parallax=P.max_parallax(poses, size), edge_dilation=1, workers=1)

    calls = []
    real = P.forked_map

    def counted(*a, **k):
        calls.append(1)
        yield from real(*a, **k)

    monkeypatch.setattr(P, "forked_map", counted)

    def run(fork: str):
        monkeypatch.setenv("DEPTHCRAFT_FORK", fork)
        return [(f.data.copy(), m.data.copy(), n) for f, m, n in
                P.rendered_frames(r, poses, size, pix_fmt, workers=2, mask=True)]

    before = {c.pid for c in __import__("psutil").Process().children(recursive=True)}
    forks, threads = run("1"), run("0")
    assert len(calls) == (1 if pix_fmt == "yuv420p" else 0)  # 4:2:0 took the forked path, once
    assert len(forks) == len(threads) == 9
    assert sum(n for _, _, n in forks) > 0  # the motion reveals background
    for (f1, m1, n1), (f2, m2, n2) in zip(forks, threads):
        np.testing.assert_array_equal(f1, f2)
        np.testing.assert_array_equal(m1, m2)
        assert n1 == n2
    assert not [c for c in __import__("psutil").Process().children(recursive=True)
                if c.pid not in before and c.status() != "zombie"]  # the workers are gone


_IMPORT_RACE = """
import os, sys, tempfile, threading
from depthcraft.tasks.lib import video
d = tempfile.mkdtemp()
barrier = threading.Barrier(6)
errors = []

def go(i):
    barrier.wait()
    try:
        if i % 2:
            video.ffmpeg_exe()
        else:
            w = video.raw_frame_writer(os.path.join(d, f"{i}.mp4"), (16, 16), 10, input_pix_fmt="yuv420p",
                                       ffmpeg_params=["-pix_fmt", "yuv420p"])
            w.write_frame(bytes(16 * 16 * 3 // 2))
            w.close()
    except Exception as e:
        errors.append(repr(e))

threads = [threading.Thread(target=go, args=(i,)) for i in range(6)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(errors or "ok")
"""


def test_first_video_writers_on_parallel_threads_import_moviepy_safely():
    """Steps on parallel threads each open their first video: moviepy's modules import each
    other, and two first imports at once failed with "deadlock detected by
    _ModuleLock('moviepy.video.io')" (in 8 of 8 fresh interpreters before the import lock)."""
    import subprocess
    import sys

    for _ in range(3):  # each in a fresh interpreter: only the first import races
        r = subprocess.run([sys.executable, "-c", _IMPORT_RACE], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr[-2000:]


def test_an_encoder_that_dies_is_one_line_naming_the_video(tmp_path):
    """ffmpeg killed while frames are written: one EncoderError line naming the file and the
    signal (it was three chained tracebacks ending in a broken pipe)."""
    from depthcraft.tasks.lib.errors import EncoderError

    frame = np.zeros((64, 64, 3), np.uint8)
    w = VideoWriter(tmp_path / "clip.mp4", (64, 64), 10, "mp4", queue_frames=1)
    w.write(frame)
    w._writer.proc.kill()
    with pytest.raises(EncoderError) as info:
        for _ in range(200):  # until the feeding thread meets the dead pipe
            w.write(frame)
        w.close()
    msg = str(info.value)
    assert "\n" not in msg and "clip.mp4" in msg and "killed by signal 9" in msg, msg


def test_webm_files_are_reproducible(tmp_path):
    """The same frames give the same WebM bytes (no random segment id or date in the header)."""
    img = sd.coffee()[:64, :96].copy()
    for name in ("a.webm", "b.webm"):
        with VideoWriter(tmp_path / name, (96, 64), 10, "webm") as w:
            for i in range(5):
                w.write(np.roll(img, 3 * i, axis=1))
    assert (tmp_path / "a.webm").read_bytes() == (tmp_path / "b.webm").read_bytes()


def test_frames_fall_back_to_threads_when_fork_is_refused(monkeypatch):
    """No worker processes can start: the frames render on threads, the same frames, and the
    user is told in one notice."""
    import errno
    import os

    from depthcraft.tasks.lib import forked, notices
    from depthcraft.tasks.lib.viewsynth import ParallaxRenderer

    if not forked.available():
        pytest.skip("forked workers are Linux only")
    img = sd.coffee()[::4, ::4].copy()
    near = np.full(img.shape[:2], 0.3, np.float32)
    near[40:90, 60:120] = 0.9
    size = (120, 80)
    poses = [C.motion_path("orbit", width=size[0], intensity=0.05)(t) for t in C.frame_times(4, True)]
    r = ParallaxRenderer(img, near, size, overscan=C.needed_overscan(poses, size),
                         max_parallax=P.max_parallax(poses, size), workers=1)
    monkeypatch.setenv("DEPTHCRAFT_FORK", "0")
    want = [f.data.copy() for f, _, _ in P.rendered_frames(r, poses, size, "yuv420p", workers=2)]
    monkeypatch.setenv("DEPTHCRAFT_FORK", "1")

    def refuse():
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", refuse)
    said = []
    notices.set_sink(said.append)
    try:
        got = [f.data.copy() for f, _, _ in P.rendered_frames(r, poses, size, "yuv420p", workers=2)]
    finally:
        notices.set_sink(None)
    assert len(got) == 4 and all((a == b).all() for a, b in zip(got, want))
    assert len(said) == 1 and "rendering on threads" in said[0] and "Resource temporarily unavailable" in said[0]
