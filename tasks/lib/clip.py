"""Clips in and out: probe, stream-decode any frame range, encode, mux the audio, concatenate.

Everything goes through the ffmpeg binary that imageio-ffmpeg ships (ffprobe is not shipped:
the stream header is parsed from ``ffmpeg -i`` and the exact frame count and timestamps from a
``-c copy -f framecrc`` pass, which reads packets without decoding). Frames are never held all
at once: :func:`read_frames` yields one uint8 RGB frame at a time from a pipe.

Conventions
- A frame is uint8 RGB ``H x W x 3`` in *display* orientation: rotation metadata (the display
  matrix) is applied by ffmpeg when decoding, and :class:`ClipInfo` ``width``/``height`` are the
  displayed size.
- Frame rates and time bases are exact fractions (29.97 fps is ``Fraction(30000, 1001)``); every
  writer encodes at that rational rate, so a 30000/1001 clip gives a 30000/1001 output with the
  same number of frames. Variable-frame-rate input is converted to a constant rate (see
  :func:`vfr_rate`) the way ffmpeg's ``fps`` filter does it: output frame ``k`` (at ``k / rate``
  after the first frame) shows the source frame on screen then (its timestamp rounded to the
  nearest output frame), so source frames are repeated or dropped but never moved in time and
  the audio stays in sync; the frame count is then ``round(duration x rate)``, with a notice.
- Animated GIF and WebP are read with Pillow (frame durations in ms; unequal durations are
  converted to a constant rate as variable-frame-rate video is, each frame kept for its own
  duration, with a notice).
- Bad input raises :class:`InputError` naming the file, with one line saying what is wrong.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import InputError, ParameterError
from .oneframe import MOVIE_SUFFIXES  # (there, so that the photo reader can read a 1-frame video)

log = logging.getLogger(__name__)

# The one place that says what a clip is (recipes, one-shot commands and images.py use it).
# clips only when they have more than one frame (APNG: an animated .png); read with Pillow
ANIMATION_SUFFIXES = frozenset({".gif", ".webp", ".png"})
VIDEO_SUFFIXES = MOVIE_SUFFIXES | ANIMATION_SUFFIXES
# what an output path's suffix makes: a video file written by ffmpeg
VIDEO_OUTPUT_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".gif"})
HDR_TRANSFERS = ("smpte2084", "arib-std-b67")  # PQ and HLG
WIDE_PRIMARIES = ("bt2020", "smpte431", "smpte432")  # BT.2020, DCI-P3, Display P3 (ffmpeg's names)
# no encoder/muxer version strings or dates in the files: the same frames give the same bytes
BITEXACT = ["-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1"]
# a GIF's 256 colours: one palette from the whole video's frames
GIF_PALETTE = "split[a][b];[a]palettegen=stats_mode=diff[p];[b][p]paletteuse=dither=bayer"


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def is_animated(path: str | os.PathLike) -> bool:
    """Whether a GIF/WebP file has more than one frame (False for unreadable files: the photo
    reader then says what is wrong)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return bool(getattr(im, "is_animated", False)) and getattr(im, "n_frames", 1) > 1
    except Exception:  # noqa: BLE001 - not ours to report here
        return False


def is_clip(path: str | os.PathLike) -> bool:
    """A movie file of more than one frame, or an animated GIF/WebP/PNG (APNG) of more than one.

    One frame is a photo whatever the container (a still GIF, a 1-frame animation, a video
    holding one frame): every step takes it and writes what it writes for a photo, named by
    ``-o`` as for a photo (docs/failures-inputs.md). A movie file that cannot be read counts as
    a clip, so that the clip probe says what is wrong with it."""
    s = Path(path).suffix.lower()
    if s in MOVIE_SUFFIXES:
        return movie_frames_upto(path, 2) != 1
    return s in ANIMATION_SUFFIXES and Path(path).is_file() and is_animated(path)


def clip_words(path: str | os.PathLike) -> str:
    """What kind of clip ``path`` is, in a few words for a message: "an animated GIF (3 frames)",
    "a video"."""
    p = Path(path)
    if p.suffix.lower() in ANIMATION_SUFFIXES:
        from PIL import Image

        try:
            with Image.open(p) as im:
                return f"an animated {im.format or p.suffix.lstrip('.').upper()} ({getattr(im, 'n_frames', 1)} frames)"
        except Exception:  # noqa: BLE001 - only words
            pass
    return "a video"


_FEW_FRAMES: dict[tuple, int] = {}


