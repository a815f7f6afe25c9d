"""Clips in recipes: every segment of every step is one Prefect task run.

A clip input (mp4, mov, m4v, mkv, webm, avi, animated GIF/WebP) is cut into segments: at its
scene cuts, and inside a shot every ``inputs.segment_seconds`` (default 10 s) into pieces of
nearly equal length. For each step the runner submits one ``segment`` task run per segment
(upstream: the same segment of the upstream steps) and one ``assemble`` task run that joins the
step's segments into its published files (stream copy, no second encode) with the clip's audio.

Cache keys are content keys, as for photos (:mod:`depthcraft.flows.compile`): a segment's key
is the hash of its step node's key (step, code version, parameters, provider, the clip's
sha256), its frame range, the temporal warm-up length and the keys of the same segment of its
upstream steps. So a re-run finds every segment again, an interrupted run (even ``kill -9``)
resumes at the first unfinished segment, and a changed parameter recomputes only the segments
of the steps it reaches. Temporal state crosses segment boundaries through a warm-up overlap
(the engine decodes ``WARMUP_FRAMES`` frames before the segment and discards their output), so
segments are independent task runs, parallel on threads or on Dask worker processes.

The pixels are the engine's (:mod:`depthcraft.tasks.clips`, documented in docs/video.md). This
module plans the segments and runs one (plain data in and out, no Prefect: it is imported while
a recipe compiles, before the Prefect API is chosen); :mod:`.segment_runs` makes them task runs.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from depthcraft.tasks import clips as engine  # the engine (docs/video.md, "Engine API")
from depthcraft.tasks.lib import clip as cliplib
from depthcraft.tasks.lib.errors import DepthcraftError, InputError, ParameterError
from depthcraft.tasks.lib.store import Artifact, atomic_write_bytes, stable_hash

from . import clipframes, progress
from .recovery import process_tmp
from .workspace import Workspace

DEFAULT_SEGMENT_SECONDS = 10.0
ANALYSIS_VERSION = "2"  # bump when what analyse() records changes (2: VFR source_pts, name, 64 px minimum)


def clip_suffixes() -> frozenset[str]:
    return frozenset(cliplib.VIDEO_SUFFIXES)


def is_clip(path: str | Path) -> bool:
    """A video file or an animated GIF/WebP/PNG, of more than one frame (one frame is a photo)."""
    return cliplib.is_clip(path)


# -- the segment plan ----------------------------------------------------------------------------
@dataclass
class ClipPlan:
    """One clip input: what it is, where it is cut, and each step's segment keys."""

    frames: int
    rate: Fraction
    time_base: Fraction
    size: tuple[int, int]
    has_audio: bool
    cuts: list[int]
    segments: list[tuple[int, int]]  # [start, stop) frame ranges, in order, covering the clip
    warmup: int
    keys: dict[str, list[str]] = field(default_factory=dict)  # step id -> key per segment
    chained: set[str] = field(default_factory=set)  # steps whose segments also keep their depth for the next step
    info: dict = field(default_factory=dict)  # the engine's ClipInfo as JSON (see clip_info)
    targets: dict[str, str] = field(default_factory=dict)  # step id -> "folder" or a video suffix


