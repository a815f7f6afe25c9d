"""Streaming video encoding: frames go to ffmpeg (through moviepy 2's ``FFMPEG_VideoWriter``,
in a subclass that pipes YUV rather than RGB) while later frames render; the video is never held
in memory.

Containers: ``mp4`` (H.264, libx264: CRF, preset, yuv420p or yuv444p), ``webm`` (VP9, libvpx-vp9,
constant quality), ``gif`` (one palette for the whole clip, Bayer dither). ffmpeg is the one
imageio-ffmpeg ships (moviepy's default).
"""

from __future__ import annotations

import functools
import queue
import threading
from collections import deque
from dataclasses import dataclass
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator, Literal

import cv2
import numpy as np

from .errors import EncoderError, ParameterError

Container = Literal["mp4", "webm", "gif"]
CONTAINERS = ("mp4", "webm", "gif")
PixelFormat = Literal["yuv420p", "yuv444p"]


# The first import of moviepy from two threads at once can fail: its modules import each other,
# and Python reports "deadlock detected by _ModuleLock('moviepy.video.io')" to one of them
# (steps run on parallel threads). Every import of it here holds this lock.
_IMPORT_LOCK = threading.RLock()


def ffmpeg_exe() -> str:
    with _IMPORT_LOCK:
        from moviepy.config import FFMPEG_BINARY

    return FFMPEG_BINARY


# x264 at 4K: its lookahead (40 frames at preset medium) and frame threads hold ~1.8 GB of
# frames. From 7 MP up: 10 frames of lookahead, 2 frame threads, no separate lookahead buffer
# (measured at 3840x2160, preset medium, CRF 18: 1.79 -> 0.87 GB, 0.4 dB lower PSNR at an 11%
# smaller file; see docs/rendering.md).
BIG_FRAME_PIXELS = 7_000_000
BIG_FRAME_X264 = ["-threads", "2", "-x264-params", "rc-lookahead=10:sync-lookahead=0"]


def encoder_args(container: str, *, crf: int = 18, preset: str = "medium", pix_fmt: str = "yuv420p",
                 size: tuple[int, int] | None = None) -> tuple[str, str, list[str]]:
    """``(codec, preset, extra ffmpeg arguments)`` for a container; ``size`` (WxH) picks
    lighter x264 buffering for frames of 4K and more (``BIG_FRAME_X264``)."""
    if container == "mp4":
        extra = ["-crf", str(int(crf)), "-pix_fmt", pix_fmt]
        if size is not None and size[0] * size[1] >= BIG_FRAME_PIXELS:
            extra += BIG_FRAME_X264
        return "libx264", preset, extra + ["-movflags", "+faststart"]
    if container == "webm":
        # VP9 constant quality: CRF with zero target bitrate; row threading for speed
        # (+bitexact: no random segment id or date in the header, so equal frames give equal files)
        return "libvpx-vp9", preset, ["-crf", str(int(crf) + 13), "-b:v", "0", "-pix_fmt", "yuv420p",
                                      "-row-mt", "1", "-deadline", "good", "-cpu-used", "4", "-fflags", "+bitexact"]
    if container == "gif":
        return "gif", preset, ["-vf", "split[a][b];[a]palettegen=stats_mode=diff[p];[b][p]paletteuse=dither=bayer:bayer_scale=3",
                               "-loop", "0"]
    raise ParameterError(f"unknown container {container!r}; mp4, webm or gif", parameter="container")


def input_pix_fmt(container: str, pix_fmt: str = "yuv420p") -> str:
    """The raw format frames are piped in: what the encoder wants (no conversion inside ffmpeg),
    except for GIF, whose palette is built from RGB."""
    if container == "gif":
        return "rgb24"
    return pix_fmt if container == "mp4" else "yuv420p"


def reencode_command(src: str | Path, dst: str | Path, container: str, *, crf: int = 18, preset: str = "medium",
                     pix_fmt: str = "yuv420p", size: tuple[int, int] | None = None) -> list[str]:
    """The plain ffmpeg command that re-encodes ``src`` with the same settings (the benchmark's
    floor: what the encoder alone costs); ``size`` as for :func:`encoder_args`."""
    codec, preset, extra = encoder_args(container, crf=crf, preset=preset, pix_fmt=pix_fmt, size=size)
    cmd = [ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(src), "-an", "-vcodec", codec]
    if container != "gif":
        cmd += ["-preset", preset]
    return cmd + extra + [str(dst)]


