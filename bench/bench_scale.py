#!/usr/bin/env python3
"""Scale-out: a batch of photos on Prefect's DaskTaskRunner, 1 worker process against 2.

40 photos of about 1 MP (crops, flips and resizes of scikit-image's sample photos, each with
different bytes) go through estimate -> refine -> stereo. The same batch runs, one after the
other in this one process, on a local Dask cluster of 1 worker and of 2 workers (processes, one
thread each), each with a fresh workspace so nothing comes from the cache. Throughput is photos
per second of flow-run wall time (cluster start included). The Prefect cost per task is
measured too: task-run time (from the API) minus the step's own compute time.

Target: 2 workers >= 1.6x the throughput of 1 worker on a 2-core machine.

usage: bench/bench_scale.py [--photos 40] [--mp 1.0] [--steps estimate,refine,stereo] [--threads] [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_photos(folder: Path, n: int, mp: float, seed: int = 7) -> list[Path]:
    """``n`` different ~``mp`` megapixel 4:3 JPEGs cut from scikit-image's bundled photos."""
    import cv2
    import numpy as np
    import skimage.data as d
    from PIL import Image

    sources = [d.astronaut(), d.chelsea(), d.coffee(), d.rocket(), d.stereo_motorcycle()[0], d.hubble_deep_field(),
               d.retina(), d.immunohistochemistry()]
    rng = np.random.default_rng(seed)
    w = int(round((mp * 1e6 * 4 / 3) ** 0.5 / 16) * 16)
    h = w * 3 // 4
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        src = sources[i % len(sources)]
        sh, sw = src.shape[:2]
        ch = int(min(sh, sw * 3 / 4) * rng.uniform(0.6, 1.0))
        cw = ch * 4 // 3
        y, x = rng.integers(0, sh - ch + 1), rng.integers(0, sw - cw + 1)
        img = cv2.resize(src[y:y + ch, x:x + cw], (w, h), interpolation=cv2.INTER_CUBIC)
        if rng.random() < 0.5:
            img = img[:, ::-1]
        img = np.clip(img.astype(np.float32) * rng.uniform(0.85, 1.15), 0, 255).astype(np.uint8)
        p = folder / f"p{i:02d}.jpg"
        Image.fromarray(np.ascontiguousarray(img)).save(p, quality=92)
        out.append(p)
    return out


def recipe_text(steps: list[str]) -> str:
    lines = ["version: 1", "name: bench-scale", "inputs:", "  images: [\"photos/*.jpg\"]", "steps:"]
    prev = None
    for kind in steps:
        frm = f", from: {prev}" if prev else ""
        lines.append(f"  - {{id: {kind}, uses: {kind}{frm}}}")
        prev = kind
    lines.append("output: out/{recipe}/{image}/")
    return "\n".join(lines) + "\n"