def movie_frames_upto(path: str | os.PathLike, most: int) -> int:
    """How many video frames ``path`` holds, counted up to ``most`` (packets, copied without
    decoding: one short ffmpeg run). 0 for a file that is missing or not a video. Remembered per
    file version (path, size, mtime) in this process."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return 0
    if not p.is_file():
        return 0
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns, most)
    if key not in _FEW_FRAMES:
        r = _run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(p), "-map", "0:v:0",
                  "-c", "copy", "-frames:v", str(most), "-f", "framecrc", "-"])
        n = 0
        for line in r.stdout.splitlines():
            parts = line.split(",")
            if line[:1].isdigit() and len(parts) >= 5 and parts[4].strip().isdigit() and int(parts[4]) > 0:
                n += 1
        _FEW_FRAMES[key] = min(n, most)
    return _FEW_FRAMES[key]




@dataclass
class ClipInfo:
    """What a clip is. Sizes are the displayed ones (rotation applied); ``rate`` is the exact
    frame rate and ``time_base`` the stream's timestamp unit, both as fractions."""

    path: str
    frames: int
    rate: Fraction
    time_base: Fraction
    width: int
    height: int
    codec: str
    pix_fmt: str = "rgb24"
    bit_depth: int = 8
    rotation: int = 0  # degrees, counter-clockwise as ffmpeg's display matrix reports it
    vfr: bool = False
    has_audio: bool = False
    audio_codec: str | None = None
    duration: float = 0.0
    animation: bool = False  # GIF/WebP read with Pillow
    scale_to: tuple[int, int] | None = None  # decode downscaled to this size (pixel limit)
    notices: list[str] = field(default_factory=list)
    # variable frame rate: the source frames' timestamps (``time_base`` ticks, sorted, counted
    # from the container's start as ffmpeg's input seeks are) that output frames are mapped onto
    # (see :func:`source_frame`)
    source_pts: list[int] | None = None
    name: str = ""  # the clip as the user named it, for messages (a recipe may read a copy)

    @property
    def size(self) -> tuple[int, int]:
        return (self.scale_to or (self.width, self.height))

    def frame_to_seconds(self, i: int) -> float:
        return float(Fraction(i) / self.rate)

    def seconds_to_frame(self, t: float) -> int:
        return int(round(Fraction(t) * self.rate))

    def describe(self) -> dict:
        w, h = self.size
        return {"frames": self.frames, "rate": f"{self.rate.numerator}/{self.rate.denominator}",
                "time_base": f"{self.time_base.numerator}/{self.time_base.denominator}", "width": w,
                "height": h, "codec": self.codec, "pix_fmt": self.pix_fmt, "bit_depth": self.bit_depth,
                "rotation": self.rotation, "vfr": self.vfr, "has_audio": self.has_audio}


def rate_from_text(text: str) -> Fraction:
    """ffmpeg's printed rate (``29.97``, ``23.98``, ``25``, ``30k``) as an exact fraction: rates
    within 0.02 % of n x 1000/1001 are the NTSC family (30000/1001, 24000/1001...)."""
    t = text.strip()
    mult = 1000 if t.endswith("k") else 1
    v = float(t.rstrip("k")) * mult
    if v <= 0:
        raise ValueError(text)
    n = round(v * 1.001)
    if abs(v - n / 1.001) < 0.006 and abs(v - round(v)) > 0.006 and n % 1 == 0:
        return Fraction(n * 1000, 1001)
    return Fraction(v).limit_denominator(1001)


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL, **kw)


_STREAM = re.compile(r"Stream #\d+:(\d+)[^:]*: (Video|Audio|Subtitle|Data|Attachment): (.*)")