def split_frames(frames: int, rate: Fraction, cuts: list[int], seconds: float) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges covering ``0..frames``: a boundary at every scene cut, and every
    shot longer than ``seconds`` cut into the fewest pieces of nearly equal length (equal pieces
    balance the workers better than N-second pieces and a short tail)."""
    if frames <= 0:
        return []
    span = max(1, round(float(seconds) * float(rate)))
    bounds = sorted({0, frames, *(c for c in cuts if 0 < c < frames)})
    out: list[tuple[int, int]] = []
    for a, b in zip(bounds, bounds[1:]):
        n = -(-(b - a) // span)  # ceil
        edges = [a + round(i * (b - a) / n) for i in range(n + 1)]
        out.extend((edges[i], edges[i + 1]) for i in range(n))
    return out


def analyse(ws: Workspace, source: Artifact, *, max_pixels: int | None = None, downscale: bool = False) -> dict:
    """Probe a clip and find its scene cuts, once per clip content and pixel limit (kept in the
    workspace: a long clip is decoded once for its cuts, not at every run). Returns
    ``{"info": ClipInfo fields, "cuts": [frame...]}``. Raises ``InputError`` naming the file."""
    limits = {"max_pixels": max_pixels, "downscale": bool(downscale)}
    cache = ws.root / "clips" / f"{source.sha256}-{stable_hash(limits)[:8]}-{ANALYSIS_VERSION}.json"
    try:
        return json.loads(cache.read_text())
    except (OSError, ValueError):
        pass
    origin = source.meta.get("origin", source.path)
    try:
        from depthcraft.tasks.lib.images import MIN_SIDE

        info = cliplib.probe_clip(source.path, **limits, name=Path(str(origin)).name, min_side=MIN_SIDE)
        cuts = [int(c) for c in cliplib.scene_cuts(source.path, info=info)]
    except InputError as e:  # name the file the user gave, not its copy in the downloads
        raise InputError(e.message.split(": ", 1)[-1], path=origin, hint=e.hint) from None
    if info.frames <= 0:
        raise InputError("the clip has no frames", path=origin)
    body = {"info": {k: (str(v) if isinstance(v, Fraction) else v) for k, v in asdict(info).items()}, "cuts": cuts}
    atomic_write_bytes(cache, json.dumps(body).encode())
    return body


def clip_info(analysis: dict):
    """The engine's ``ClipInfo`` back from :func:`analyse`'s JSON (segments need not probe again)."""
    d = dict(analysis["info"])
    d["rate"], d["time_base"] = Fraction(d["rate"]), Fraction(d["time_base"])
    if d.get("scale_to"):
        d["scale_to"] = tuple(d["scale_to"])
    return cliplib.ClipInfo(**d)


def expand_clips(plan, ws: Workspace) -> None:
    """Give every clip input of a compiled plan its segments and per-step segment keys, and
    re-key its step nodes as the assembly of those segments. A clip that cannot be read gets
    its ``error`` (one line naming the file) and no nodes, like a bad photo."""
    seconds = plan.recipe.inputs.segment_seconds or DEFAULT_SEGMENT_SECONDS
    # the effective limit (DEPTHCRAFT_MAX_PIXELS too): it decides the working size, so it keys the analysis
    limits = {"max_pixels": plan.max_pixels(), "downscale": plan.recipe.inputs.downscale}
    warmup = int(engine.WARMUP_FRAMES)
    decls = {d.id: d for d in plan.recipe.steps}
    engine_version = str(getattr(engine, "VERSION", "1"))
    for img in plan.images:
        if img.source is None or img.source.kind != "video":
            continue
        try:
            if img.given_depth is not None:
                raise InputError("a depth file goes with a photo; a clip's depth is estimated frame by frame",
                                 path=img.origin)
            for sid in plan.order:
                kind = plan.nodes[(sid, img.name)].kind
                if kind != "estimate" and getattr(plan.specs[sid], "clip_frame", None) is None:
                    from depthcraft.tasks.catalog import clip_kinds

                    raise InputError(f"step {sid!r} ({kind}) does not take clips, and this is "
                                     f"{cliplib.clip_words(img.source.path)}", path=img.origin,
                                     hint=f"clips go to {', '.join(clip_kinds())}; run {kind} on photos, or on "
                                          "frames exported with estimate -o DIR/")
            a = analyse(ws, img.source, **limits)
        except DepthcraftError as e:  # one line that names the clip
            img.error = str(e) if img.origin in str(e) else f"{img.origin}: {e}"
            for sid in plan.order:
                plan.nodes.pop((sid, img.name), None)
            continue
        info = clip_info(a)
        cp = ClipPlan(frames=info.frames, rate=info.rate, time_base=info.time_base, size=tuple(info.size),
                      has_audio=info.has_audio, cuts=a["cuts"], segments=split_frames(info.frames, info.rate, a["cuts"], seconds),
                      warmup=warmup, info={**a["info"], "path": img.source.path})  # this copy of the content
        cp.chained = {u for sid in plan.order for u in plan.nodes[(sid, img.name)].upstream}
        for sid in plan.order:
            node = plan.nodes[(sid, img.name)]
            if not node.upstream and node.provider:  # (this step estimates every keyframe itself)
                engine.remote_calls_notice(Path(str(img.origin)).name, node.kind, node.params, node.provider, info.frames)
            chosen = getattr(decls.get(sid), "clip_output", None)
            cp.targets[sid] = target(node, chosen)
            # a target the recipe chose is part of the key (the step's default is in its kind/params)
            extra = {"target": cp.targets[sid]} if chosen else {}
            if plan.recipe.provider_options and not node.upstream and node.provider:
                # (until engine 6 the options, though keyed, never reached the frames: segments
                # stored then are not what these options make)
                extra["provider_options_read"] = True
            cp.keys[sid] = [stable_hash({"node": node.key, "frames": [s, e], "warmup": warmup, "engine": engine_version,
                                         "keep_depth": sid in cp.chained, **extra,
                                         "upstream": [cp.keys[u][i] for u in node.upstream]})
                            for i, (s, e) in enumerate(cp.segments)]
            # the assembled files depend on exactly these segments
            node.key = stable_hash({"assemble": node.key, "segments": cp.keys[sid]})
        plan.clips[img.name] = cp


# -- running one segment, assembling a step ---------------------------------------------------------
def target(node, clip_output: str | None = None) -> str:
    """The file type a clip step writes in a recipe, where no ``-o`` chooses it: the step's
    ``clip_output`` (``folder`` or a video type) when the recipe gives one, else the engine's
    ``default_suffix`` (H.264 ``.mp4``; a 16-bit lossless ``.mkv`` for estimate's 16-bit and
    float formats; a folder of RGBA PNG frames for ``layers``). Frame folders travel through the
    artifact store as tar files (:mod:`.clipframes`) and are published as folders."""
    if clip_output:
        return "folder" if clip_output == "folder" else "." + clip_output.lstrip(".").lower()
    return engine.default_suffix(node.kind, node.params)


def _segment_result(d: dict):
    """An engine ``SegmentResult`` rebuilt from the JSON a segment task returned."""
    return engine.SegmentResult(kind=d["kind"], start=d["start"], stop=d["stop"],
                                files={n: Path(a["path"]) for n, a in d["outputs"].items()},
                                frames=d["frames"], seconds=d["seconds"], target=d["target"], meta=d.get("meta", {}))


def _spec_params(payload: dict):
    from depthcraft.tasks.catalog import get_step

    return get_step(payload["kind"]).params.model_validate(payload["params"])


def unchanged_since_plan(source: dict) -> None:
    """Raise the one-line "changed while the run was reading it" error when a clip is no longer
    the one the run hashed: its size and modification time are compared (hashing a long clip
    again for every segment would cost more than the segment); only when the time differs is it
    hashed again (a file touched but not changed is fine)."""
    from depthcraft.tasks.lib.step import changed_error

    planned = (source.get("meta") or {}).get("stat")
    if not planned:
        return
    a = Artifact.from_dict(source)
    try:
        st = os.stat(a.path)
    except OSError:
        raise changed_error(a) from None
    if [st.st_size, st.st_mtime_ns] != list(planned):
        from depthcraft.tasks.lib.store import sha256_file

        if st.st_size != planned[0] or sha256_file(a.path) != a.sha256:  # touched only: the same bytes are fine
            raise changed_error(a)


def execute_segment(payload: dict, upstream: list[dict]) -> dict:
    """Frames ``[start, stop)`` of a clip through one step (the engine's
    ``process_clip_segment``, warm-up included); its files go to the artifact store under the
    segment's key. Plain data in and out: it runs in a thread or in a Dask worker process.
    ``upstream`` holds the same segment of the upstream steps: the first one's depth (16-bit,
    kept because this step reads it) is this step's depth, so a chain estimates once."""
    ws = Workspace.default(payload["workspace"])
    store = ws.store
    key, label, index = payload["key"], payload["label"], payload["index"]
    base = {"kind": payload["kind"], "start": payload["start"], "stop": payload["stop"],
            "frames": payload["stop"] - payload["start"], "target": payload["target"]}
    found = None if payload.get("refresh") else store.load_record(key)  # --refresh / reproduce: recompute
    if found is not None:
        FRAMES.segment_done(label, index, base["frames"])
        return {**base, "outputs": {k: a.to_dict() for k, a in found.items()}, "seconds": 0.0, "reused": True}
    params = _spec_params(payload)
    workdir = process_tmp(ws) / f"{key[:16]}-{time.monotonic_ns()}"  # removed after a kill -9 (recovery)
    try:
        res = engine.process_clip_segment(
            payload["kind"], payload["source"]["path"], payload["start"], payload["stop"], params, workdir,
            target=payload["target"], provider=payload["provider"], mode=payload["mode"], warmup=payload["warmup"],
            info=clip_info({"info": payload["info"]}), keep_depth=payload["keep_depth"],
            depth=_segment_result(upstream[0]) if upstream else None,
            provider_options=(payload.get("options") or {}).get("provider_options"),
            workers=1,  # the segments are the parallel work (threads or Dask workers), not frame processes
            progress=lambda done, total: FRAMES.segment_progress(label, index, done))
        unchanged_since_plan(payload["source"])  # the frames read are the clip the key names
        if res.frames != base["frames"]:
            raise DepthcraftError(f"{payload['image']}: segment {payload['start']}..{payload['stop']} of step "
                                  f"{payload['step_id']!r} gave {res.frames} frames, expected {base['frames']}")
        seg = [payload["start"], payload["stop"]]
        outputs = {}
        for name, path in res.files.items():
            if Path(path).is_dir():  # a frame folder travels as a tar (see clipframes)
                what = f"{payload['image']}: step {payload['step_id']!r} frames {seg[0]}-{seg[1]} ({name})"
                path = clipframes.pack(Path(path), workdir / f"{name}.tar", seg[0], seg[1], what)
                outputs[name] = store.put_file(path, "frames", {"segment": seg, "publish": False, "folder": True},
                                               move=True)
            else:
                outputs[name] = store.put_file(path, "video", {"segment": seg, "publish": False}, move=True)
        store.save_record(key, outputs, {"step": payload["kind"], "segment": seg, "seconds": res.seconds})
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    FRAMES.segment_done(label, index, base["frames"])
    return {**base, "outputs": {k: a.to_dict() for k, a in outputs.items()}, "seconds": float(res.seconds),
            "meta": res.meta, "reused": False}


