"""Streaming video encoding: frames go to ffmpeg (through moviepy 2's ``FFMPEG_VideoWriter``)
while later frames render; the video is never held in memory.

Containers: ``mp4`` (H.264, libx264: CRF, preset, yuv420p or yuv444p), ``webm`` (VP9, libvpx-vp9,
constant quality), ``gif`` (one palette for the whole clip, Bayer dither). ffmpeg is the one
imageio-ffmpeg ships (moviepy's default).
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator, Literal

import numpy as np

from .errors import ParameterError

Container = Literal["mp4", "webm", "gif"]
CONTAINERS = ("mp4", "webm", "gif")
PixelFormat = Literal["yuv420p", "yuv444p"]


def ffmpeg_exe() -> str:
    from moviepy.config import FFMPEG_BINARY

    return FFMPEG_BINARY


def encoder_args(container: str, *, crf: int = 18, preset: str = "medium",
                 pix_fmt: str = "yuv420p") -> tuple[str, str, list[str]]:
    """``(moviepy codec, preset, extra ffmpeg arguments)`` for a container.

    moviepy's writer appends ``-pix_fmt yuva420p`` whenever the codec is literally ``libx264``,
    which would override ours; so H.264 is requested as ``h264`` and the encoder named with
    ``-c:v libx264`` among the extra arguments (the last codec option wins).
    """
    if container == "mp4":
        return "h264", preset, ["-c:v", "libx264", "-crf", str(int(crf)), "-pix_fmt", pix_fmt,
                                "-movflags", "+faststart"]
    if container == "webm":
        # VP9 constant quality: CRF with zero target bitrate; row threading for speed
        return "libvpx-vp9", preset, ["-crf", str(int(crf) + 13), "-b:v", "0", "-pix_fmt", "yuv420p",
                                      "-row-mt", "1", "-deadline", "good", "-cpu-used", "4"]
    if container == "gif":
        return "gif", preset, ["-vf", "split[a][b];[a]palettegen=stats_mode=diff[p];[b][p]paletteuse=dither=bayer:bayer_scale=3",
                               "-loop", "0"]
    raise ParameterError(f"unknown container {container!r}; mp4, webm or gif", parameter="container")


def reencode_command(src: str | Path, dst: str | Path, container: str, *, crf: int = 18, preset: str = "medium",
                     pix_fmt: str = "yuv420p") -> list[str]:
    """The plain ffmpeg command that re-encodes ``src`` with the same settings (the benchmark's
    floor: what the encoder alone costs)."""
    codec, preset, extra = encoder_args(container, crf=crf, preset=preset, pix_fmt=pix_fmt)
    cmd = [ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(src), "-an", "-vcodec", codec]
    if container != "gif":
        cmd += ["-preset", preset]
    return cmd + extra + [str(dst)]


class VideoWriter:
    """Write frames (uint8 RGB ``H x W x 3``) one by one; a context manager.

    A background thread feeds ffmpeg from a short queue, so the caller's next frame renders
    while ffmpeg reads and encodes the previous ones.
    """

    def __init__(self, path: str | Path, size: tuple[int, int], fps: float, container: str = "mp4", *,
                 crf: int = 18, preset: str = "medium", pix_fmt: str = "yuv420p", queue_frames: int = 4):
        from moviepy.video.io.ffmpeg_writer import FFMPEG_VideoWriter

        w, h = int(size[0]), int(size[1])
        if container in ("mp4", "webm") and pix_fmt == "yuv420p" and (w % 2 or h % 2):
            raise ParameterError(f"{w}x{h}: yuv420p video needs even width and height", parameter="size")
        codec, preset, extra = encoder_args(container, crf=crf, preset=preset, pix_fmt=pix_fmt)
        if container == "gif":
            preset = "medium"  # moviepy always passes -preset; the gif encoder ignores it
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.size = (w, h)
        self.frames = 0
        self._writer = FFMPEG_VideoWriter(str(self.path), (w, h), fps, codec=codec, preset=preset,
                                          ffmpeg_params=extra)
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
                    self._error = e

    def write(self, frame: np.ndarray) -> None:
        if self._error is not None:
            raise self._error
        if frame.shape[:2] != (self.size[1], self.size[0]):
            raise ParameterError(f"frame is {frame.shape[1]}x{frame.shape[0]}, the video {self.size[0]}x{self.size[1]}",
                                 parameter="size")
        self._q.put(np.ascontiguousarray(frame, np.uint8))
        self.frames += 1

    def close(self) -> None:
        self._q.put(None)
        self._thread.join()
        self._writer.close()
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