def probe_clip(path: str | os.PathLike, *, max_pixels: int | None = None, downscale: bool = False,
               name: str | None = None, internal: bool = False, min_side: int = 0) -> ClipInfo:
    """Probe ``path`` (see :class:`ClipInfo`). Raises :class:`InputError` naming the file for a
    missing or truncated file (no index), no video stream, zero frames, an unsupported codec, a
    side under ``min_side`` (user clips: ``images.MIN_SIDE``, 64 px, as for photos), a frame over the pixel limit (unless
    ``downscale``: decoded smaller, with a notice) and HDR (PQ/HLG) input; 10-bit SDR input is
    converted to 8 bits with a notice. ``name``: the clip as the user named it, in messages
    (default: the file's name). ``internal``: a video depthcraft wrote itself (a depth segment),
    read by its own reader: no notices logged."""
    p = Path(path)
    if not p.exists():
        raise InputError("no such file", path=str(p))
    if p.is_dir():
        raise InputError("is a folder, not a clip", path=str(p))
    from .images import max_pixels_default

    limit = max_pixels or max_pixels_default()
    if p.suffix.lower() in ANIMATION_SUFFIXES:
        _animation_within_limits(p, limit, downscale)  # before a frame is decoded (reading durations decodes)
        info = _probe_animation(p)
    else:
        info = _probe_movie(p)
    info.name = name or p.name
    if name and name != p.name:  # messages name the user's file, not a copy of it
        info.notices = [n.replace(f"{p.name}: ", f"{name}: ", 1) for n in info.notices]
    if min(info.width, info.height) < min_side:
        raise InputError(f"frames are {info.width}x{info.height}; both sides must be at least {min_side} px",
                         path=name or str(p))
    if info.width * info.height > limit:
        if not downscale:
            raise InputError(f"frames are {info.width}x{info.height} = {info.width * info.height / 1e6:.1f} MP, over "
                             f"the limit of {limit / 1e6:.0f} MP", path=str(p),
                             hint="pass --downscale, or raise the limit with --max-pixels / DEPTHCRAFT_MAX_PIXELS")
        f = (limit / (info.width * info.height)) ** 0.5
        info.scale_to = (max(2, int(info.width * f)) // 2 * 2, max(2, int(info.height * f)) // 2 * 2)
        info.notices.append(f"{info.name}: frames downscaled from {info.width}x{info.height} to "
                            f"{info.scale_to[0]}x{info.scale_to[1]} (pixel limit)")
    if internal:
        info.notices = []
    for n in info.notices:
        log.warning("%s", n)
    return info


def _probe_movie(p: Path) -> ClipInfo:
    r = _run([ffmpeg_exe(), "-hide_banner", "-i", str(p)])
    err = r.stderr
    with open(p, "rb") as fh:
        head = fh.read(12)
    mp4_like = head[4:8] in (b"ftyp", b"mdat", b"free", b"wide", b"skip", b"moov")
    if "moov atom not found" in err and mp4_like:
        raise InputError("truncated or unfinished video: no index (moov atom)", path=str(p),
                         hint="the file was cut off while being written or copied; get a complete copy")
    if "Invalid data found" in err or "Error opening input" in err and "Stream #" not in err:
        raise InputError("not a video file, or a damaged one", path=str(p))
    video = audio = None
    for m in _STREAM.finditer(err):
        if m.group(2) == "Video" and video is None and "attached pic" not in m.group(3):
            video = m
        elif m.group(2) == "Audio" and audio is None:
            audio = m
    if video is None:
        raise InputError("no video stream (audio only?)", path=str(p))
    desc = video.group(3)
    codec = desc.split(",")[0].split()[0]
    if codec in ("none", "unknown") or "Unsupported codec" in err or "Could not find codec parameters" in err \
            and re.search(r"\d+x\d+", desc) is None:
        tag = re.search(r"\(([^)]*/ 0x[0-9A-Fa-f]+)\)", desc)
        raise InputError(f"unsupported video codec{' ' + tag.group(1) if tag else ''}", path=str(p),
                         hint="convert it to H.264, VP9 or AV1 first")
    size = re.search(r"(?<![\dx])(\d{1,5})x(\d{1,5})(?![\dx])", desc)
    if size is None or int(size.group(1)) == 0:
        raise InputError("video stream has no frame size (damaged or unsupported)", path=str(p))
    w, h = int(size.group(1)), int(size.group(2))
    pix = re.search(r"\b(yuv\w*|yuvj\w*|rgb\w*|bgr\w*|gbr\w*|gray\w*|nv\d+\w*|p010\w*|pal8|rgba|argb|bgra|abgr|ya\w*)\b",
                    desc)
    pix_fmt = pix.group(1) if pix else "unknown"
    depth_m = re.search(r"(\d+)(?:le|be)$", pix_fmt)
    bit_depth = int(depth_m.group(1)) if depth_m and int(depth_m.group(1)) in (9, 10, 12, 14, 16) else 8
    if pix_fmt.startswith("p010"):
        bit_depth = 10
    if any(t in desc for t in HDR_TRANSFERS):
        raise InputError(f"HDR video ({pix_fmt}, {'PQ' if 'smpte2084' in desc else 'HLG'} transfer) cannot be "
                         "honoured: depthcraft works on SDR frames", path=str(p),
                         hint="tone-map it to SDR first (e.g. with ffmpeg's zscale/tonemap filters)")
    # the YUV matrix and range a stream is tagged with are honoured by ffmpeg's rgb24 conversion;
    # its primaries are not converted (docs/colour.md): said for primaries wider than BT.709
    tags = re.search(r"\((?:tv|pc), ([\w-]+)(?:/([\w-]+)/([\w-]+))?", desc)
    primaries = (tags.group(2) or tags.group(1)) if tags else ""
    if primaries in WIDE_PRIMARIES:
        info_notes = [f"{p.name}: colour primaries {primaries} (wider than sRGB/BT.709) are not converted: "
                      "frames are read as BT.709, their colours less saturated than shown by a player"]
    else:
        info_notes = []
    rot = 0
    m = re.search(r"rotation of (-?[\d.]+) degrees", err[video.start():])
    if m:
        rot = int(round(float(m.group(1)))) % 360
    if rot in (90, 270):
        w, h = h, w
    fps = re.search(r"([\d.]+k?) fps", desc) or re.search(r"([\d.]+k?) tbr", desc)
    dur = re.search(r"Duration: (\d+):(\d+):([\d.]+)", err)
    duration = int(dur.group(1)) * 3600 + int(dur.group(2)) * 60 + float(dur.group(3)) if dur else 0.0
    # exact frame count and timestamps: packets, read without decoding
    rc = _run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", str(p), "-map", "0:v:0", "-c", "copy",
               "-f", "framecrc", "-"])
    tb = Fraction(1, 1000)
    pts: list[int] = []
    pkt_dur: dict[int, int] = {}
    for line in rc.stdout.splitlines():
        if line.startswith("#tb 0:"):
            a, b = line.split(":", 1)[1].strip().split("/")
            tb = Fraction(int(a), int(b))
        elif line and line[0].isdigit():
            parts = line.split(",")
            if len(parts) >= 5 and int(parts[4]) > 0:
                pts.append(int(parts[2]))
                pkt_dur[int(parts[2])] = int(parts[3])
    if not pts:
        raise InputError("the video stream has no frames", path=str(p))
    pts.sort()
    rate = rate_from_text(fps.group(1)) if fps else None
    vfr = False
    notices = info_notes
    source_pts = None
    frames = len(pts)
    if len(pts) > 2:
        steps = np.diff(np.asarray(pts, np.int64))
        med = float(np.median(steps))
        # a VFR stream: frame steps that differ by more than one tick and 10 % from the median
        if med > 0 and (np.abs(steps - med) > max(1.5, 0.1 * med)).mean() > 0.02:
            vfr = True
            # the last frame lasts its packet's duration (else the typical step)
            last = pkt_dur.get(pts[-1], 0) or int(round(med))
            span = Fraction(pts[-1] - pts[0] + last) * tb
            rate = vfr_rate(steps, tb, len(pts) / span if span > 0 else Fraction(25))
            frames = max(1, int(round(span * rate)))
            source_pts = [int(t) for t in pts]
            notices.append(f"{p.name}: variable frame rate ({len(pts)} frames over {float(span):.3f} s); converted to "
                           f"constant {float(rate):.3f} fps, {frames} frames, each source frame kept at its time "
                           "(repeated or dropped as ffmpeg's fps filter does)")
        else:
            # the printed rate when the packets agree (it is exact: 30000/1001), else the packets'
            mean_step = Fraction(pts[-1] - pts[0], len(pts) - 1) * tb
            measured = _snap_rate(Fraction(1) / mean_step) if mean_step > 0 else None
            if measured is not None and (rate is None or abs(float(rate) / float(measured) - 1) > 0.01):
                rate = measured
    if rate is None:
        rate = Fraction(25)
    if bit_depth > 8:
        notices.append(f"{p.name}: {bit_depth}-bit video ({pix_fmt}) converted to 8 bits per channel")
    return ClipInfo(path=str(p), frames=frames, rate=rate, time_base=tb, width=w, height=h, codec=codec,
                    pix_fmt=pix_fmt, bit_depth=bit_depth, rotation=rot, vfr=vfr, has_audio=audio is not None,
                    audio_codec=audio.group(3).split(",")[0].split()[0] if audio else None, duration=duration,
                    notices=notices, source_pts=source_pts)