def execute_assemble(payload: dict, parts: list[dict]) -> dict:
    """Join a step's segments into its files (the engine's ``assemble``: concatenated without
    re-encoding, the clip's audio muxed in) and store them under the step node's key. Each
    output records the file name the engine gave it (``main_3dh_LR.mp4``: the 3D layout tag
    players read), which :func:`publish` keeps."""
    ws = Workspace.default(payload["workspace"])
    store = ws.store
    key = payload["key"]
    found = None if payload.get("refresh") else store.load_record(key)  # --refresh / reproduce: recompute
    if found is not None:
        return {"outputs": {k: a.to_dict() for k, a in found.items()}, "seconds": 0.0, "reused": True}
    params = _spec_params(payload)
    workdir = process_tmp(ws) / f"{key[:16]}-{time.monotonic_ns()}"  # removed after a kill -9 (recovery)
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        if payload["target"] == "folder":
            outputs = _assemble_folders(payload, parts, workdir, params)
            seconds = time.perf_counter() - t0
            store.save_record(key, outputs, {"step": payload["kind"], "assemble": len(parts), "seconds": seconds})
            return {"outputs": {k: a.to_dict() for k, a in outputs.items()}, "seconds": seconds, "reused": False}
        main = workdir / f"main{payload['target']}"
        segs = [_segment_result(p) for p in parts]
        info = clip_info({"info": payload["info"]})
        written = [Path(p) for p in engine.assemble(payload["kind"], segs, payload["source"]["path"], main, params,
                                                    info=info)]
        unchanged_since_plan(payload["source"])  # assembling reads the clip again (its audio)
        names = {Path(p): n for n, p in engine.output_paths(payload["kind"], main, list(segs[0].files), params).items()}
        outputs = {}
        for path in written:
            if path.is_dir():
                raise DepthcraftError(f"{payload['image']}: step {payload['step_id']!r} wrote a frame folder; "
                                      "recipes publish clips as video files")
            name = names.get(path, path.stem)
            outputs[name] = store.put_file(path, "video", {"frames": payload["frames"], "file": path.name}, move=True)
        seconds = time.perf_counter() - t0
        store.save_record(key, outputs, {"step": payload["kind"], "assemble": len(parts), "seconds": seconds})
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"outputs": {k: a.to_dict() for k, a in outputs.items()}, "seconds": seconds, "reused": False}


