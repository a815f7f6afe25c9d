"""The ``parallax`` step: a short video of the photo seen from a moving camera ("2.5D" / "3D
photo" effect), rendered by the view-synthesis engine and streamed to the encoder.

Frames render on all cores (one frame per thread; one thread from 4K up, where x264 is the
bottleneck) while ffmpeg encodes the previous ones; each is converted for the encoder band by
band as it renders, and at most a few frames are in memory at any time, whatever the duration
or size.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import Field, field_validator

from .lib.camera import EasingName, Keyframe, MotionName, frame_times, motion_path, needed_overscan
from .lib.depthmap import nearness as raw_nearness, percentiles
from .lib.errors import ParameterError
from .lib.notices import notice
from .lib.step import Output, StepContext, StepParams, StepSpec
from .lib import forked
from .lib.forked import forked_map
from .lib.video import BIG_FRAME_PIXELS, FrameBuilder, Prepared, VideoWriter, ordered_map, to_input
from .lib.viewsynth import ParallaxRenderer, threads


class ParallaxParams(StepParams):
    motion: MotionName = Field("orbit", description="camera motion: orbit, circle, swing, swing_vertical, dolly, zoom, "
                               "ken_burns, dolly_zoom, or keyframes")
    duration: float = Field(4.0, gt=0, le=600, description="video length, seconds")
    fps: float = Field(30.0, gt=0, le=240, description="frames per second")
    size: str | None = Field(None, description="output size WxH (e.g. 1920x1080); default: the photo's size, made even")
    intensity: float = Field(0.03, ge=0, le=0.2, description="largest parallax between nearest and farthest surface, share of the width")
    dolly: float = Field(0.25, gt=-2, lt=0.9, description="dolly motions: share of the distance to the nearest surface travelled")
    zoom: float = Field(0.15, gt=-0.9, le=3, description="zoom motions: focal length change (0.15 = 15% closer)")
    focus: float = Field(0.5, ge=0, le=1, description="nearness (0 far .. 1 near) of the plane that stays still (orbit pivot, dolly-zoom subject)")
    loop: bool = Field(True, description="seamless loop: the last frame leads back into the first")
    easing: EasingName = Field("ease_in_out", description="easing of one-way motions (loop: false)")
    keyframes: list[Keyframe] = Field(default_factory=list, description="motion 'keyframes': list of {t, x, y, dolly, zoom, focus, pan_x, pan_y, easing}")
    container: Literal["mp4", "webm", "gif"] = Field("mp4", description="mp4 (H.264), webm (VP9) or gif")
    crf: int = Field(18, ge=0, le=51, description="encoder quality, lower is better (H.264 CRF; VP9 gets crf + 13)")
    preset: str = Field("medium", description="x264 preset (ultrafast .. veryslow)")
    pix_fmt: Literal["yuv420p", "yuv444p"] = Field("yuv420p", description="pixel format (yuv420p plays everywhere)")
    supersample: int = Field(1, ge=1, le=3, description="render at this multiple of the size and downscale (anti-aliasing)")
    edge_dilation: int | None = Field(None, ge=0, le=64, description="grow near objects by this many pixels so their edge pixels move with them (default: auto)")
    mask: bool = Field(False, description="also write a video of the filled-in (disoccluded) pixels, white = filled")

    @field_validator("size")
    @classmethod
    def _size(cls, v):
        # one spelling per size (320X240, 0320x0240, 320×240 -> 320x240): the cache key and
        # the manifest hold the parameters as validated, so equal sizes must read the same
        if v is None:
            return v
        w, h = parse_size(v)
        return f"{w}x{h}"

    @field_validator("preset")
    @classmethod
    def _preset(cls, v):
        name = str(v).strip().lower()  # x264 names are lower case; Medium is medium (one cache key)
        if name not in X264_PRESETS:
            raise ValueError(f"preset is one of {', '.join(X264_PRESETS)}")
        return name


X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo")


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in str(text).strip().lower().replace("×", "x").split("x"))
    except ValueError:
        raise ParameterError(f"size {text!r} is not WxH, e.g. 1920x1080", parameter="size") from None
    if w < 16 or h < 16 or w > 16384 or h > 16384:
        raise ParameterError(f"size {w}x{h} is out of range (16..16384 per side)", parameter="size")
    return w, h


def output_size(p: ParallaxParams, photo_shape: tuple[int, ...]) -> tuple[int, int]:
    if p.size:
        w, h = parse_size(p.size)
    else:
        h, w = photo_shape[:2]
    if p.container != "gif" and p.pix_fmt == "yuv420p" and (w % 2 or h % 2):
        from .lib.notices import notice

        ew, eh = w - w % 2, h - h % 2  # 4:2:0 needs even sides
        notice(f"parallax: video size {w}x{h} trimmed to {ew}x{eh} (yuv420p needs even sides; "
               "give an even --size or pix_fmt yuv444p to keep it)")
        w, h = ew, eh
    return w, h


def auto_edge_dilation(width: int, exact: bool) -> int:
    """Near-object growth for estimated depth (its edges are soft and a little off): about a
    pixel per 600 px of width; none for exact disparity."""
    return 0 if exact else max(1, round(width / 600))


def max_parallax(poses, size: tuple[int, int]) -> float:
    """The largest displacement (px) of the nearest surface relative to the farthest, over poses."""
    half_diag = 0.5 * math.hypot(*size)
    best = 0.0
    for p in poses:
        r = p.zoom / max(1.0 - p.z, 1e-3)
        best = max(best, math.hypot(p.x, p.y) * r + abs(r - p.zoom) * half_diag)
    return best


def rendered_frames(renderer: ParallaxRenderer, poses: list, size: tuple[int, int], pix_fmt: str, *,
                    workers: int, ahead: int = 3, mask: bool = False, supersample: int = 1) -> Iterator:
    """The frames of ``poses`` in the encoder's input format, in order: ``(frame, mask,
    filled)`` with ``frame`` what :meth:`VideoWriter.write` takes (``size``, ``pix_fmt``; its
    bytes in ``.data``), ``mask`` the filled-in pixels as one too (``None`` unless ``mask``)
    and ``filled`` their count.

    4:2:0 frames at the output size render straight into their planes, on ``workers`` forked
    processes where the platform has them (:mod:`.lib.forked`: threads share one GIL, 62-64
    against 70 frames/s at 1080p on 2 cores); otherwise on ``workers`` threads, at most
    ``ahead`` frames in flight."""
    probe = FrameBuilder(size, pix_fmt)
    into_planes = supersample == 1 and probe.planes is not None
    if into_planes:
        # every frame renders into planes: what they read is made once (before any fork, so
        # that workers share it), and the RGBA stack is not needed any more
        renderer.prepare_planes(keep_rgba=False)
    if into_planes and workers > 1 and forked.available():
        shapes = [(probe.data.shape, np.uint8)] * (2 if mask else 1)

        def into(pose, outs):  # in a worker process
            _, filled = renderer.render(pose, planes=FrameBuilder(size, pix_fmt, data=outs[0]).planes)
            if mask:
                outs[1][:] = to_input(filled, pix_fmt)
            return np.count_nonzero(filled)

        produced = 0
        try:
            with contextlib.closing(forked_map(into, poses, shapes=shapes, workers=workers)) as results:
                for outs, nfilled in results:
                    # copies: the shared slots take the next frames
                    produced += 1
                    yield Prepared(outs[0].copy()), Prepared(outs[1].copy()) if mask else None, nfilled
            return
        except forked.ForkFailed as e:
            if produced:
                raise
            notice(f"{e}: rendering on threads instead")

    def one(pose):  # on a render thread
        if into_planes:
            frame = FrameBuilder(size, pix_fmt)
            _, filled = renderer.render(pose, planes=frame.planes)
        elif supersample == 1:  # convert for the encoder as each band is done
            frame = FrameBuilder(size, pix_fmt)
            _, filled = renderer.render(pose, band_sink=frame.put)
        else:
            big_frame, filled = renderer.render(pose, channels=4)
            frame = Prepared(to_input(cv2.resize(big_frame, size, interpolation=cv2.INTER_AREA), pix_fmt))
            filled = cv2.resize(filled.view(np.uint8), size, interpolation=cv2.INTER_NEAREST).view(bool)
        return frame, Prepared(to_input(filled, pix_fmt)) if mask else None, np.count_nonzero(filled)

    yield from ordered_map(one, poses, workers=workers, ahead=ahead)


def render_video(photo: np.ndarray, nearness: np.ndarray, p: ParallaxParams, path: Path, *,
                 exact: bool = False, mask_path: Path | None = None, progress=None) -> dict:
    """Render and encode the video; returns facts about it (frames, size, overscan)."""
    size = output_size(p, photo.shape)
    n = max(1, int(round(p.duration * p.fps)))
    path_fn = motion_path(p.motion, width=size[0], intensity=p.intensity, dolly=p.dolly, zoom=p.zoom,
                          focus=p.focus, loop=p.loop, easing=p.easing, keyframes=p.keyframes)
    poses = [path_fn(t) for t in frame_times(n, p.loop)]
    over = needed_overscan(poses, size)
    ss = int(p.supersample)
    rsize = (size[0] * ss, size[1] * ss)
    if ss > 1:
        from .lib.viewsynth import Pose

        poses = [Pose(x=q.x * ss, y=q.y * ss, z=q.z, zoom=q.zoom, focus=q.focus, pan_x=q.pan_x * ss,
                      pan_y=q.pan_y * ss) for q in poses]
    dil = auto_edge_dilation(photo.shape[1], exact) if p.edge_dilation is None else p.edge_dilation
    kw = dict(crf=p.crf, preset=p.preset, pix_fmt=p.pix_fmt)
    filled_px = 0
    # Frames in flight (rendering, rendered, queued for ffmpeg). From 4K up x264 is the
    # bottleneck by far (~0.3 CPU-s a frame against ~0.1 to render one), so one render thread
    # keeps up and each further one would only hold another ~80 MB of frame temporaries.
    big = size[0] * size[1] >= BIG_FRAME_PIXELS
    workers, ahead, queued = (1, 1, 1) if big else (threads(), 3, 2)
    # the encoders start first: ffmpeg loads while the renderer is set up
    mask_writer = VideoWriter(mask_path, size, p.fps, p.container, queue_frames=queued, **kw) if mask_path else None
    # Frames render in parallel, one per core: OpenCV's own thread pool on top only adds
    # hand-offs and spinning workers that take CPU from the encoder (process-wide setting,
    # restored afterwards).
    cv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with VideoWriter(path, size, p.fps, p.container, queue_frames=queued, **kw) as writer:
            renderer = ParallaxRenderer(photo, nearness, rsize, overscan=over, max_parallax=max_parallax(poses, rsize),
                                        edge_dilation=dil, workers=1)
            frames = rendered_frames(renderer, poses, size, writer.input_pix_fmt, workers=workers, ahead=ahead,
                                     mask=mask_writer is not None, supersample=ss)
            with contextlib.closing(frames):
                for i, (frame, mask, nfilled) in enumerate(frames):
                    writer.write(frame)
                    if mask_writer is not None:
                        mask_writer.write(mask)
                    filled_px += nfilled
                    if progress is not None:
                        progress(i + 1, n)
    finally:
        cv2.setNumThreads(cv_threads)
        if mask_writer is not None:
            mask_writer.close()
    filled_share = filled_px / (n * size[0] * size[1])
    return {"frames": n, "width": size[0], "height": size[1], "fps": p.fps, "motion": p.motion,
            "overscan": round(over, 4), "filled_share": round(filled_share, 5), "container": p.container}


def _nearness01(dm) -> np.ndarray:
    """``normalized_nearness(dm, robust=0.002)`` (float32 0..1) in one float32 copy: the general
    function works in float64 (its percentiles are float64), twice the time on a 3 MP map, and
    this runs before the first frame."""
    a = np.array(raw_nearness(dm), np.float32)  # a copy: it may be the map itself
    lo, hi = percentiles(a, [0.2, 99.8])
    if hi - lo < 1e-12:
        return np.zeros_like(a)
    a -= np.float32(lo)
    a *= np.float32(1.0 / (hi - lo))
    return np.clip(a, 0.0, 1.0, out=a)


def run(ctx: StepContext, p: ParallaxParams) -> dict[str, Output]:
    from .lib.images import over_background

    photo = over_background(*ctx.image_alpha())  # a video has no alpha: over the stated background (white)
    dm = ctx.depth()
    if dm.shape != photo.shape[:2]:
        from .lib.depthmap import resize_depth

        dm = resize_depth(dm, (photo.shape[1], photo.shape[0]))
    nearness = _nearness01(dm)
    suffix = "." + p.container
    main = ctx.out("main", suffix)
    mask = ctx.out("mask", suffix) if p.mask else None
    info = render_video(photo, nearness, p, main, exact=dm.kind == "disparity", mask_path=mask, progress=ctx.tick)
    outs = {"main": Output(main, "video", info)}
    if mask is not None:
        outs["mask"] = Output(mask, "video", {**info, "content": "filled-in pixels, white"})
    return outs


def clip_frame(rgb: np.ndarray, near: np.ndarray, p: ParallaxParams, state: dict) -> dict[str, np.ndarray]:
    """One frame of a clip (``depthcraft.tasks.clips``): the camera moves along the motion path
    while the clip plays, the path spanning the whole clip (frame ``i`` of ``N`` is at time
    ``i / N`` of the path); each frame is rendered from its own photo and stable nearness. The
    output has the clip's frame rate and frame count (``duration``/``fps`` are the clip's)."""
    info, i = state["info"], state["index"]
    if "poses" not in state:
        size = output_size(p, rgb.shape)
        n = state["frames_total"]
        path_fn = motion_path(p.motion, width=size[0], intensity=p.intensity, dolly=p.dolly, zoom=p.zoom,
                              focus=p.focus, loop=p.loop, easing=p.easing, keyframes=p.keyframes)
        state["poses"] = [path_fn(t) for t in frame_times(n, p.loop)]
        state["size"] = size
        state["over"] = needed_overscan(state["poses"], size)
        state["maxpar"] = max_parallax(state["poses"], size)
    del info
    size = state["size"]
    dil = auto_edge_dilation(rgb.shape[1], False) if p.edge_dilation is None else p.edge_dilation
    renderer = ParallaxRenderer(rgb, near, size, overscan=state["over"], max_parallax=state["maxpar"],
                                edge_dilation=dil, workers=1)
    frame, _ = renderer.render(state["poses"][min(i, len(state["poses"]) - 1)])
    return {"main": frame}


def params_for_output(path) -> dict:
    """``-o x.mp4`` / ``x.webm`` / ``x.gif`` picks the container."""
    s = Path(path).suffix.lower().lstrip(".")
    if s not in ("mp4", "webm", "gif"):
        raise ParameterError(f"cannot tell a video format from {repr('.' + s) if s else 'a file without a suffix'}; use .mp4, .webm or .gif", parameter="-o")
    return {"container": s}


def main_suffixes(p: ParallaxParams) -> tuple[str, ...]:
    return ("." + p.container,)


SIDEWAYS = ("orbit", "circle", "swing", "swing_vertical", "dolly", "ken_burns")  # motions that read intensity
DOLLY = ("dolly", "ken_burns", "dolly_zoom")  # ... dolly
ZOOM = ("zoom", "ken_burns")  # ... zoom (dolly_zoom's zoom follows from dolly and focus)


def inert(p: ParallaxParams, given: set) -> list:
    """Parameters with no effect given the others (refused when written: :mod:`.lib.inert`);
    which motion reads which parameter: :func:`depthcraft.tasks.lib.camera.motion_path`."""
    from .lib.inert import Inert

    out = []
    if p.motion not in SIDEWAYS:
        out.append(Inert("intensity", "motion", f"intensity sets the camera travel of {', '.join(SIDEWAYS)}"))
    if p.motion not in DOLLY:
        out.append(Inert("dolly", "motion", f"dolly is read by the motions {', '.join(DOLLY)}"))
    if p.motion not in ZOOM:
        out.append(Inert("zoom", "motion", f"zoom is read by the motions {', '.join(ZOOM)}"))
    if p.motion == "zoom":  # (no sideways move: the pivot's offset is x, y times a factor: 0)
        out.append(Inert("focus", "motion", "focus is the plane that stays still when the camera moves; "
                         "zoom only changes the focal length"))
    if p.motion == "keyframes":
        out.append(Inert("focus", "motion", "each keyframe has its own focus"))
        out.append(Inert("easing", "motion", "each keyframe has its own easing"))
    elif p.loop:
        out.append(Inert("easing", "loop", "easing shapes one-way motions; a loop goes out and back smoothly",
                         hint="leave out {easing}, or make the motion one-way (loop false; --no-loop)"))
    if p.motion != "keyframes":
        out.append(Inert("keyframes", "motion", "keyframes are the path of motion keyframes only",
                         hint="leave out {keyframes}, or set {motion} keyframes"))
    if p.container == "gif":
        out.append(Inert("crf", "container", "a GIF has no quality setting (one palette, dithered)"))
    if p.container != "mp4":
        out.append(Inert("preset", "container", "preset is x264's (container mp4)"))
        out.append(Inert("pix_fmt", "container", "pix_fmt is x264's (container mp4); webm is always yuv420p, "
                         "gif a palette"))
    return out


SPEC = StepSpec(kind="parallax", version="6", params=ParallaxParams, run=run, params_for_output=params_for_output,
                output_params=("container",), main_suffixes=main_suffixes,
                clip_frame=clip_frame, inert=inert,
                summary="render a parallax video (orbit, dolly, zoom, swing, Ken Burns, dolly-zoom, keyframes)")