# BT.601 limited range ("TV" levels), what ffmpeg's swscale uses for rgb24 -> yuv420p/yuv444p
# by default and what OpenCV's RGB -> YUV_I420 computes; rows Y, U, V; last column the offset.
_RGB2YUV601 = np.array([[65.481, 128.553, 24.966, 16.0 * 255.0],
                        [-37.797, -74.203, 112.0, 128.0 * 255.0],
                        [112.0, -93.786, -18.214, 128.0 * 255.0]], np.float32) / np.float32(255.0)


class FrameBuilder:
    """One frame in an encoder input format (``yuv420p``: I420 planes; ``yuv444p``: three full
    planes; ``rgb24``), filled band by band from uint8 RGB or RGBA rows, so that a renderer can
    hand over each band as it finishes and no full RGB frame is ever held.

    Colours: BT.601 limited range, what ffmpeg's swscale uses by default for rgb24 input. Luma is
    OpenCV's I420 conversion; its chroma takes one pixel of each 2x2 block (aliasing on fine
    detail), so 4:2:0 chroma is computed from the 2x2 averages instead (centred, as swscale's).
    """

    def __init__(self, size: tuple[int, int], pix_fmt: str, data: np.ndarray | None = None):
        w, h = int(size[0]), int(size[1])
        self.size, self.pix_fmt = (w, h), pix_fmt
        # (Y', Cb, Cr) views of an even-sized yuv420p frame, for a renderer that writes the
        # planes itself (ParallaxRenderer.render(planes=...)); None for other formats
        self.planes: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        if pix_fmt == "yuv420p":
            # ``data``: a buffer to build in (uint8 ``H*3/2 x W``, e.g. shared memory)
            self.data = np.empty((h * 3 // 2, w), np.uint8) if data is None else data
            q = (h // 2) * (w // 2)
            flat = self.data.reshape(-1)
            self._u = flat[h * w:h * w + q].reshape(h // 2, w // 2)
            self._v = flat[h * w + q:h * w + 2 * q].reshape(h // 2, w // 2)
            if w % 2 == 0 and h % 2 == 0:
                self.planes = (self.data[:h], self._u, self._v)
        elif pix_fmt == "yuv444p":
            self.data = np.empty((3, h, w), np.uint8)
        elif pix_fmt == "rgb24":
            self.data = np.empty((h, w, 3), np.uint8)
        else:
            raise ParameterError(f"cannot feed {pix_fmt!r} to the encoder", parameter="pix_fmt")

    def put(self, rows: slice, band: np.ndarray) -> None:
        """Rows ``rows`` of the frame (uint8 RGB or RGBA; for yuv420p ``rows`` starts on an even
        row and spans an even number, but the frame's last)."""
        w, h = self.size
        f = band
        if self.pix_fmt == "yuv420p":
            n = f.shape[0]
            i420 = cv2.cvtColor(f, cv2.COLOR_RGBA2YUV_I420 if f.shape[2] == 4 else cv2.COLOR_RGB2YUV_I420)
            self.data[rows] = i420[:n]
            half = cv2.resize(f, (w // 2, n // 2), interpolation=cv2.INTER_AREA)
            if half.shape[2] == 4:
                half = cv2.cvtColor(half, cv2.COLOR_RGBA2RGB)
            yuv = cv2.transform(half, _RGB2YUV601)  # (3x4 has OpenCV's fast path, 2x4 not)
            crow = slice(rows.start // 2, rows.start // 2 + n // 2)
            cv2.extractChannel(yuv, 1, dst=self._u[crow])  # straight into the planes
            cv2.extractChannel(yuv, 2, dst=self._v[crow])
            return
        if f.shape[2] == 4:
            f = cv2.cvtColor(f, cv2.COLOR_RGBA2RGB)
        if self.pix_fmt == "yuv444p":
            yuv = cv2.transform(f, _RGB2YUV601)  # rounds and saturates to uint8
            for i in range(3):  # planar (cv2.split is several times slower at 1080p)
                cv2.extractChannel(yuv, i, dst=self.data[i, rows])
        else:
            self.data[rows] = f


def to_input(frame: np.ndarray, pix_fmt: str) -> np.ndarray:
    """A frame (uint8 RGB ``H x W x 3``, RGBA ``H x W x 4``, or grey/bool ``H x W``) as the raw
    bytes of ``pix_fmt`` (see :class:`FrameBuilder`)."""
    f = np.asarray(frame)
    if f.dtype == bool:
        f = f.view(np.uint8) * np.uint8(255)
    if f.ndim == 2:
        f = cv2.cvtColor(f, cv2.COLOR_GRAY2RGB)
    b = FrameBuilder((f.shape[1], f.shape[0]), pix_fmt)
    b.put(slice(0, f.shape[0]), f)
    return b.data


def raw_frame_writer(filename: str, size: tuple[int, int], fps: float, *, codec: str = "libx264",
                     preset: str = "medium", input_pix_fmt: str = "rgb24", ffmpeg_params: list[str] | None = None):
    """A :class:`RawFrameWriter` (moviepy is imported here, when a video is written, not when
    this module is: every CLI command imports it, and moviepy takes ~0.2 s to import)."""
    with _IMPORT_LOCK:
        cls = _raw_frame_writer_class()
    return cls(filename, size, fps, codec=codec, preset=preset, input_pix_fmt=input_pix_fmt,
               ffmpeg_params=ffmpeg_params)


@functools.cache
def _raw_frame_writer_class():
    import subprocess as sp

    from moviepy.tools import cross_platform_popen_params, ffmpeg_escape_filename
    from moviepy.video.io.ffmpeg_writer import FFMPEG_VideoWriter

    class RawFrameWriter(FFMPEG_VideoWriter):
        """moviepy 2's ``FFMPEG_VideoWriter`` (the ffmpeg of imageio-ffmpeg), told that its input
        is ``input_pix_fmt`` rather than ``rgb24``.

        moviepy builds a fixed command in which the input is always ``rgb24``, so ffmpeg
        converts every frame to YUV with swscale, on one thread, ahead of the encoder. Frames
        converted before the pipe (:func:`to_input`, OpenCV: under 2 ms per 1080p frame) halve
        the bytes through it and take that conversion off ffmpeg's critical path (120 frames at
        1080p, preset medium: ffmpeg's CPU 10.0 -> 8.5 s). The command has moviepy's options in
        moviepy's order, but the input pixel format; ``write_frame`` writes a view of the frame
        rather than a ``tobytes()`` copy; ``close`` and error reporting are moviepy's.
        """

        def __init__(self, filename, size, fps, *, codec, preset, input_pix_fmt, ffmpeg_params):
            # the attributes moviepy's write_frame / close use
            self.logfile = sp.PIPE
            self.filename = filename
            self.codec = codec
            self.audio_codec = None
            self.ext = filename.split(".")[-1]
            self.command = [ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-vcodec", "rawvideo",
                            "-s", "%dx%d" % (size[0], size[1]), "-pix_fmt", input_pix_fmt, "-r", "%.02f" % fps,
                            "-an", "-i", "-", "-vcodec", codec, "-preset", preset, *(ffmpeg_params or []),
                            ffmpeg_escape_filename(filename)]
            self.proc = sp.Popen(self.command, **cross_platform_popen_params(
                {"stdout": sp.DEVNULL, "stderr": self.logfile, "stdin": sp.PIPE}))
            try:  # a 1 MB pipe (Linux; 64 KB by default): a frame crosses in a few writes
                import fcntl

                fcntl.fcntl(self.proc.stdin.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
            except (ImportError, OSError):
                pass

        def write_frame(self, img_array):
            """moviepy's, without its ``tobytes()`` copy of every frame (a buffer view is
            written); on a pipe error moviepy's own method reports what ffmpeg said."""
            try:
                self.proc.stdin.write(memoryview(np.ascontiguousarray(img_array)).cast("B"))
            except OSError:
                super().write_frame(img_array)

    return RawFrameWriter


@dataclass
class Prepared:
    """A frame already in the encoder's input format (:meth:`VideoWriter.prepare`)."""

    data: np.ndarray


class VideoWriter:
    """Write frames one by one (uint8 RGB ``H x W x 3``, RGBA, or grey ``H x W``); a context
    manager.

    A background thread feeds ffmpeg from a short queue, so the caller's next frame renders
    while ffmpeg reads and encodes the previous ones. :meth:`prepare` converts a frame to the
    encoder's input format; callers that render on several threads call it there, and write
    the result.
    """

    def __init__(self, path: str | Path, size: tuple[int, int], fps: float, container: str = "mp4", *,
                 crf: int = 18, preset: str = "medium", pix_fmt: str = "yuv420p", queue_frames: int = 4):
        w, h = int(size[0]), int(size[1])
        if container in ("mp4", "webm") and pix_fmt == "yuv420p" and (w % 2 or h % 2):
            raise ParameterError(f"{w}x{h}: yuv420p video needs even width and height", parameter="size")
        codec, preset, extra = encoder_args(container, crf=crf, preset=preset, pix_fmt=pix_fmt, size=(w, h))
        if container == "gif":
            preset = "medium"  # the command always passes -preset; the gif encoder ignores it
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.size = (w, h)
        self.frames = 0
        self.input_pix_fmt = input_pix_fmt(container, pix_fmt)
        self._writer = raw_frame_writer(str(self.path), (w, h), fps, codec=codec, preset=preset,
                                        input_pix_fmt=self.input_pix_fmt, ffmpeg_params=extra)
        self._q: queue.Queue = queue.Queue(maxsize=queue_frames)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._feed, daemon=True)
        self._thread.start()

    def _feed(self) -> None:
        while True:
            frame = self._q.get()
            if frame is None:
                return
            if self._error is None:
                try:
                    self._writer.write_frame(frame)
                except BaseException as e:  # noqa: BLE001 - reported by write/close
                    self._error = self._encoder_error(e)

    def _encoder_error(self, e: BaseException) -> BaseException:
        """What the user is told when ffmpeg fails: one line naming the video and ffmpeg's own
        last words, or the signal that stopped it (moviepy's message spans lines and names the
        temporary file)."""
        if not isinstance(e, OSError) and "MoviePy" not in str(e):
            return e
        proc = getattr(self._writer, "proc", None)
        why = ""
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except Exception:  # noqa: BLE001 - still running: say what we know
                pass
            code = proc.returncode
            if code is not None and code < 0:
                why = f"ffmpeg was killed by signal {-code}"
            elif proc.stderr is not None:
                try:
                    lines = [ln.strip() for ln in proc.stderr.read().decode("utf-8", "replace").splitlines() if ln.strip()]
                except (OSError, ValueError):
                    lines = []
                if lines:
                    why = f"ffmpeg: {lines[-1]}"
        if not why:  # moviepy's message ends with what ffmpeg said
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            why = (lines[-1] if "MoviePy" in str(e) else lines[0]) if lines else type(e).__name__
        return EncoderError(f"{self.path.name}: the encoder stopped while writing the video ({why})")

    def prepare(self, frame: np.ndarray) -> Prepared:
        """``frame`` in the encoder's input format (thread-safe: call it where frames render)."""
        if frame.shape[:2] != (self.size[1], self.size[0]):
            raise ParameterError(f"frame is {frame.shape[1]}x{frame.shape[0]}, the video {self.size[0]}x{self.size[1]}",
                                 parameter="size")
        return Prepared(to_input(frame, self.input_pix_fmt))

    def builder(self) -> FrameBuilder:
        """An empty frame in the encoder's input format, to fill band by band on a render
        thread and then :meth:`write`."""
        return FrameBuilder(self.size, self.input_pix_fmt)

    def write(self, frame: np.ndarray | Prepared | FrameBuilder) -> None:
        """Queue a frame: an image (converted here), or one from :meth:`prepare` / :meth:`builder`."""
        if self._error is not None:
            raise self._error
        if not isinstance(frame, (Prepared, FrameBuilder)):
            frame = self.prepare(frame)
        self._q.put(frame.data)
        self.frames += 1

    def close(self) -> None:
        self._q.put(None)
        self._thread.join()
        try:
            self._writer.close()
        except (OSError, ValueError) as e:  # ffmpeg gone: a broken pipe as stdin closes
            if self._error is None:
                self._error = self._encoder_error(e)
        if self._error is not None:
            raise self._error

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def ordered_map(fn: Callable, items: Iterable, *, workers: int = 2, ahead: int = 4) -> Iterator:
    """``map(fn, items)`` on ``workers`` threads, in order, with at most ``ahead`` results in
    flight (so memory stays bounded however long the video)."""
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(max_workers=workers) as ex:
        pending: deque = deque()
        for item in items:
            pending.append(ex.submit(fn, item))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def probe(path: str | Path) -> dict:
    """Frame count, size, codec and pixel format of a video, decoded by ffmpeg (for tests and
    checks: counts the frames that actually decode)."""
    import re
    import subprocess

    r = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path), "-map", "0:v:0", "-f", "null", "-"],
                       capture_output=True, text=True)
    err = r.stderr
    m = re.search(r"Video: (\w+)[^,]*, (\w+)[^,]*(?:\([^)]*\))?, (\d+)x(\d+)", err)
    frames = re.findall(r"frame=\s*(\d+)", err)
    if r.returncode != 0 or not m:
        raise ParameterError(f"{path}: not a decodable video ({err.strip()[-200:]})", parameter="video")
    return {"codec": m.group(1), "pix_fmt": m.group(2), "width": int(m.group(3)), "height": int(m.group(4)),
            "frames": int(frames[-1]) if frames else 0}
