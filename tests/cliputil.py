"""Small clips for the video tests, made with the bundled ffmpeg from a scikit-image photo.

The camera pans across the photo (so there is motion to follow); frame ``i`` carries its index in
a marker block at the top left (gray level ``(i * 16) % 256``... read by :func:`frame_index`)."""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np

FF = imageio_ffmpeg.get_ffmpeg_exe()
MARK = 12  # marker block side, px


def photo() -> np.ndarray:
    from skimage import data

    return data.astronaut()  # 512 x 512 RGB


def frames(n: int, size: tuple[int, int], *, pan: float = 2.0, cut_at: int | None = None):
    """``n`` uint8 RGB frames of ``size`` (w, h): a slow pan over the photo (``pan`` px a frame);
    from ``cut_at`` on, another photo (a scene cut)."""
    from skimage import data

    w, h = size
    src = cv2.resize(photo(), (int(w * 1.6), int(h * 1.6)), interpolation=cv2.INTER_AREA)
    other = cv2.resize(data.chelsea(), (int(w * 1.6), int(h * 1.6)), interpolation=cv2.INTER_AREA)
    for i in range(n):
        img = other if cut_at is not None and i >= cut_at else src
        x = int(round(i * pan)) % (img.shape[1] - w)
        f = np.ascontiguousarray(img[(img.shape[0] - h) // 2:(img.shape[0] - h) // 2 + h, x:x + w])
        f[:MARK, :MARK] = (i * 16) % 256
        yield f


def frame_index(f: np.ndarray) -> int:
    """The marker's value // 16 (indices modulo 16)."""
    return int(round(float(f[2:MARK - 2, 2:MARK - 2].mean()) / 16.0)) % 16


def make_clip(path: Path, *, n: int = 24, size=(96, 64), rate: str = "30000/1001", audio: bool = True,
              rotation: int | None = None, codec: str = "libx264", pan: float = 2.0, cut_at: int | None = None,
              extra: list[str] | None = None) -> Path:
    w, h = size
    cmd = [FF, "-y", "-hide_banner", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
           "-framerate", rate, "-i", "-"]
    if audio:
        dur = float(n / Fraction(rate)) + 0.5
        cmd += ["-f", "lavfi", "-t", f"{dur:.3f}", "-i", "sine=frequency=440:sample_rate=44100"]
    if codec == "libx264":
        vid = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv444p" if (w % 2 or h % 2) else "yuv420p"]
    else:
        vid = ["-c:v", codec]
    cmd += vid + (["-c:a", "aac", "-shortest"] if audio else []) + (extra or []) + ["-r", rate, str(path)]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    for f in frames(n, size, pan=pan, cut_at=cut_at):
        p.stdin.write(f.tobytes())
    p.stdin.close()
    assert p.wait() == 0, p.stderr.read().decode()
    if rotation is not None:
        tmp = path.with_name("unrotated" + path.suffix)
        path.rename(tmp)
        subprocess.run([FF, "-y", "-loglevel", "error", "-display_rotation", str(rotation), "-i", str(tmp), "-c", "copy",
                        str(path)], check=True)
        tmp.unlink()
    return path


def make_animation(path: Path, *, n: int = 6, size=(80, 64), duration_ms: int = 100) -> Path:
    from PIL import Image

    imgs = [Image.fromarray(f) for f in frames(n, size, pan=3)]
    imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=duration_ms, loop=0)
    return path


def vfr_clip(path: Path, *, audio: bool = True) -> Path:
    """4 s of 96x96 at 30 fps, of which only every 15th frame is kept from 2 s on (frames at 2.0,
    2.5, 3.0, 3.5 s): 64 frames over 3.533 s. Source frame n (n < 60, or the kept ones) is grey
    16 + 2n, so a frame says which source frame it is."""
    cmd = [FF, "-y", "-loglevel", "error", "-f", "lavfi", "-i",
           "color=c=black:s=96x96:r=30,format=gray,geq=lum='16+2*N'"]
    if audio:
        cmd += ["-f", "lavfi", "-i", "sine=frequency=440"]
    cmd += ["-t", "4", "-filter_complex", "[0:v]select='lt(t\\,2)+not(mod(n\\,15))'[v]", "-map", "[v]"]
    if audio:
        cmd += ["-map", "1:a", "-c:a", "aac", "-shortest"]
    subprocess.run(cmd + ["-fps_mode", "vfr", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def vfr_expected(k: int, rate: float = 30.0) -> int:
    """The source frame on screen at output frame k's time (k / rate) in :func:`vfr_clip`."""
    t = k / rate
    return int(round(t * 30)) if t < 2 - 1 / 60 else 60 + 15 * min(3, int((t + 1 / 60 - 2) / 0.5))


def shown(frames) -> list[int]:
    return [int(round((float(f.mean()) - 16) / 2)) for f in frames]


BUNDLED_CLIP = Path(__file__).resolve().parents[1] / "recipes" / "clips" / "sample.mp4"


def small_bundled_clip(folder: Path) -> Path:
    """The bundled clip scaled to 120x80 in ``folder``: every frame, the rate and the audio stream
    as they are (the video tests' small real clip)."""
    out = Path(folder) / "sample.mp4"
    subprocess.run([FF, "-loglevel", "error", "-i", str(BUNDLED_CLIP), "-vf", "scale=120:80", "-c:v", "libx264",
                    "-preset", "veryfast", "-crf", "20", "-c:a", "copy", str(out)], check=True)
    return out