MAX_VFR_RATE = Fraction(60)


def vfr_rate(steps: np.ndarray, tb: Fraction, mean_rate: Fraction) -> Fraction:
    """The constant rate a variable-frame-rate clip is converted to: the rate of its short frame
    steps (the 10th percentile of the steps between timestamps, so that the stretches at the
    clip's full rate keep every frame; a phone clip at 30 fps that slows to 15 in the dark stays
    30), snapped to a common rate within 1.5 % (timestamp jitter), at least the mean rate and at
    most :data:`MAX_VFR_RATE` (60 fps: a burst of near-zero steps must not make a 1000 fps clip).
    ``steps``: timestamp differences in ``tb`` ticks."""
    short = float(np.percentile(steps[steps > 0], 10)) if (steps > 0).any() else 0.0
    rate = Fraction(1) / (Fraction(short).limit_denominator(1 << 20) * tb) if short > 0 else Fraction(mean_rate)
    common = (Fraction(24000, 1001), Fraction(30000, 1001), Fraction(60000, 1001),
              *map(Fraction, (10, 12, 15, 24, 25, 30, 48, 50, 60)))
    near = min(common, key=lambda c: abs(float(rate) / float(c) - 1))
    rate = near if abs(float(rate) / float(near) - 1) < 0.015 else rate.limit_denominator(1001)
    return min(max(rate, _snap_rate(Fraction(mean_rate).limit_denominator(1001))), MAX_VFR_RATE)


def source_frame(info: "ClipInfo", k: int) -> int:
    """The source frame that output frame ``k`` of a variable-frame-rate clip shows: the last
    one whose timestamp, rounded to the nearest output frame, is at most ``k`` (ffmpeg's ``fps``
    filter, ``round=near``). Source frames are repeated or dropped, never moved in time."""
    import bisect

    pts = info.source_pts or [0]
    # pts * tb * rate < k + 1/2  <=>  pts < (k + 1/2) / (rate * tb)
    limit = Fraction(2 * k + 1, 2) / (info.rate * info.time_base) + pts[0]
    return max(0, bisect.bisect_left(pts, limit) - 1)


def _snap_rate(r: Fraction) -> Fraction:
    """A measured rate to the nearest common one (within 0.1 %), else 1/1001 precision."""
    for c in (Fraction(24000, 1001), Fraction(30000, 1001), Fraction(60000, 1001), Fraction(48000, 1001),
              *map(Fraction, (10, 12, 15, 24, 25, 30, 48, 50, 60, 100, 120))):
        if abs(float(r) - float(c)) < 0.001 * float(c):
            return c
    return r.limit_denominator(1001)


def _animation_within_limits(p: Path, limit: int, downscale: bool) -> None:
    """Refuse an animation whose header claims frames over the pixel limit (or, with downscale,
    over the decoding budget) before any frame is decoded: a GIF header may claim 65535 x 65535."""
    from PIL import Image

    from .images import decode_budget

    try:
        with Image.open(p) as im:
            w, h = im.size
    except Exception:  # noqa: BLE001 - _probe_animation says what is wrong with the file
        return
    if w * h > limit and not downscale:
        raise InputError(f"frames are {w}x{h} = {w * h / 1e6:.1f} MP, over the limit of {limit / 1e6:.0f} MP",
                         path=str(p), hint="pass --downscale, or raise the limit with --max-pixels / DEPTHCRAFT_MAX_PIXELS")
    if w * h > decode_budget(limit):
        raise InputError(f"frames are {w}x{h} = {w * h / 1e6:,.0f} MP, over the decoding budget of "
                         f"{decode_budget(limit) / 1e6:,.0f} MP", path=str(p), hint="shrink it with an image editor first")


def _probe_animation(p: Path) -> ClipInfo:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(p) as im:
            n = getattr(im, "n_frames", 1)
            w, h = im.size
            durs = []
            for i in range(n):
                im.seek(i)
                durs.append(int(im.info.get("duration", 100) or 100))
    except UnidentifiedImageError:
        raise InputError("not an image or animation that can be read", path=str(p)) from None
    except (OSError, EOFError, ValueError) as e:
        raise InputError(f"unreadable or truncated animation ({e})", path=str(p)) from None
    common, _ = Counter(durs).most_common(1)[0]
    rate = _snap_rate(Fraction(1000, max(common, 1)))
    notices = []
    vfr = len(set(durs)) > 1
    frames, source_pts = n, None
    if vfr and max(durs) - min(durs) <= 10:
        # one GIF tick (10 ms) apart: a constant rate's rounding (29.97 fps is 30/40 ms): one
        # frame per frame, at the mean rate snapped to a common one (not the most common
        # duration's: 30 ms would make 29.97 fps 33.3)
        rate = vfr_rate(np.asarray([round(sum(durs) * 1000 / n)], np.int64), Fraction(1, 10**6), Fraction(1000 * n, sum(durs)))
        notices.append(f"{p.name}: frame durations of {min(durs)}-{max(durs)} ms (rounding); taken at a constant "
                       f"{float(rate):.3f} fps")
    elif vfr:  # as a VFR movie: each frame kept for its own duration (repeated or dropped)
        total = Fraction(sum(durs), 1000)
        rate = vfr_rate(np.asarray(durs, np.int64), Fraction(1, 1000), n / total)
        frames = max(1, int(round(total * rate)))
        source_pts = [0, *np.cumsum(durs[:-1]).tolist()]
        notices.append(f"{p.name}: frames of unequal duration ({n} frames over {float(total):.3f} s); converted to "
                       f"constant {float(rate):.3f} fps, {frames} frames, each frame kept for its own duration")
    return ClipInfo(path=str(p), frames=frames, rate=rate, time_base=Fraction(1, 1000), width=w, height=h,
                    codec=p.suffix.lower().lstrip("."), vfr=vfr, duration=sum(durs) / 1000.0, animation=True,
                    notices=notices, source_pts=source_pts)


