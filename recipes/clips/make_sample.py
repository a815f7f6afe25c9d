"""Make ``sample.mp4``, the small clip the video recipes and tests run on.

Two shots rendered from the bundled photos (a slow push-in with a pan over ``chelsea.jpg``,
then a pan over ``coffee.jpg``: one hard scene cut), 240x160 at 24000/1001 fps (NTSC film
rate, so that time-base handling is exercised), 72 frames, with a 440 Hz AAC tone as audio.
Deterministic: the same ffmpeg gives the same file. Run from anywhere:
``python recipes/clips/make_sample.py``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
PHOTOS = HERE.parent / "photos"
SIZE = (240, 160)  # W x H
RATE = "24000/1001"
SHOT_FRAMES = 36


def shot(photo: Path, frames: int, zoom: tuple[float, float], pan: tuple[float, float]):
    """Frames of a virtual camera over a photo: the crop window scales from ``zoom[0]`` to
    ``zoom[1]`` (share of the photo's width) and its centre moves from ``pan[0]`` to ``pan[1]``
    (share of the free width), rendered with sub-pixel accuracy (an affine warp per frame)."""
    rgb = np.asarray(Image.open(photo).convert("RGB"))
    h, w = rgb.shape[:2]
    out_w, out_h = SIZE
    for i in range(frames):
        t = i / (frames - 1)
        t = t * t * (3 - 2 * t)  # ease in and out
        win_w = w * (zoom[0] + (zoom[1] - zoom[0]) * t)
        win_h = win_w * out_h / out_w
        cx = win_w / 2 + (w - win_w) * (pan[0] + (pan[1] - pan[0]) * t)
        cy = h / 2
        s = out_w / win_w
        m = np.array([[s, 0, out_w / 2 - s * cx], [0, s, out_h / 2 - s * cy]], np.float64)
        yield cv2.warpAffine(rgb, m, SIZE, flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)


def main(out: Path = HERE / "sample.mp4") -> Path:
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{SIZE[0]}x{SIZE[1]}", "-framerate", RATE, "-i", "-",
           "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
           "-map", "0:v", "-map", "1:a", "-shortest",
           "-c:v", "libx264", "-preset", "slow", "-crf", "24", "-pix_fmt", "yuv420p", "-threads", "1",
           "-c:a", "aac", "-b:a", "48k", "-fflags", "+bitexact", "-map_metadata", "-1",
           "-movflags", "+faststart", str(out)]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    for f in shot(PHOTOS / "chelsea.jpg", SHOT_FRAMES, (0.95, 0.7), (0.2, 0.8)):
        p.stdin.write(f.tobytes())
    for f in shot(PHOTOS / "coffee.jpg", SHOT_FRAMES, (0.8, 0.8), (0.9, 0.1)):
        p.stdin.write(f.tobytes())
    p.stdin.close()
    if p.wait() != 0:
        raise SystemExit("ffmpeg failed")
    return out


if __name__ == "__main__":
    print(main())