def task_stats(run_id: str) -> dict:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as c:
        trs, off = [], 0
        while batch := c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])),
                                        limit=200, offset=off):
            trs += batch
            off += len(batch)
        fr = c.read_flow_run(run_id)
    spans = [(t.start_time, t.end_time) for t in trs if t.start_time and t.end_time]
    first = min(s for s, _ in spans)
    last = max(e for _, e in spans)
    return {"tasks": len(trs), "task_s": sum((e - s).total_seconds() for s, e in spans),
            "startup_s": (first - fr.start_time).total_seconds(), "busy_s": (last - first).total_seconds()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=40)
    ap.add_argument("--mp", type=float, default=1.0, help="megapixels per photo")
    ap.add_argument("--steps", default="estimate,refine,stereo", help="step kinds, chained in order")
    ap.add_argument("--threads", action="store_true", help="also run the default thread runner (2 threads)")
    ap.add_argument("--repeat", type=int, default=1, help="run each configuration N times, interleaved; keep the best")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    a = ap.parse_args()
    steps = a.steps.split(",")

    from depthcraft.tasks.catalog import steps as catalog

    missing = [s for s in steps if s not in catalog()]
    if missing:
        print(f"step kinds not in the catalog: {', '.join(missing)}", file=sys.stderr)
        return 2

    from depthcraft.flows import server
    from depthcraft.flows.workspace import Workspace

    tmp = Path(tempfile.mkdtemp(prefix="dc-bench-scale-"))
    photos = make_photos(tmp / "photos", a.photos, a.mp)
    recipe = tmp / "bench.yaml"
    recipe.write_text(recipe_text(steps))
    srv_ws = Workspace.default(tmp / "server")
    own_server = not os.environ.get("PREFECT_API_URL")
    if own_server:
        os.environ["PREFECT_API_URL"] = server.start(srv_ws, ui=False)["url"]
    for k in ("", "_FLOW_RUNS", "_TASK_RUNS"):
        os.environ.setdefault(f"PREFECT_LOGGING_HANDLERS_CONSOLE{k}_LEVEL", "CRITICAL")
    os.environ.setdefault("DISTRIBUTED_LOGGING__DISTRIBUTED", "error")
    try:
        from depthcraft.flows.recipe import DaskSettings, load_recipe
        from depthcraft.flows.runner import run_recipe
        from depthcraft.flows.scale import dask_runner

        rec, _ = load_recipe(recipe)
        h, w = __import__("PIL.Image", fromlist=["Image"]).open(photos[0]).size[::-1]
        print(f"{len(photos)} photos of {w}x{h} ({w * h / 1e6:.2f} MP), steps {' -> '.join(steps)}, "
              f"{os.cpu_count()} CPU(s); server {os.environ['PREFECT_API_URL']}", flush=True)

        configs = [("dask", 1), ("dask", 2)] + ([("threads", 2)] if a.threads else [])
        best: dict[str, dict] = {}
        for rep, (kind, n) in ((r, c) for r in range(a.repeat) for c in configs):
            name = f"{kind}-{n}"
            if kind == "dask":
                runner = dask_runner(rec.model_copy(update={"dask": DaskSettings(workers=n, threads_per_worker=1)}))
            else:
                from prefect.task_runners import ThreadPoolTaskRunner

                runner = ThreadPoolTaskRunner(max_workers=n)
            t0 = time.perf_counter()
            s = run_recipe(recipe, out_root=str(tmp / name), workspace=str(tmp / f"ws-{name}-{rep}"), refresh=True,
                           task_runner=runner)
            wall = time.perf_counter() - t0
            assert not s["failures"], s["failures"][:3]
            import json

            man = json.loads(Path(s["manifest"]).read_text()) if Path(s["manifest"]).is_file() else None
            step_s = sum(x.get("seconds", 0) for x in man["steps"]) if man else float("nan")
            time.sleep(3)  # the server records task runs from events, shortly after they happen
            st = task_stats(s["run_id"])
            row = {"name": name, "workers": n, "wall": wall, "step_s": step_s, **st}
            if name not in best or wall < best[name]["wall"]:
                best[name] = row
            print(f"  {name}: {wall:.1f} s", flush=True)
        rows = list(best.values())

        base = rows[0]
        print(f"\nscale-out: {len(photos)} photos, {' -> '.join(steps)}, fresh workspace each (nothing cached)"
              + (f", best of {a.repeat}" if a.repeat > 1 else "") + "\n")
        hdr = ("runner", "wall s", "photos/s", "vs 1 worker", "startup s", "busy s", "after s", "tasks",
               "step compute s", "Prefect s/task", "gap s/task")
        print("| " + " | ".join(hdr) + " |")
        print("|" + "|".join("-" * (len(x) + 2) for x in hdr) + "|")
        for r in rows:
            over = (r["task_s"] - r["step_s"]) / r["tasks"]
            gap = (r["busy_s"] * r["workers"] - r["task_s"]) / r["tasks"]
            after = r["wall"] - r["startup_s"] - r["busy_s"]
            print(f"| {r['name']:6s} | {r['wall']:6.1f} | {len(photos) / r['wall']:8.3f} | "
                  f"{base['wall'] / r['wall']:10.2f}x | {r['startup_s']:9.1f} | {r['busy_s']:6.1f} | {after:7.1f} | "
                  f"{r['tasks']:5d} | {r['step_s']:14.1f} | {over:14.3f} | {gap:10.3f} |")
        speed = base["wall"] / rows[1]["wall"]
        print(f"\n2 Dask workers vs 1: {speed:.2f}x throughput (target >= 1.6x): {'PASS' if speed >= 1.6 else 'FAIL'}")
        print("startup = flow-run start to first task start (compile, hashing, Dask cluster start); busy = first "
              "task start to last task end; after = the rest of the wall time (publishing, manifest, cluster stop, "
              "flow-run bookkeeping); Prefect s/task = task-run time in the API minus the step's own compute; "
              "gap s/task = worker time between task runs (scheduling, result hand-off)")
        return 0 if speed >= 1.6 else 1
    finally:
        if own_server:
            server.stop(srv_ws)
        if a.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