def _assemble_folders(payload: dict, parts: list[dict], workdir: Path, params) -> dict[str, Artifact]:
    """A folder target: per output, the segments' frame tars joined in frame order into one
    (no frame decoded or written again), named as the one-shot command names its folders
    (``main``, ``main-layer_0``...: published as ``<step>/``, ``<step>-layer_0/``)."""
    store = Workspace.default(payload["workspace"]).store
    segs = sorted(parts, key=lambda p: p["start"])
    for a, b in zip(segs, segs[1:]):
        if a["stop"] != b["start"]:
            raise DepthcraftError(f"{payload['image']}: segments do not join: {a['start']}..{a['stop']} then "
                                  f"{b['start']}..{b['stop']}")
    names = [n for n in segs[0]["outputs"] if n != "depth"]  # the chain file is for the flow
    dests = engine.output_paths(payload["kind"], workdir / "main", names, params)
    outputs = {}
    for name in names:
        what = f"{payload['image']}: step {payload['step_id']!r} ({name})"
        tar = clipframes.join([Path(p["outputs"][name]["path"]) for p in segs], workdir / f"{name}.tar",
                              payload["frames"], what)
        outputs[name] = store.put_file(tar, "frames", {"frames": payload["frames"], "file": dests[name].name,
                                                       "folder": True}, move=True)
    return outputs


