"""Steps on clips: a step kind run over frames ``[start, stop)`` of a clip, one segment at a time.

The depth of every frame comes from the run's provider and goes through the temporal
:class:`~depthcraft.tasks.lib.temporal.Stabilizer`; a segment first warms the stabiliser up on the
``warmup`` frames before it (estimated, not written), so segments processed independently (task
runs, Dask workers) join without a visible jump. Each step module renders one frame from the photo
and its stable nearness with its ``SPEC.clip_frame`` hook; ``estimate`` writes the depth itself.

Output targets (what ``-o`` asks for; see docs/video.md):
- a video file (``.mp4 .mov .m4v .mkv .webm .avi .gif``): H.264 (VP9 for WebM) at the clip's exact
  frame rate, the clip's audio muxed in; for ``estimate`` 8-bit gray H.264, or 16-bit FFV1 in
  ``.mkv``; a 16-bit or float format beside it (``export``'s ``png16``, ``npy``...) in its own
  16-bit FFV1 ``.mkv`` (``out.mp4`` -> ``out-png16.mkv``, :func:`output_suffix`);
- a folder (a path ending in ``/``, an existing folder, or one without a suffix): one file per
  frame, ``000000.png``..., named by frame index so that sorting gives frame order.

This module is the engine behind one-shot commands on clips and the flow layer's segments;
it imports the library, the providers and the step catalog (never a step module directly).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .catalog import get_step
from .lib.clip import (VIDEO_OUTPUT_SUFFIXES, ClipInfo, FfmpegWriter, FolderWriter, _unique, concat_files, mux_audio,
                       probe_clip, read_frames)
from .lib.errors import ParameterError
from .lib.outputs import KIND_OF, refuse_input
from .lib.store import atomic_copy
from .lib.temporal import Stabilizer, TemporalParams

log = logging.getLogger(__name__)

# stabiliser warm-up before a segment: history 0.88 ** 24 < 5 % of the start state (the scale's
# leak forgets faster: 0.8 ** 24 < 1 %)
WARMUP_FRAMES = 24
# the engine's code version, in every segment key (flows/segments.py): bump when a clip's output
# changes for the same step parameters. 2: fixed encoder threads; 3: clip state (focus pull,
# depth planes) warmed up before a segment and reset at cuts; 4: stabiliser state at 640
# columns, history 0.88, leak 0.2, finer keyframe flow, warm-up 24; 5: export's 16-bit formats
# beside an 8-bit video in their own .mkv (output_suffix), depth GIFs piped as gray; 6: a
# variable-frame-rate clip at the rate of its short steps, each source frame kept at its time
VERSION = "6"
# 2D-to-3D and the other rendering steps estimate depth on every Nth frame and carry it along the
# optical flow in between (estimate: every frame); see docs/video.md for the measured effect
RENDER_KEYFRAME_INTERVAL = 24
# steps whose frame hook takes the nearness at any size (it resamples to what it renders)
ANY_SIZE_DEPTH = {"stereo"}
# Encoder threads of every segment file. x264's output depends on its thread count (frame
# threads), and "auto" counts the CPUs the process sees (affinity, cgroup quota, the host of a
# Dask worker): a fixed count makes the same frames the same bytes on every runner and host.
ENCODER_THREADS = 4


@dataclass
class SegmentResult:
    """What :func:`process_clip_segment` produced: ``files['main']`` is a segment video file
    (no audio) or a folder of frame files numbered by frame index; more named files for steps
    with several outputs (e.g. ``right`` for ``stereo --layout lr``)."""

    kind: str
    start: int
    stop: int
    files: dict[str, Path]
    frames: int
    seconds: float
    target: str = ".mp4"
    meta: dict = field(default_factory=dict)


def output_target(out: str | os.PathLike) -> str:
    """``'folder'`` or the video suffix (``.mp4``...) that an ``-o`` path asks for."""
    s = str(out)
    p = Path(s)
    if s.endswith(("/", os.sep)) or p.is_dir():
        return "folder"
    if not p.suffix and (p.name.endswith(".") or (p.name.startswith(".") and "." + p.name.lower().lstrip(".") in KIND_OF)):
        # `-o .png` / `-o frames.`: named like a file, not a folder (pathlib sees no suffix)
        raise ParameterError(f"{p.name}: a file suffix without a name, or a name ending in '.'; a clip's output is "
                             "a video file (e.g. out.mp4) or a folder (end the path with /)", parameter="-o")
    if not p.suffix:
        return "folder"
    suf = p.suffix.lower()
    if suf in VIDEO_OUTPUT_SUFFIXES:
        return suf
    raise ParameterError(f"{p.name}: a clip's output is a video file ({', '.join(sorted(VIDEO_OUTPUT_SUFFIXES))}) or a "
                         f"folder (end the path with /), not {suf!r}", parameter="-o")


DEPTH_KINDS = ("estimate", "refine", "export")
# depth formats a video carries: 8-bit gray in any container, 16-bit (and float) formats as
# 16-bit FFV1 in .mkv (what default_suffix picks for them); the others only as frame files
DEEP_FORMATS = ("png16", "npy", "pfm", "npz", "raw", "tiff", "exr")  # more than 8 bits: 16-bit FFV1 .mkv
VIDEO_DEPTH = {"grayscale": None, **{f: (".mkv",) for f in DEEP_FORMATS}}


def output_format(kind: str, name: str, params: Any) -> str | None:
    """The depth format of output ``name`` of a ``kind`` clip step (None: not a depth output):
    ``export`` writes ``main`` in its first format and each other format under its own name;
    ``estimate``/``refine`` write ``main`` in their ``format``."""
    if kind == "export":
        formats = list(getattr(params, "formats", None) or ["grayscale"])
        return formats[0] if name == "main" else name
    if kind in DEPTH_KINDS and name == "main":
        return getattr(params, "format", None) or "grayscale"
    return None


def output_suffix(kind: str, name: str, target: str, params: Any) -> str:
    """The file type of output ``name`` of a clip step: ``target`` (``'folder'`` or the ``-o``
    video's suffix), except that a depth format keeping more than 8 bits (:data:`DEEP_FORMATS`:
    ``png16``, ``npy``...) beside the main output of a video goes into a 16-bit FFV1 ``.mkv``
    (``out.mp4`` -> ``out-png16.mkv``): a file named for 16 bits holds 16 bits. The main output
    keeps the suffix the user gave (a deep format there is refused by :func:`target_conflict`)."""
    if target == "folder" or name == "main":
        return target
    return ".mkv" if output_format(kind, name, params) in DEEP_FORMATS else target


def target_conflict(kind: str, target: str, params: Any, explicit: set[str], *,
                    images: bool = True) -> tuple[str, str] | None:
    """``(parameter, why)`` when a clip output ``target`` (``'folder'`` or a video suffix,
    :func:`output_target`) cannot hold what the explicitly given parameters ask for, else None.
    A folder holds one file per frame in any format. ``images``: also refuse an image file type
    (``format: jpg``) for a video (one-shot commands; a recipe's ``format`` serves its photos too)."""
    if kind == "stereo" and "layout" in explicit and getattr(params, "layout", None) == "mpo":
        return "layout", "mpo is a stereo photo (a JPEG pair); a clip's 3D layouts are sbs, hsbs, tb, htb, cross, anaglyph, lr"
    if target == "folder":
        return None
    if kind in DEPTH_KINDS:
        name = "formats" if kind == "export" else "format"
        if name not in explicit:
            return None
        # the main output (export: its first format) must fit the -o type; export's other formats
        # are files of their own beside it, a 16-bit one in its own .mkv (output_suffix), given
        # explicitly or by default alike
        for i, fmt in enumerate(dict.fromkeys(params.formats if kind == "export" else [params.format])):
            if kind == "export" and fmt == "preview":
                continue  # a colour-mapped video
            if fmt not in VIDEO_DEPTH:
                return name, f"{fmt} has no video form ({target}); a folder of frames holds one {fmt} file per frame"
            ok = VIDEO_DEPTH[fmt]
            if ok is not None and target not in ok and i == 0:
                return name, (f"{fmt} keeps more than 8 bits, which a {target} video cannot; "
                              f"{' or '.join(ok)} (16-bit FFV1) or a folder of frames can")
        return None
    if kind == "parallax" and "container" in explicit and "." + params.container != target:
        return "container", f"{params.container} writes .{params.container}, not {target}"
    if images and "format" in explicit and getattr(params, "format", None) in ("png", "jpg"):
        return "format", (f"{params.format} is the file type of photos and of frame folders; a {target} video's "
                          "frames are encoded by the video")
    return None


def _temporal_params(params: Any, kind: str) -> TemporalParams:
    tp = TemporalParams(enabled=bool(getattr(params, "temporal", True)))
    if kind != "estimate":
        tp.keyframe_interval = RENDER_KEYFRAME_INTERVAL
    tp.full_size = kind not in ANY_SIZE_DEPTH
    ki = getattr(params, "keyframe_interval", None)
    if ki:
        tp.keyframe_interval = int(ki)
    return tp


def remote_calls_notice(name: str, kind: str, params: Any, provider: str, frames: int) -> int:
    """Say, once, how many frames of a clip a billed remote provider (each::sense: one chat per
    frame) will be asked for; returns that count (0 for a local provider). The count follows the
    keyframes (``keyframe_interval``: every Nth frame and after each cut; estimate's default is
    every frame), so it is "about": cuts and segment warm-ups add a few."""
    from .lib.notices import notice

    if not provider.startswith("eachsense") or frames <= 0:
        return 0
    tp = _temporal_params(params, kind)
    every = max(1, int(tp.keyframe_interval)) if tp.enabled else 1
    n = -(-int(frames) // every)
    hint = ("; keyframe_interval N (--keyframe-interval N) asks for every Nth frame only"
            if every == 1 and tp.enabled else "")
    notice(f"{name}: {kind} asks each::sense for the depth of about {n} of its {frames} frames, "
           f"one billed call each{hint}")
    return n


_PROVIDERS: dict = {}


def _estimate(provider_name: str, mode: str, rgb: np.ndarray, options: dict | None = None) -> np.ndarray:
    """Nearness 0..1 (larger = nearer) of a frame from the provider (also run in worker processes);
    ``options``: the recipe's ``provider_options`` (e.g. onnx ``upsample``), as photos get them."""
    from .lib.depthmap import normalized_nearness
    from .providers import DepthRequest, get_provider

    prov = _PROVIDERS.get(provider_name)
    if prov is None:
        prov = _PROVIDERS[provider_name] = get_provider(provider_name)
    dm = prov.estimate(DepthRequest(image=np.ascontiguousarray(rgb), mode=mode, use_case="general",
                                    options=dict(options or {})))
    n = normalized_nearness(dm)
    if n.shape != rgb.shape[:2]:
        import cv2

        n = cv2.resize(n, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
    return n


def _depth_fn(provider_name: str, mode: str, options: dict | None = None) -> Callable[[np.ndarray], np.ndarray]:
    return lambda rgb: _estimate(provider_name, mode, rgb, options)


def estimate_workers() -> int:
    """Processes that estimate frames ahead when every frame needs an estimate: one per core
    (at most 4), ``DEPTHCRAFT_CLIP_WORKERS`` to override; 1 = in this process."""
    try:
        return max(1, int(os.environ["DEPTHCRAFT_CLIP_WORKERS"]))
    except (KeyError, ValueError):
        return max(1, min(4, os.cpu_count() or 1))


def _prefetched(frames, provider: str, mode: str, workers: int, ahead: int, options: dict | None = None):
    """``(frame, nearness)`` in order, the estimates computed ``ahead`` frames in advance on
    ``workers`` processes (bounded: at most ``ahead`` frames in flight). Where worker processes
    cannot start (a daemonic Dask worker, a ``__main__`` that cannot be re-imported) the
    estimates are computed here instead: same results, one core."""
    import multiprocessing as mp
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    ex = None
    if not mp.current_process().daemon:
        try:
            ex = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"))
        except (OSError, ValueError, RuntimeError):
            ex = None
    broken = ex is None

    def submit(f):
        if broken:
            return None
        try:
            return ex.submit(_estimate, provider, mode, f, options)
        except (BrokenProcessPool, RuntimeError):
            return None

    def result(f, fut):
        nonlocal broken
        if fut is not None:
            try:
                return fut.result()
            except (BrokenProcessPool, RuntimeError):
                broken = True
        return _estimate(provider, mode, f, options)

    pending: deque = deque()
    try:
        for f in frames:
            f = np.ascontiguousarray(f)
            pending.append((f, submit(f)))
            if len(pending) >= ahead:
                g, fut = pending.popleft()
                yield g, result(g, fut)
        while pending:
            g, fut = pending.popleft()
            yield g, result(g, fut)
    finally:
        if ex is not None:
            ex.shutdown(wait=not broken, cancel_futures=True)


def _writer(kind: str, target: str, path: Path, info: ClipInfo, *, name: str, start: int, params: Any,
            size: tuple[int, int], depth: bool, fmt: str | None = None):
    """The writer of one output of a segment: ``depth`` outputs (float nearness) as depth videos
    or per-frame depth files in ``fmt`` (default: the step's ``format``), others as images."""
    if depth:
        fmt = fmt or getattr(params, "format", "grayscale")
        if target == "folder":
            if fmt == "png16":
                return FolderWriter(path, "png16", start_index=start)
            if fmt == "grayscale":
                return FolderWriter(path, "png8", start_index=start)
            from .lib.formats import SUFFIX

            return FolderWriter(path, "format", start_index=start, suffix=SUFFIX[fmt], fmt=fmt)
        # in .mkv: 16-bit FFV1 for the main output (what `-o d.mkv` means) and for a format
        # keeping more than 8 bits; an 8-bit format (`out-grayscale.mkv`) stays 8-bit gray
        sixteen = path.suffix.lower() == ".mkv" and (name == "main" or fmt in DEEP_FORMATS)
        return FfmpegWriter(path, "depth16" if sixteen else "depth8", size, info.rate, threads=ENCODER_THREADS,
                            notice=(start == 0), label=_label(info, kind, name))
    if target == "folder":
        ext = "." + str(getattr(params, "format", "png") or "png")
        return FolderWriter(path, "rgb", start_index=start, suffix=ext if ext in (".png", ".jpg") else ".png")
    return FfmpegWriter(path, "rgb", size, info.rate, notice=(start == 0), threads=ENCODER_THREADS,
                        label=_label(info, kind, name))


def _label(info: ClipInfo, kind: str, name: str) -> str:
    """An output in a notice: the user's clip and the step (once per clip: the first segment
    says it), never a segment's temporary file."""
    clip = info.name or Path(info.path).name
    return f"{clip} ({kind} video{'' if name == 'main' else ', ' + name})"


def process_clip_segment(kind: str, clip: str | os.PathLike, start: int, stop: int, params: Any,
                         workdir: str | os.PathLike, *, target: str = ".mp4", provider: str = "classic",
                         mode: str = "max", warmup: int = WARMUP_FRAMES, info: ClipInfo | None = None,
                         depth: "SegmentResult | str | os.PathLike | None" = None, keep_depth: bool = False,
                         workers: int = 1, progress: Callable[[int, int], None] | None = None,
                         provider_options: dict | None = None) -> SegmentResult:
    """Run step ``kind`` on frames ``[start, stop)`` of ``clip`` (see the module docstring).

    ``params``: the step's params model (or a dict of its parameters); ``target``: ``'folder'`` or
    a video suffix (:func:`output_target`); ``workdir``: where the segment's files go (created).
    The stabiliser is warmed up on frames ``[max(0, start - warmup), start)``. ``progress(done,
    total)`` is called per written frame. ``depth``: an upstream segment (its ``depth`` file, else its
    ``main``) or a depth video/folder holding the nearness of exactly these frames, used instead of
    estimating (no warm-up then); ``keep_depth``: also write ``files['depth']``, the nearness as
    16-bit FFV1 (for the next step of a chain); ``workers`` > 1: estimate ahead on that many
    spawned processes when every frame needs an estimate (for a command-line process; the
    default 1 suits segments already run in parallel, and scripts without a ``__main__`` guard).
    ``provider_options``: the recipe's ``provider_options``, given to every frame's estimate.
    Raises :class:`InputError` for a bad clip and
    :class:`ParameterError` for bad parameters."""
    t0 = time.time()
    spec = get_step(kind)
    if isinstance(params, dict):
        params = spec.params.model_validate(params)
    info = info or probe_clip(clip)
    stop = min(int(stop), info.frames)
    start = max(0, int(start))
    if stop <= start:
        raise ParameterError(f"empty frame range [{start}, {stop}) of a {info.frames}-frame clip", parameter="frames")
    frame_fn = getattr(spec, "clip_frame", None)
    warm_fn = getattr(spec, "clip_warm", None)
    if kind != "estimate" and frame_fn is None:
        raise ParameterError(f"{kind} does not take clips", parameter="uses")
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    stab = Stabilizer(_temporal_params(params, kind))
    upstream = None
    if depth is not None:
        src = depth.files.get("depth") or depth.files["main"] if isinstance(depth, SegmentResult) else Path(depth)
        from .lib.clip import read_depth_frames

        upstream = read_depth_frames(src, start if Path(src).is_dir() else 0, stop if Path(src).is_dir() else stop - start)
    estimator = _depth_fn(provider, mode, provider_options) if upstream is None else None
    w0 = max(0, start - max(0, int(warmup))) if stab.p.enabled and upstream is None else start
    writers: dict[str, Any] = {}
    state: dict = {"info": info, "frames_total": info.frames}
    done = resets = 0
    try:
        source = read_frames(clip, w0, stop, info=info)
        every_frame = not stab.p.enabled or stab.p.keyframe_interval <= 1
        if upstream is None and every_frame and workers > 1 and stop - w0 > 2 * workers:
            source = _prefetched(source, provider, mode, workers, ahead=2 * workers, options=provider_options)
        for i, item in enumerate(source, start=w0):
            if isinstance(item, tuple):
                rgb, est = item
                near = stab.step(rgb, est)
            else:
                rgb = item
                if upstream is not None:
                    near = next(upstream)
                else:
                    near = stab.step(rgb, lambda rgb=rgb: estimator(rgb))
            state["cut"] = stab.resets != resets
            resets = stab.resets
            if i < start:
                if warm_fn is not None:
                    warm_fn(rgb, near, params, state)
                continue
            if keep_depth:
                if "depth" not in writers:
                    writers["depth"] = FfmpegWriter(work / f"depth-{start:06d}-{stop:06d}.mkv", "depth16",
                                                    (near.shape[1], near.shape[0]), info.rate, threads=ENCODER_THREADS)
                writers["depth"].write(near)
            if kind == "estimate":
                outs = {"main": near}
            else:
                state["index"] = i
                outs = frame_fn(rgb, near, params, state)
            for name, img in outs.items():
                wr = writers.get(name)
                is_depth = img.dtype != np.uint8
                if wr is None:
                    sfx = "" if target == "folder" else output_suffix(kind, name, target, params)
                    fname = f"{name}-{start:06d}-{stop:06d}{sfx}"
                    size = (img.shape[1], img.shape[0])
                    wr = writers[name] = _writer(kind, target, work / fname, info, name=name, start=start,
                                                 params=params, size=size, depth=is_depth,
                                                 fmt=state.get("formats", {}).get(name))
                if not is_depth and img.ndim == 3 and img.shape[2] == 4 and target != "folder":
                    img = (img[..., :3].astype(np.uint16) * img[..., 3:4] // 255).astype(np.uint8)  # over black
                wr.write(img)
            done += 1
            if progress is not None:
                progress(done, stop - start)
    except BaseException:
        for wr in writers.values():
            wr.abort()
        raise
    for wr in writers.values():
        wr.close()
    if done != stop - start:
        raise ParameterError(f"{Path(clip).name}: {done} of {stop - start} frames processed", parameter="frames")
    return SegmentResult(kind=kind, start=start, stop=stop, files={n: w.path for n, w in writers.items()},
                         frames=done, seconds=round(time.time() - t0, 3), target=target,
                         meta={"resets": stab.resets, **state.get("meta", {})})


def planned_outputs(kind: str, params: Any) -> list[str]:
    """The names of the outputs a clip step will write, known before any frame is made (so that
    a one-shot command refuses an output that is its input before any work): ``export`` one per
    format (``main`` the first), ``stereo`` with the ``lr`` layout ``main`` and ``right``,
    ``layers`` ``main`` and up to ``count`` planes (``layer_i``; depths given: one per depth);
    the rest ``main``."""
    if kind == "export":
        return ["main" if i == 0 else f for i, f in enumerate(dict.fromkeys(getattr(params, "formats", None) or []))] or ["main"]
    if kind == "stereo" and getattr(params, "layout", None) == "lr" and getattr(params, "eye", "both") == "both":
        return ["main", "right"]
    if kind == "layers":
        depths = getattr(params, "depths", None)
        k = len(depths) if depths else int(getattr(params, "count", 1) or 1)
        return ["main", *(f"layer_{i}" for i in range(max(k, 1)))]
    return ["main"]


def output_paths(kind: str, out: Path, names: list[str], params: Any, target: str | None = None) -> dict[str, Path]:
    """Where each named output of a clip goes: ``main`` at ``out`` (for ``stereo`` renamed so that
    3D players detect the layout, see :func:`stereo_name`), the others beside it. ``target``:
    :func:`output_target` of the ``-o`` as given (a Path has lost its trailing ``/``)."""
    target = target or output_target(out)
    paths = {}
    for n in names:
        if n == "main":
            p = out
            # (one eye alone is a plain 2D video: a layout tag made 3D players split it in two)
            if kind == "stereo" and target != "folder" and getattr(params, "eye", "both") == "both":
                p = stereo_name(out, getattr(params, "layout", "sbs"), eye="left" if getattr(params, "layout", "") == "lr" else None)
        elif kind == "stereo" and n == "right" and target != "folder":
            p = stereo_name(out, "lr", eye="right")
        elif target == "folder":
            p = Path(str(out).rstrip("/" + os.sep) + f"-{n}")
        else:  # a 16-bit format beside an 8-bit video: its own .mkv (output_suffix)
            sfx = output_suffix(kind, n, target, params)
            p = out.with_name(f"{out.stem}-{n}{out.suffix if sfx == target else sfx}")
        paths[n] = p
    return paths


# Tags that 3D video players read in file names (docs/video.md: DeoVR, Skybox, Kodi, Plex, Pigasus...)
STEREO_TAGS = {"sbs": "_SBS_LR", "hsbs": "_3dh_LR", "tb": "_TB", "htb": "_3dv_TB", "cross": "_SBS_RL",
               "anaglyph": "_anaglyph"}
KODI_TAGS = {"sbs": ".3D.SBS", "hsbs": ".3D.HSBS", "tb": ".3D.TAB", "htb": ".3D.HTAB"}


def stereo_name(out: Path, layout: str, *, eye: str | None = None) -> Path:
    """``out`` with the layout tag players detect, unless the name already carries one: e.g.
    ``movie.mp4`` + hsbs -> ``movie_3dh_LR.mp4``; lr -> ``movie_L.mp4`` and ``movie_R.mp4``."""
    stem, suf = out.stem, out.suffix
    low = stem.lower()
    if layout == "lr":
        return out.with_name(f"{stem}_{'L' if eye == 'left' else 'R'}{suf}")
    tag = STEREO_TAGS.get(layout)
    if not tag:
        return out
    known = ("_sbs", "_3dh", "_tb", "_3dv", "_lr", "_rl", "_ou", "_anaglyph", ".3d.", "-sbs", "-tb", "half-sbs",
             "_hsbs", "_htb", "_180", "_360")
    if any(k in low for k in known):
        return out
    return out.with_name(f"{stem}{tag}{suf}")


def assemble(kind: str, segments: list[SegmentResult], clip: str | os.PathLike, out: str | os.PathLike,
             params: Any = None, *, info: ClipInfo | None = None,
             writing: Callable[[], Any] | None = None) -> list[Path]:
    """Join segments (in frame order) into the final outputs: video segments with the concat
    demuxer (no re-encode) and the clip's audio muxed in; frame folders merged. Returns the files
    (or folders) written. Segments must cover the clip's frames without gap or overlap.
    ``writing``: a context manager factory held around the writes (a one-shot's write turn,
    flows/outlock.py: two one-shots writing one output write one set of files, never a mix)."""
    segs = sorted(segments, key=lambda s: s.start)
    for a, b in zip(segs, segs[1:]):
        if a.stop != b.start:
            raise ParameterError(f"segments do not join: [{a.start}, {a.stop}) then [{b.start}, {b.stop})",
                                 parameter="segments")
    info = info or probe_clip(clip)
    out_p = Path(out)
    target = output_target(out)
    names = [n for n in segs[0].files if n != "depth"]  # the chain file is for the flow, not an output
    dests = output_paths(kind, out_p, names, params, target)
    for name in names:  # a renamed output (`s_SBS_LR.mp4`) or one beside it may be the clip itself
        refuse_input(dests[name], {"the input clip": clip})
    with (writing or contextlib.nullcontext)():
        return _write_outputs(names, dests, segs, clip, target, info)


def _write_outputs(names, dests, segs, clip, target, info) -> list[Path]:
    written = []
    for name in names:
        dest = dests[name]
        parts = [s.files[name] for s in segs]
        if target == "folder":
            dest.mkdir(parents=True, exist_ok=True)
            for part in parts:
                for f in sorted(Path(part).iterdir()):
                    atomic_copy(f, dest / f.name)  # names are global frame indices; never a half frame
            written.append(dest)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.stem}.part-{_unique()}{dest.suffix}")  # own name: two runs at once
        try:
            concat_files(parts, tmp)
            if dest.suffix.lower() == ".gif":
                os.replace(tmp, dest)
            else:
                mux_audio(tmp, clip, dest, info=info, start=segs[0].start,
                          stop=segs[-1].stop if segs[-1].stop < info.frames or segs[0].start > 0 else None)
        finally:  # Ctrl-C or a failure: no temp file left beside the output
            tmp.unlink(missing_ok=True)
        written.append(dest)
    return written


def default_suffix(kind: str, params: Any = None) -> str:
    """The main output's suffix when no ``-o`` says it (recipes): ``estimate``/``refine``/
    ``export`` a 16-bit FFV1 ``.mkv`` for the raw formats and png16, else an 8-bit gray ``.mp4``;
    ``layers`` a folder (RGBA frames); the rest H.264 ``.mp4``."""
    if kind in ("estimate", "refine", "export"):
        fmt = getattr(params, "format", None) or (getattr(params, "formats", None) or ["grayscale"])[0]
        return ".mkv" if fmt in DEEP_FORMATS else ".mp4"
    if kind == "layers":
        return "folder"
    return ".mp4"


def plan_segments(info: ClipInfo, segment_frames: int | None = None, cuts: list[int] | None = None) -> list[tuple[int, int]]:
    """Frame ranges ``[a, b)`` covering the clip: at scene cuts, else every ``segment_frames``
    (default about 10 s)."""
    n = info.frames
    seg = int(segment_frames or max(1, round(float(info.rate) * 10)))
    bounds = {0, n}
    bounds.update(c for c in (cuts or []) if 0 < c < n)
    edges = sorted(bounds)
    out = []
    for a, b in zip(edges, edges[1:]):
        k = max(1, -(-(b - a) // seg))
        step = -(-(b - a) // k)
        for s in range(a, b, step):
            out.append((s, min(b, s + step)))
    return out


def run_clip(kind: str, clip: str | os.PathLike, out: str | os.PathLike, params: Any, workdir: str | os.PathLike, *,
             provider: str = "classic", mode: str = "max", segment_frames: int | None = None,
             info: ClipInfo | None = None, progress: Callable[[int, int], None] | None = None,
             max_pixels: int | None = None, downscale: bool = False, workers: int = 1,
             writing: Callable[[], Any] | None = None) -> list[Path]:
    """A step on a whole clip, in this process: segments in order, then :func:`assemble`
    (``workers``: see :func:`process_clip_segment`; ``writing``: see :func:`assemble`)."""
    info = info or probe_clip(clip, max_pixels=max_pixels, downscale=downscale)
    target = output_target(out)
    spec = get_step(kind)
    if isinstance(params, dict):
        params = spec.params.model_validate(params)
    if segment_frames is None:
        ranges = [(0, info.frames)]  # one pass: no warm-up overhead
    else:
        ranges = plan_segments(info, segment_frames)
    remote_calls_notice(Path(str(clip)).name, kind, params, provider, info.frames)
    segs = []
    done_before = 0
    for a, b in ranges:
        def prog(d, t, base=done_before):
            if progress is not None:
                progress(base + d, info.frames)

        segs.append(process_clip_segment(kind, clip, a, b, params, Path(workdir) / f"seg-{a:06d}", target=target,
                                         provider=provider, mode=mode, info=info, progress=prog, workers=workers))
        done_before += b - a
    return assemble(kind, segs, clip, out, params, info=info, writing=writing)
