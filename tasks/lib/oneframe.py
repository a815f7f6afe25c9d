"""The one frame of a video file that holds a single frame, as PNG bytes for the photo reader.

A video of one frame is a photo (``clip.is_clip``: one frame is a photo whatever holds it), so
``images.read_image`` must read it. It cannot use the clip engine (``clip.py`` imports the photo
reader), so this module asks ffmpeg (imageio-ffmpeg's binary) for the first frame as a PNG,
rotation applied, and nothing else; the photo reader then applies its own checks (size, pixel
limit, ``--downscale``) as to any photo. Also the one place that lists the movie suffixes.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .errors import InputError

MOVIE_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi"})


def first_frame_png(path: str | os.PathLike) -> bytes:
    """The first video frame of ``path`` as 8-bit RGB PNG bytes (displayed orientation).
    Raises :class:`InputError` naming the file when ffmpeg cannot decode one."""
    import imageio_ffmpeg

    p = Path(path)
    r = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error",
                        "-i", str(p), "-map", "0:v:0", "-frames:v", "1", "-f", "image2pipe", "-c:v", "png",
                        "-pix_fmt", "rgb24", "-"], capture_output=True)
    if r.returncode != 0 or not r.stdout:
        why = " ".join(r.stderr.decode("utf-8", "replace").split())[:200] or "no frame"
        raise InputError(f"cannot decode its one video frame ({why})", path=str(p))
    return r.stdout


__all__ = ["MOVIE_SUFFIXES", "first_frame_png"]