# -- decoding --------------------------------------------------------------------------------
def read_frames(path: str | os.PathLike, start: int = 0, stop: int | None = None, *,
                info: ClipInfo | None = None) -> Iterator[np.ndarray]:
    """Frames ``[start, stop)`` of a clip, uint8 RGB ``H x W x 3`` (displayed size), one at a
    time. Exactly ``stop - start`` frames (``stop`` defaults to the clip's frame count); a
    stream that ends early raises :class:`InputError`.

    Seeking: an input seek to half a frame before ``start / rate`` (ffmpeg decodes from the
    keyframe before and drops the frames before that time), then exactly the count asked for."""
    info = info or probe_clip(path)
    stop = info.frames if stop is None else min(int(stop), info.frames)
    start = max(0, int(start))
    if stop <= start:
        return
    if info.animation:
        yield from _read_animation(Path(path), start, stop, info)
        return
    if info.vfr and info.source_pts:
        yield from _read_vfr(Path(path), start, stop, info)
        return
    yield from _read_source(Path(path), start, stop - start, info, (Fraction(start) - Fraction(1, 2)) / info.rate)


def _read_vfr(path: Path, start: int, stop: int, info: ClipInfo) -> Iterator[np.ndarray]:
    """Output frames ``[start, stop)`` of a variable-frame-rate clip at its constant rate: the
    source frames that :func:`source_frame` maps them to, decoded once each from a seek half-way
    between the first one's timestamp and the one before (so any segment starts exactly where
    the whole clip would be), repeated or skipped here."""
    first, last = source_frame(info, start), source_frame(info, stop - 1)
    pts, tb = info.source_pts, info.time_base
    seek = Fraction(pts[first] + pts[first - 1], 2) * tb if first > 0 else None
    frames = _read_source(path, first, last - first + 1, info, seek, exact=False)
    cur, frame = first - 1, None
    try:
        for k in range(start, stop):
            want = source_frame(info, k)
            while cur < want:
                frame = next(frames, None)
                if frame is None:  # the stream ended a frame early: what there is
                    return
                cur += 1
            yield frame
    finally:  # (a consumer that stops early: ffmpeg stopped now, not when collected)
        frames.close()


def _read_source(path: Path, start: int, count: int, info: ClipInfo, seek: Fraction | None, *,
                 exact: bool = True) -> Iterator[np.ndarray]:
    """``count`` decoded frames, each once, from an input seek to ``seek`` seconds (none for
    ``start`` 0). ``exact``: fewer frames than ``count`` is an error."""
    w, h = info.size
    stop = start + count
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error"]
    if start > 0 and seek is not None:
        cmd += ["-ss", f"{float(seek):.6f}"]
    cmd += ["-i", str(path), "-map", "0:v:0", "-an", "-sn"]
    if info.scale_to:
        cmd += ["-vf", f"scale={w}:{h}:flags=area"]
    # every decoded frame once: no duplicates or drops around a seek
    cmd += ["-fps_mode", "passthrough", "-frames:v", str(count), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    nbytes = w * h * 3
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            bufsize=nbytes * 2)
    got = 0
    try:
        while got < count:
            buf = proc.stdout.read(nbytes)
            if len(buf) < nbytes:
                break
            got += 1
            yield np.frombuffer(buf, np.uint8).reshape(h, w, 3)
    finally:
        proc.stdout.close()
        if proc.poll() is None:
            proc.kill()
        err = proc.stderr.read().decode(errors="replace").strip()
        proc.stderr.close()
        proc.wait()
    if got < count:
        if not exact and got > 0:
            return
        raise InputError(f"decoding stopped at frame {start + got} of {stop} ({err.splitlines()[-1] if err else 'end of stream'})",
                         path=str(path))


def _read_animation(p: Path, start: int, stop: int, info: ClipInfo) -> Iterator[np.ndarray]:
    from PIL import Image

    from .colour import to_srgb

    with Image.open(p) as im:
        icc = im.info.get("icc_profile")  # (an APNG's iCCP, a WebP's ICCP: one profile for all frames)
        for k in range(start, stop):
            i = source_frame(info, k) if info.source_pts else k
            im.seek(i)
            if icc:  # to sRGB, as a photo is (tasks/lib/colour.py); untagged or sRGB: untouched
                im.load()
                conv, _ = to_srgb(im, icc, str(p))
                if conv is not im:
                    fr = conv if conv.mode == "RGB" else None
                    if fr is None:
                        from .images import over_background

                        rgba = np.asarray(conv.convert("RGBA"))
                        fr = Image.fromarray(over_background(np.ascontiguousarray(rgba[..., :3]), rgba[..., 3]))
                    if info.scale_to:
                        fr = fr.resize(info.scale_to, Image.Resampling.BOX)
                    yield np.asarray(fr)
                    continue
            if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
                # a clip's outputs are videos, which have no alpha: transparent pixels over the
                # stated background (white, images.BACKGROUND), never the colour stored under them
                from .images import over_background

                rgba = np.asarray(im.convert("RGBA"))
                fr = Image.fromarray(over_background(np.ascontiguousarray(rgba[..., :3]), rgba[..., 3]))
            else:
                fr = im.convert("RGB")
            if info.scale_to:
                fr = fr.resize(info.scale_to, Image.Resampling.BOX)
            yield np.asarray(fr)


