#!/usr/bin/env python3
"""Video benchmarks for issue 9; prints one table.

    python bench/bench_video.py                 # every row
    python bench/bench_video.py --only stereo   # stereo | memory | scale (repeatable)
    python bench/bench_video.py --quick         # shorter clips: the same measures, smaller numbers
    python bench/bench_video.py --strip out/video-3d/sample   # the README frame strip from a video-3d run

Rows (ratios are measured side by side in one run: the machine is shared, absolute times are noisy):

- stereo: ``depthcraft stereo CLIP -o out.mp4 --layout hsbs`` on the shared 720p clip
  (``../shared/data/video/big_buck_bunny_0_30.webm``), total wall time, against ffmpeg
  re-encoding that command's own output with the same encoder settings (libx264, preset medium,
  CRF 18, yuv420p: the encoder is the floor); target ratio <= 2.0. Skipped without ../shared.
- memory: a 10-minute 1080p clip made on the fly (10 s of the bundled photos panned at 24 fps,
  looped 60 times by stream copy, under a temporary folder), ``depthcraft stereo CLIP -o out.mp4
  --layout hsbs``; the resident memory of depthcraft and every ffmpeg child, sampled together
  (psutil) twice a second: the peak, and the peak of each quarter of the run (constant memory =
  flat quarters); target < 1.5 GB. ``--frames N`` (default 480, 20 s of video) stops after N
  frames through the same engine call (the clip stays 10 minutes long: the decoder and the muxer
  see the whole file); ``--frames 0`` runs the whole clip, at ``--nice 10`` (default) so that it
  yields to other work, stopped at ``--minutes 20`` (default) with the frames done, the peak so
  far and the extrapolated time of the whole clip (2.64 frames/s at nice 10 on the shared 2-core
  machine at load 6-8: about 1.5 h for the 14400 frames; docs/video.md).
- scale: a 60 s clip (made the same way, 192x108 at 12 fps) through a recipe (estimate, cut
  into 5 s segments = 12 task runs) on Prefect's Dask task runner, 1 worker process against 2,
  fresh workspaces (nothing cached); throughput = frames per second of flow-run wall time
  (cluster start included); target 2 workers >= 1.6x.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_CLIP = REPO.parent / "shared" / "data" / "video" / "big_buck_bunny_0_30.webm"
DEPTHCRAFT = [sys.executable, "-m", "depthcraft.flows.cli"]
ROWS: list[tuple[str, str, str, str]] = []  # (row, measured, target, verdict)


def ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def row(name: str, measured: str, target: str, ok: bool | None) -> None:
    ROWS.append((name, measured, target, "-" if ok is None else ("PASS" if ok else "FAIL")))
    print(f"  {name}: {measured}", flush=True)


# -- clips made on the fly -------------------------------------------------------------------------
def panned_clip(path: Path, *, size: tuple[int, int], rate: int, seconds: float) -> Path:
    """A clip of the bundled photos panned and zoomed, one shot per photo (so it has scene cuts),
    piped frame by frame to ffmpeg (never held in memory), with a sine tone as audio."""
    import cv2
    import numpy as np
    from PIL import Image

    photos = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((REPO / "recipes" / "photos").glob("*.jpg"))]
    w, h = size
    frames = int(round(seconds * rate))
    shot = max(1, rate * 10)  # a new photo every 10 s
    cmd = [ffmpeg(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
           "-framerate", str(rate), "-i", "-", "-f", "lavfi", "-i", "sine=frequency=330:sample_rate=48000",
           "-map", "0:v", "-map", "1:a", "-t", f"{frames / rate:.3f}", "-c:v", "libx264", "-preset", "veryfast",
           "-crf", "23", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", str(path)]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    for i in range(frames):
        img = photos[(i // shot) % len(photos)]
        ph, pw = img.shape[:2]
        t = (i % shot) / shot
        zoom = 0.9 - 0.25 * t
        win_w = pw * zoom
        s = w / win_w
        cx = win_w / 2 + (pw - win_w) * t
        m = np.array([[s, 0, w / 2 - s * cx], [0, s, h / 2 - s * ph / 2]], np.float64)
        p.stdin.write(cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT).tobytes())
    p.stdin.close()
    if p.wait() != 0:
        raise SystemExit(f"ffmpeg could not make {path}")
    return path


# -- measuring -------------------------------------------------------------------------------------------
def run_sampled(cmd: list[str], *, every: float = 0.5, nice: int = 0,
                budget: float | None = None) -> tuple[float, list[tuple[float, int]], int]:
    """Run ``cmd`` (at ``nice`` priority; SIGTERM after ``budget`` seconds); sample the resident
    memory of it and all its descendants together."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=(lambda: os.nice(nice)) if nice else None)
    samples: list[tuple[float, int]] = []
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        total = 0
        try:
            for p in [root, *root.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        samples.append((time.perf_counter() - t0, total))
        if budget is not None and samples[-1][0] > budget and proc.poll() is None:
            proc.terminate()  # the engine's writers close their ffmpeg children
            proc.wait()
            break
        time.sleep(every)
    err = proc.stderr.read().decode(errors="replace")
    if proc.returncode != 0 and budget is None:
        print(err[-2000:], file=sys.stderr)
    return time.perf_counter() - t0, samples, proc.returncode


def bench_stereo(tmp: Path, quick: bool) -> None:
    if not SHARED_CLIP.exists():
        row("stereo hsbs / ffmpeg re-encode", "skipped: ../shared is absent", "<= 2.0", None)
        return
    clip = SHARED_CLIP
    if quick:  # the first 5 s (stream copy: the same frames, no re-encode)
        clip = tmp / "bbb5.webm"
        subprocess.run([ffmpeg(), "-y", "-loglevel", "error", "-i", str(SHARED_CLIP), "-t", "5", "-c", "copy", str(clip)],
                       check=True)
    out = tmp / "bbb.mp4"
    t0 = time.perf_counter()
    r = subprocess.run([*DEPTHCRAFT, "stereo", str(clip), "-o", str(out), "--layout", "hsbs"], capture_output=True, text=True)
    ours = time.perf_counter() - t0
    if r.returncode != 0:
        row("stereo hsbs / ffmpeg re-encode", f"failed: {r.stderr.strip()[-300:]}", "<= 2.0", False)
        return
    made = next(tmp.glob("bbb*.mp4"))  # the engine tags the name for 3D players (bbb_3dh_LR.mp4)
    from depthcraft.tasks.lib.clip import probe_clip

    info = probe_clip(made)
    t0 = time.perf_counter()
    subprocess.run([ffmpeg(), "-y", "-loglevel", "error", "-i", str(made), "-an", "-c:v", "libx264", "-preset", "medium",
                    "-crf", "18", "-pix_fmt", "yuv420p", str(tmp / "reencode.mp4")], check=True)
    floor = time.perf_counter() - t0
    ratio = ours / floor
    row("stereo hsbs 720p: depthcraft s", f"{ours:.1f} s ({info.frames} frames, {info.frames / ours:.1f} fps)", "", None)
    row("stereo hsbs 720p: ffmpeg re-encode s", f"{floor:.1f} s", "", None)
    row("stereo hsbs 720p: ratio", f"{ratio:.2f}x", "<= 2.0", ratio <= 2.0)


def bench_memory(tmp: Path, quick: bool, frames: int | None, *, nice: int = 10, minutes: float = 20.0) -> None:
    minutes_clip = 1.0 if quick else 10.0
    short = panned_clip(tmp / "short1080.mp4", size=(1920, 1080), rate=24, seconds=10)
    clip = tmp / "long1080.mp4"
    subprocess.run([ffmpeg(), "-y", "-loglevel", "error", "-stream_loop", str(int(minutes_clip * 6) - 1), "-i",
                    str(short), "-c", "copy", str(clip)], check=True)
    from depthcraft.tasks.lib.clip import probe_clip

    n = probe_clip(clip).frames
    print(f"  {clip.name}: {n} frames of 1920x1080; nice {nice}, at most {minutes:g} min", flush=True)
    progress = tmp / "long3d.progress"
    # the one-shot command's engine call (one pass, estimate-ahead processes), with a progress file
    cmd = [sys.executable, "-c", PARTIAL, str(clip), str(tmp / "long3d.mp4"), str(frames or 0), str(progress)]
    wall, samples, rc = run_sampled(cmd, nice=nice, budget=60.0 * minutes)
    try:
        done = int(progress.read_text())
    except (OSError, ValueError):
        done = 0
    want = frames or n
    if not samples or (rc != 0 and done == 0):
        row(f"memory {minutes_clip:g} min 1080p", "failed", "< 1.5 GB", False)
        return
    peak = max(m for _, m in samples)
    q = [max([m for t, m in samples if wall * k / 4 <= t < wall * (k + 1) / 4] or [0]) for k in range(4)]
    finished = done >= want and rc == 0
    what = f"{done} of {n} frames" + ("" if finished else f", stopped at the {minutes:g} min budget")
    row(f"memory {minutes_clip:g} min 1080p stereo hsbs: peak", f"{peak / 2**30:.2f} GB ({what}, {wall:.0f} s)",
        "< 1.5 GB", peak < 1.5 * 2**30)
    row(f"memory {minutes_clip:g} min 1080p: peak per quarter", " / ".join(f"{x / 2**30:.2f}" for x in q) + " GB",
        "flat", max(q[1:]) <= 1.15 * max(q[1], 1))
    if done:
        row(f"memory {minutes_clip:g} min 1080p: speed at nice {nice}",
            f"{done / wall:.2f} frames/s: the whole clip ({n} frames) in about {n / (done / wall) / 3600:.1f} h",
            "", None)


# the one-shot engine call on frames [0, N) (0: all) of the long clip: the decoder and the muxer
# see the whole file; the frames done go to a progress file (the run may be stopped at a budget)
PARTIAL = """
import sys
from pathlib import Path
from depthcraft.tasks import clips
from depthcraft.tasks.catalog import get_step
from depthcraft.tasks.lib.clip import probe_clip
from depthcraft.tasks.lib.store import atomic_write_bytes
clip, out, n, prog = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
n = n or probe_clip(clip).frames
p = get_step("stereo").params(layout="hsbs")
def tick(done, total):
    if done % 24 == 0 or done == total:
        atomic_write_bytes(prog, str(done).encode())
if __name__ == "__main__":
    seg = clips.process_clip_segment("stereo", clip, 0, n, p, out + ".work", workers=clips.estimate_workers(),
                                     progress=tick)
    clips.assemble("stereo", [seg], clip, out, p)
"""


def bench_scale(tmp: Path, quick: bool) -> None:
    seconds = 20 if quick else 60
    clip = panned_clip(tmp / "scale.mp4", size=(192, 108), rate=12, seconds=seconds)
    recipe = tmp / "scale.yaml"
    recipe.write_text(f"version: 1\nname: bench-video-scale\ninputs:\n  images: ['{clip}']\n  segment_seconds: 5\n"
                      "steps:\n  - {id: depth, uses: estimate}\n")
    from depthcraft.flows import server
    from depthcraft.flows.workspace import Workspace

    srv_ws = Workspace.default(tmp / "server")
    own = not os.environ.get("PREFECT_API_URL")
    if own:
        os.environ["PREFECT_API_URL"] = server.start(srv_ws, ui=False)["url"]
    for k in ("", "_FLOW_RUNS", "_TASK_RUNS"):
        os.environ.setdefault(f"PREFECT_LOGGING_HANDLERS_CONSOLE{k}_LEVEL", "CRITICAL")
    os.environ.setdefault("DISTRIBUTED_LOGGING__DISTRIBUTED", "error")
    try:
        from depthcraft.flows.recipe import DaskSettings, load_recipe
        from depthcraft.flows.runner import run_recipe
        from depthcraft.flows.scale import dask_runner

        rec, _ = load_recipe(recipe)
        walls, hashes = {}, {}
        for n in (1, 2):
            runner = dask_runner(rec.model_copy(update={"dask": DaskSettings(workers=n, threads_per_worker=1)}),
                                 prestart=True)  # as `depthcraft run --task-runner dask` does
            t0, c0 = time.perf_counter(), time.time()
            s = run_recipe(recipe, out_root=str(tmp / f"out{n}"), workspace=str(tmp / f"ws{n}"), task_runner=runner)
            walls[n] = time.perf_counter() - t0
            ph = phases(s, c0, time.time())
            from depthcraft.flows.daskwarm import LAST, wait_closed

            wait_closed()  # the cluster closes in the background: not in the next run's time

            print("  cluster (s after the call; closing in s): "
                  + ", ".join(f"{k} {v if k.endswith('_s') else v - c0:.1f}" for k, v in LAST.items()), flush=True)
            print("  phases (s): " + ", ".join(f"{k} {v:.1f}" for k, v in ph.items()), flush=True)
            for k, v in ph.items():
                row(f"scale: Dask {n} worker(s), {k}", f"{v:.1f} s", "", None)
            m = json.loads(Path(s["manifest"]).read_text())
            segs = m["steps"][0]["segments"]
            frames = m["clips"]["scale"]["frames"]
            hashes[n] = [o["sha256"] for o in m["steps"][0]["outputs"].values()]
            print(f"  dask {n} worker(s): {walls[n]:.1f} s, {len(segs)} segments, {frames} frames", flush=True)
        speed = walls[1] / walls[2]
        row(f"scale {seconds} s clip: Dask 1 worker", f"{walls[1]:.1f} s ({frames / walls[1]:.2f} frames/s)", "", None)
        row(f"scale {seconds} s clip: Dask 2 workers", f"{walls[2]:.1f} s ({frames / walls[2]:.2f} frames/s)", "", None)
        row(f"scale {seconds} s clip: 2 vs 1 worker", f"{speed:.2f}x (identical files: {hashes[1] == hashes[2]})",
            ">= 1.6x", speed >= 1.6)
    finally:
        if own:
            server.stop(srv_ws)
            os.environ.pop("PREFECT_API_URL", None)


def phases(summary: dict, called: float, returned: float) -> dict[str, float]:  # time.time() of call and return
    """Where the wall time of one recipe run went, from the Prefect API (task-run start/end
    times, the flow's "recipe ...: N image(s)" log line written once the plan is compiled) and
    the manifest (seconds each segment spent in the engine). Seconds:

    - ``start``: run_recipe called -> flow run Running (flow-run creation, first API calls);
    - ``compile``: flow Running -> plan compiled (recipe, inputs, clip analysis: scene cuts);
    - ``first_task``: plan compiled -> first segment task run Running (cluster start, shipping
      the task, a worker's first imports);
    - ``segments``: first segment Running -> last segment done (the parallel part);
    - ``engine_s``: the engine's own seconds summed over the segments (the work);
    - ``task_overhead_s``: task-run wall minus engine seconds, summed (Prefect state round trips,
      result persistence, store writes, decoder/encoder start-up outside the engine's clock);
    - ``assemble``: last segment done -> last assemble task run done (joining, audio);
    - ``finish``: last task done -> flow run Completed (publish, manifest, gallery, artifacts);
    - ``teardown``: flow run Completed -> run_recipe returned (cluster shutdown)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId

    rid = summary["run_id"]
    deadline = time.time() + 30
    with get_client(sync_client=True) as c:
        while True:
            fr = c.read_flow_run(rid)
            trs = c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[rid])))
            if (all(t.state and t.state.is_final() and t.end_time for t in trs) and fr.end_time) or time.time() > deadline:
                break
            time.sleep(0.5)
        logs = c.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[rid])))
    ts = lambda d: d.timestamp()  # noqa: E731
    compiled = min((ts(lg.timestamp) for lg in logs if "image(s) x" in lg.message), default=ts(fr.start_time))
    segs = [t for t in trs if "#" in t.name]
    asm = [t for t in trs if t.name.endswith("assemble")]
    m = json.loads(Path(summary["manifest"]).read_text())
    engine = sum(g.get("seconds", 0.0) for n in m["steps"] for g in n.get("segments", []))
    seg_wall = sum(ts(t.end_time) - ts(t.start_time) for t in segs if t.start_time and t.end_time)
    first = min(ts(t.start_time) for t in segs)
    last_seg = max(ts(t.end_time) for t in segs)
    last = max(ts(t.end_time) for t in trs)
    return {"start": ts(fr.start_time) - called, "compile": compiled - ts(fr.start_time),
            "first_task": first - compiled, "segments": last_seg - first, "engine_s": engine,
            "task_overhead_s": seg_wall - engine, "assemble": max(ts(t.end_time) for t in asm) - last_seg,
            "finish": ts(fr.end_time) - last, "teardown": returned - ts(fr.end_time)}


def frame_strip(out_dir: Path, dst: Path, frames=(6, 30, 42, 66)) -> Path:
    """The README's frame strip from a ``video-3d`` run's folder: per row, the left and right eye
    of a half-SBS frame (each half stretched back to full width) and the depth frame."""
    import cv2
    import numpy as np
    from PIL import Image

    from depthcraft.tasks.lib.clip import read_frames

    def grab(path: Path) -> list:
        got = {i: f.copy() for i, f in enumerate(read_frames(path, 0, max(frames) + 1)) if i in frames}
        return [got[i] for i in frames]

    rows = []
    for f, d in zip(grab(out_dir / "3d_3dh_LR.mp4"), grab(out_dir / "depth.mp4")):
        h, w = f.shape[:2]
        eyes = [cv2.resize(half, (w, h), interpolation=cv2.INTER_CUBIC) for half in (f[:, : w // 2], f[:, w // 2:])]
        rows += [np.concatenate([*eyes, d], 1), np.full((4, 3 * w, 3), 255, np.uint8)]
    Image.fromarray(np.concatenate(rows[:-1], 0)).save(dst, quality=88)
    return dst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", choices=["stereo", "memory", "scale"])
    ap.add_argument("--quick", action="store_true", help="5 s stereo clip, 1-minute memory clip, 20 s scale clip")
    ap.add_argument("--frames", type=int, default=480, help="memory: stop after this many frames of the 10-minute "
                    "clip (0: the whole clip)")
    ap.add_argument("--nice", type=int, default=10, help="memory: run the clip at this nice level (default 10: "
                    "the long run yields to interactive work)")
    ap.add_argument("--minutes", type=float, default=20.0, help="memory: stop the run after this many minutes "
                    "(default 20) and report the frames done and the extrapolated time of the whole clip")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--strip", metavar="RUN_DIR", help="only write docs/img/video_3d_strip.jpg from the output folder "
                    "of `depthcraft run recipes/video-3d.yaml`")
    a = ap.parse_args()
    if a.strip:
        print(frame_strip(Path(a.strip), REPO / "docs" / "img" / "video_3d_strip.jpg"))
        return 0
    only = a.only or ["stereo", "memory", "scale"]
    tmp = Path(tempfile.mkdtemp(prefix="dc-bench-video-"))
    print(f"{os.cpu_count()} CPU(s); working in {tmp}", flush=True)
    try:
        if "stereo" in only:
            bench_stereo(tmp, a.quick)
        if "scale" in only:
            bench_scale(tmp, a.quick)
        if "memory" in only:
            bench_memory(tmp, a.quick, a.frames, nice=a.nice, minutes=a.minutes)
    finally:
        if a.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    hdr = ("measure", "value", "target", "verdict")
    print("\n| " + " | ".join(hdr) + " |\n|" + "|".join("---" for _ in hdr) + "|")
    for r in ROWS:
        print("| " + " | ".join(r) + " |")
    return 1 if any(r[3] == "FAIL" for r in ROWS) else 0


if __name__ == "__main__":
    sys.exit(main())