def publish(result: dict, step_id: str, primary: str, out_dir: Path) -> dict[str, dict]:
    """Copy a clip step's assembled files into ``out_dir`` as ``<step id><what the engine added
    to main><suffix>``: ``3d_3dh_LR.mp4`` for a half-SBS step ``3d`` (the tag 3D players
    detect), ``depth.mp4`` for an estimate step ``depth`` (atomically, skipping identical files)."""
    from depthcraft.tasks.lib.store import atomic_copy, sha256_file

    done: dict[str, dict] = {}
    for name, ad in result["outputs"].items():
        a = Artifact.from_dict(ad)
        file = a.meta.get("file") or f"main{a.suffix}"
        dst = out_dir / (step_id + file[len("main"):] if file.startswith("main") else f"{step_id}-{file}")
        if a.meta.get("folder"):  # frames: the joined tar extracted as a folder
            if sha256_file(a.path) != a.sha256:
                raise DepthcraftError(f"{a.path} no longer matches its sha256")
            clipframes.extract(Path(a.path), dst)
            done[name] = {"path": str(dst), "sha256": a.sha256, "kind": "frames", "frames": a.meta.get("frames")}
            continue
        if not (dst.exists() and dst.stat().st_size == Path(a.path).stat().st_size and sha256_file(dst) == a.sha256):
            atomic_copy(a.path, dst)
        done[name] = {"path": str(dst), "sha256": a.sha256, "kind": a.kind}
    return done


def clip_summary(cp: ClipPlan) -> dict:
    return {"frames": cp.frames, "rate": str(cp.rate), "time_base": str(cp.time_base), "size": list(cp.size),
            "audio": cp.has_audio, "cuts": cp.cuts, "segments": [list(s) for s in cp.segments], "warmup": cp.warmup}


# -- progress in frames ---------------------------------------------------------------------------------
class FrameTally:
    """Frames done per (step, clip), summed over its segments, for the progress bars. Segments
    report from the threads that run them (a Dask worker has no bars: its segments count when
    the runner collects them)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._done: dict[str, dict[int, int]] = {}
        self._total: dict[str, int] = {}

    def start(self, label: str, frames: int, segments: int) -> None:
        with self._lock:
            self._done[label] = {}
            self._total[label] = frames
        self._show(label)

    def segment_progress(self, label: str, index: int, done: int) -> None:
        with self._lock:
            if label not in self._done:
                return
            self._done[label][index] = max(done, self._done[label].get(index, 0))
        self._show(label)

    def segment_done(self, label: str, index: int, frames: int) -> None:
        self.segment_progress(label, index, frames)

    def _show(self, label: str) -> None:
        cb = progress.callback(f"{label} frames")
        if cb is not None:
            with self._lock:
                done, total = sum(self._done.get(label, {}).values()), self._total.get(label, 0)
            cb(done, total)


FRAMES = FrameTally()


def segment_rows(plan, store, sid: str, image: str) -> list[tuple[str, ...]]:
    """``depthcraft plan`` rows for one clip step: per segment its frame range and whether its
    record is in the store (exactly what ``run`` checks before it submits the segment)."""
    cp: ClipPlan = plan.clips[image]
    rows = []
    for i, (s, e) in enumerate(cp.segments):
        key = cp.keys[sid][i]
        rows.append((f"  #{i}", "segment", f"frames {s}-{e - 1}", f"{e - s} frames",
                     "yes" if store.has(key) else "no", key[:12]))
    return rows