def read_depth_frames(path: str | os.PathLike, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
    """Nearness frames (float32 ``H x W``, 0..1) ``[start, stop)`` of a depth video: a 16-bit
    FFV1 (or 8-bit) video, or a folder of 16/8-bit PNGs named by frame index."""
    import cv2

    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() == ".png")
        by_index = {int(f.stem): f for f in files if f.stem.isdigit()}
        first = min(by_index) if by_index else 0
        for i in range(start, stop if stop is not None else first + len(files)):
            f = by_index.get(i)
            if f is None:
                raise InputError(f"no depth frame {i}", path=str(p))
            a = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
            yield a.astype(np.float32) / (65535.0 if a.dtype == np.uint16 else 255.0)
        return
    # depthcraft's own 16-bit FFV1 is read as 16 bits here: its probe notice ("converted to 8
    # bits") would be false, and would name a temporary file
    info = probe_clip(p, internal=True)
    w, h = info.size
    sixteen = info.bit_depth > 8 or "gray16" in info.pix_fmt
    # a segment file holds its own range: frame `start` of the clip is its frame 0 when the file is shorter
    count = (stop if stop is not None else info.frames) - start
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(p), "-map", "0:v:0",
           "-frames:v", str(count), "-f", "rawvideo", "-pix_fmt", "gray16le" if sixteen else "gray", "-"]
    nbytes = w * h * (2 if sixteen else 1)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        for _ in range(count):
            buf = proc.stdout.read(nbytes)
            if len(buf) < nbytes:
                raise InputError("depth video ended early", path=str(p))
            a = np.frombuffer(buf, "<u2" if sixteen else np.uint8).reshape(h, w)
            yield a.astype(np.float32) / (65535.0 if sixteen else 255.0)
    finally:
        proc.stdout.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def read_frame(path: str | os.PathLike, index: int, *, info: ClipInfo | None = None) -> np.ndarray:
    """One frame (a copy)."""
    for f in read_frames(path, index, index + 1, info=info):
        return f.copy()
    raise InputError(f"no frame {index}", path=str(path))


def scene_cuts(path: str | os.PathLike, *, info: ClipInfo | None = None, threshold: float = 0.35,
               width: int = 96) -> list[int]:
    """Frame indices that start a new shot (0 excluded): a large change of the small frame's
    colour histogram and of its pixels between consecutive frames (see temporal.cut_score)."""
    from .temporal import CutDetector

    info = info or probe_clip(path)
    det = CutDetector(threshold=threshold, width=width)
    cuts = []
    for i, f in enumerate(read_frames(path, 0, None, info=info)):
        if det.is_cut(f) and i > 0:
            cuts.append(i)
    return cuts


# -- encoding --------------------------------------------------------------------------------
def rate_arg(rate: Fraction) -> str:
    return f"{rate.numerator}/{rate.denominator}"


class FrameWriter:
    """Frames to a file or folder; a context manager. ``write(frame)`` takes uint8 RGB
    ``H x W x 3`` (``rgb`` kinds), float32 nearness ``H x W`` on 0..1 (``depth8``/``depth16``/
    ``png16``/``png8``), or uint8 RGBA (``rgba`` folders)."""

    frames: int = 0
    path: Path

    def write(self, frame: np.ndarray) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass

    def abort(self) -> None:
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb) -> None:
        if et is not None:
            self.abort()
        else:
            self.close()


def _even(n: int) -> int:
    return n + (n % 2)


class FfmpegWriter(FrameWriter):
    """Raw frames piped to an ffmpeg encoder at an exact rational rate.

    kinds: ``rgb`` (H.264 yuv420p in mp4/mov/m4v/mkv/avi, VP9 in webm, GIF), ``depth8`` (8-bit
    gray H.264 in yuv420p: the gray level is the luma, chroma neutral), ``depth16`` (FFV1,
    gray16le, lossless: nearness x 65535). yuv420p needs even sides: an odd side is padded with
    its last row/column (a notice says so, naming ``label`` or else the file)."""

    def __init__(self, path: str | os.PathLike, kind: str, size: tuple[int, int], rate: Fraction, *,
                 crf: int = 18, preset: str = "medium", threads: int | None = None, notice: bool = True,
                 label: str | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.kind, self.size, self.rate = kind, (int(size[0]), int(size[1])), Fraction(rate)
        self.frames = 0
        w, h = self.size
        suffix = self.path.suffix.lower()
        self.pad = (0, 0)
        if kind == "depth16":
            if suffix not in (".mkv", ".avi"):
                raise ParameterError(f"a 16-bit depth video is FFV1 in .mkv, not {suffix!r}", parameter="-o")
            in_fmt, venc = "gray16le", ["-c:v", "ffv1", "-level", "3", "-g", "1", "-slicecrc", "1",
                                        "-pix_fmt", "gray16le"]
        elif suffix == ".gif":  # a depth GIF is piped as gray (its float frames are not rgb24 bytes)
            in_fmt, venc = "gray" if kind == "depth8" else "rgb24", ["-vf", GIF_PALETTE]
        else:
            self.pad = (w % 2, h % 2)
            if any(self.pad) and notice:
                log.warning("%s: %dx%d has an odd side; padded to %dx%d for yuv420p video", label or self.path.name, w, h,
                            _even(w), _even(h))
            in_fmt = "gray" if kind == "depth8" else "yuv420p"
            if suffix == ".webm":
                venc = ["-c:v", "libvpx-vp9", "-crf", str(crf + 13), "-b:v", "0", "-row-mt", "1", "-deadline", "good",
                        "-cpu-used", "4", "-pix_fmt", "yuv420p"]
            else:
                venc = ["-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p"]
                if suffix in (".mp4", ".mov", ".m4v"):
                    venc += ["-movflags", "+faststart"]
        if threads:  # x264's bytes depend on its thread count: a fixed one gives the same bytes everywhere
            venc += ["-threads", str(threads)]
        self.in_fmt = in_fmt
        ew, eh = w + self.pad[0], h + self.pad[1]
        self.command = [ffmpeg_exe(), "-nostdin", "-y", "-hide_banner", "-loglevel", "error", "-f", "rawvideo",
                        "-pix_fmt", in_fmt, "-s", f"{ew}x{eh}", "-framerate", rate_arg(self.rate), "-i", "-", "-an",
                        *venc, "-r", rate_arg(self.rate), *BITEXACT, str(self.path)]
        self._err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._err)
        try:  # a 1 MB pipe (Linux): a frame crosses in a few writes
            import fcntl

            fcntl.fcntl(self.proc.stdin.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
        except (ImportError, OSError):
            pass

    def _padded(self, a: np.ndarray) -> np.ndarray:
        if any(self.pad):
            widths = ((0, self.pad[1]), (0, self.pad[0])) + (((0, 0),) if a.ndim == 3 else ())
            a = np.pad(a, widths, mode="edge")
        return a

    def encode(self, frame: np.ndarray) -> np.ndarray:
        """``frame`` as the raw bytes this writer pipes (thread-safe; for callers that convert
        on worker threads and then :meth:`write_raw`)."""
        f = np.asarray(frame)
        w, h = self.size
        if f.shape[:2] != (h, w):
            raise ParameterError(f"frame is {f.shape[1]}x{f.shape[0]}, the video {w}x{h}", parameter="size")
        if self.kind == "depth16":
            return np.round(np.clip(f, 0.0, 1.0) * 65535.0).astype("<u2")
        if self.in_fmt == "gray":
            return self._padded(np.round(np.clip(f, 0.0, 1.0) * 255.0).astype(np.uint8) if f.dtype != np.uint8 else f)
        f = self._padded(f)
        if self.in_fmt == "yuv420p":
            from .video import to_input

            return to_input(f, "yuv420p")
        return np.ascontiguousarray(f)

    def write_raw(self, data: np.ndarray) -> None:
        try:
            self.proc.stdin.write(memoryview(np.ascontiguousarray(data)).cast("B"))
        except (BrokenPipeError, OSError):
            self._fail()
        self.frames += 1

    def write(self, frame: np.ndarray) -> None:
        self.write_raw(self.encode(frame))

    def _fail(self):
        self.proc.wait()
        self._err.seek(0)
        msg = self._err.read().decode(errors="replace").strip()
        raise ParameterError(f"ffmpeg could not write {self.path.name}: {msg.splitlines()[-1] if msg else 'pipe closed'}",
                             parameter="-o")

    def close(self) -> None:
        if self.proc.stdin and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        rc = self.proc.wait()
        if rc != 0:
            self._fail()
        self._err.close()

    def abort(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        self.proc.kill()
        self.proc.wait()
        self._err.close()
        self.path.unlink(missing_ok=True)


class FolderWriter(FrameWriter):
    """One file per frame, ``000000.png``, ``000001.png``... (6 digits, more past a million, so
    that sorting the names gives frame order), numbered from ``start_index``.

    kinds: ``png16`` (16-bit gray, nearness x 65535, white = near, the same scale for every
    frame: no per-frame normalisation), ``png8`` (8-bit gray), ``rgb`` (PNG/JPEG colour),
    ``rgba`` (PNG with alpha), or any depth format of ``formats.py`` (``fmt``)."""

    def __init__(self, folder: str | os.PathLike, kind: str, *, start_index: int = 0, suffix: str = ".png",
                 fmt: str | None = None, digits: int = 6):
        self.path = Path(folder)
        self.path.mkdir(parents=True, exist_ok=True)
        self.kind, self.index, self.suffix, self.fmt, self.digits = kind, int(start_index), suffix, fmt, digits
        self.frames = 0
        self.written: list[Path] = []

    def next_path(self) -> Path:
        return self.path / f"{self.index:0{self.digits}d}{self.suffix}"

    def write(self, frame: np.ndarray) -> None:
        import cv2

        p = self.next_path()
        if self.kind == "png16":
            q = np.round(np.clip(frame, 0.0, 1.0) * 65535.0).astype(np.uint16)
            cv2.imwrite(str(p), q, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        elif self.kind == "png8":
            q = np.round(np.clip(frame, 0.0, 1.0) * 255.0).astype(np.uint8)
            cv2.imwrite(str(p), q, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        elif self.kind in ("rgb", "rgba"):
            a = np.asarray(frame)
            code = cv2.COLOR_RGBA2BGRA if a.ndim == 3 and a.shape[2] == 4 else cv2.COLOR_RGB2BGR
            bgr = cv2.cvtColor(a, code) if a.ndim == 3 else a
            params = [cv2.IMWRITE_JPEG_QUALITY, 95] if self.suffix in (".jpg", ".jpeg") else \
                [cv2.IMWRITE_PNG_COMPRESSION, 1]
            cv2.imwrite(str(p), bgr, params)
        elif self.kind == "format":
            from .depthmap import DepthMap
            from .formats import write_format

            write_format(DepthMap(data=np.asarray(frame, np.float32), kind="relative_inverse", source="depthcraft-clip"),
                         self.fmt, p)
        else:
            raise ParameterError(f"unknown frame kind {self.kind!r}", parameter="format")
        self.written.append(p)
        self.index += 1
        self.frames += 1


# -- audio and assembly ------------------------------------------------------------------------
_COPY_OK = {  # audio codecs each container takes as they are
    ".mp4": {"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"},
    ".m4v": {"aac", "mp3", "alac", "ac3", "eac3"},
    ".mov": {"aac", "mp3", "alac", "ac3", "eac3", "pcm_s16le", "pcm_s24le"},
    ".mkv": None,  # anything
    ".webm": {"opus", "vorbis"},
    ".avi": {"mp3", "ac3", "pcm_s16le"},
}
_REENCODE = {".webm": ["-c:a", "libopus", "-b:a", "128k"], ".avi": ["-c:a", "libmp3lame", "-b:a", "192k"]}


def audio_args(container_suffix: str, audio_codec: str | None) -> list[str]:
    """ffmpeg audio options to carry ``audio_codec`` into a container: stream copy where the
    container takes the codec, else a re-encode (AAC 192 kb/s; Opus for WebM; MP3 for AVI)."""
    ok = _COPY_OK.get(container_suffix.lower(), set())
    if ok is None or (audio_codec or "").split("(")[0] in ok:
        return ["-c:a", "copy"]
    return _REENCODE.get(container_suffix.lower(), ["-c:a", "aac", "-b:a", "192k"])


def mux_audio(video: str | os.PathLike, clip: str | os.PathLike, out: str | os.PathLike, *,
              info: ClipInfo | None = None, start: int = 0, stop: int | None = None) -> Path:
    """``video`` (no re-encode) with the audio of ``clip`` (frames ``[start, stop)`` of its time
    line) written to ``out``. Without audio in the clip, ``video`` is just moved to ``out``."""
    info = info or probe_clip(clip)
    out = Path(out)
    if not info.has_audio or info.animation:
        if Path(video) != out:
            shutil.move(str(video), out)
        return out
    tmp = out.with_name(f".{out.stem}.mux-{_unique()}{out.suffix}")  # two runs to one output: own temp files
    cmd = [ffmpeg_exe(), "-nostdin", "-y", "-hide_banner", "-loglevel", "error", "-i", str(video)]
    # a VFR clip's output starts at its first video frame, which may come after the container's
    # start (a video stream delayed against the audio): its audio from there
    lead = float(info.source_pts[0] * info.time_base) if info.source_pts else 0.0
    if start > 0 or lead > 0:
        cmd += ["-ss", f"{lead + info.frame_to_seconds(start):.6f}"]
    # the audio of the frames' time span (never -shortest: a short audio track must not cost frames)
    stop = info.frames if stop is None else stop
    cmd += ["-t", f"{info.frame_to_seconds(stop - start):.6f}", "-i", str(clip)]
    cmd += ["-map", "0:v:0", "-map", "1:a:0?", "-c:v", "copy", *audio_args(out.suffix, info.audio_codec),
            *BITEXACT]
    if out.suffix.lower() in (".mp4", ".mov", ".m4v"):
        cmd += ["-movflags", "+faststart"]
    try:
        r = _run(cmd + [str(tmp)])
        if r.returncode != 0 and "-c:a" in cmd and cmd[cmd.index("-c:a") + 1] == "copy":
            # the container refused the copy after all: re-encode
            i = cmd.index("-c:a")
            cmd[i:i + 2] = ["-c:a", "aac", "-b:a", "192k"] if out.suffix.lower() != ".webm" else ["-c:a", "libopus"]
            r = _run(cmd + [str(tmp)])
        if r.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise InputError(f"could not carry the audio over ({r.stderr.strip().splitlines()[-1] if r.stderr.strip() else 'ffmpeg failed'})",
                             path=str(clip))
        os.replace(tmp, out)
    except BaseException:  # Ctrl-C, a failure: no temp file left beside the output
        tmp.unlink(missing_ok=True)
        raise
    if Path(video) != out:
        Path(video).unlink(missing_ok=True)
    return out


def _unique() -> str:
    """A temp-name part no other process or thread uses (two runs may write one output at once)."""
    import uuid

    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


def concat_files(parts: list[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Join segment files (same codec and settings) in order with ffmpeg's concat demuxer, no
    re-encode. One part is just copied. GIFs are the exception: each segment has its own
    palette, and a stream copy kept only the first segment's frames, so their frames are
    joined and given one palette again (their timestamps kept)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    parts = [Path(p) for p in parts]
    if not parts:
        raise ParameterError("nothing to join", parameter="segments")
    if len(parts) == 1:
        shutil.copyfile(parts[0], out)
        return out
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, dir=out.parent) as f:
        for p in parts:
            f.write("file '" + str(p.resolve()).replace("'", "'\\''") + "'\n")
        listing = f.name
    try:
        cmd = [ffmpeg_exe(), "-nostdin", "-y", "-hide_banner", "-loglevel", "error", "-f", "concat", "-safe", "0",
               "-i", listing, "-map", "0:v", "-c", "copy", *BITEXACT]
        if out.suffix.lower() == ".gif":
            cmd[cmd.index("-c"):cmd.index("-c") + 2] = ["-vf", GIF_PALETTE, "-fps_mode", "passthrough"]
        if out.suffix.lower() in (".mp4", ".mov", ".m4v"):
            cmd += ["-movflags", "+faststart"]
        r = _run(cmd + [str(out)])
        if r.returncode != 0:
            raise ParameterError(f"could not join {len(parts)} segments into {out.name}: {r.stderr.strip()[-300:]}",
                                 parameter="segments")
    finally:
        os.unlink(listing)
    return out


def count_frames(path: str | os.PathLike) -> int:
    """Frames that actually decode (a full decode; for tests and checks)."""
    r = _run([ffmpeg_exe(), "-hide_banner", "-i", str(path), "-map", "0:v:0", "-f", "null", "-"])
    frames = re.findall(r"frame=\s*(\d+)", r.stderr)
    return int(frames[-1]) if frames else 0
