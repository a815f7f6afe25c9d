"""Clip segments as Prefect task runs: submission, and their records in the manifest.

See :mod:`.segments` for the segment plan and cache keys. The runner calls
:func:`submit_clip_step` for each step of a clip input instead of submitting one task run, and
:func:`segment_records` when it collects the step's result.
"""

from __future__ import annotations

from typing import Any

from prefect import task

from .segments import FRAMES, ClipPlan, clip_summary, execute_assemble, execute_segment, publish, target
from .workspace import Workspace


def _key(context, parameters: dict) -> str:
    return parameters["payload"]["key"]


@task(name="segment", persist_result=True, cache_key_fn=_key, retries=0)
def segment_task(payload: dict, upstream: list[dict], session_id: str) -> dict:
    """One step on one segment of one clip (see :func:`execute_segment`)."""
    return execute_segment(payload, upstream)


@task(name="assemble", persist_result=True, cache_key_fn=_key, retries=0)
def assemble_task(payload: dict, parts: list[dict], session_id: str) -> dict:
    """A step's segments joined into its published files (see :func:`execute_assemble`)."""
    return execute_assemble(payload, parts)


# -- submission and records (called by the runner) -----------------------------------------------
def submit_clip_step(plan, ws: Workspace, sid: str, img, base_payload: dict, *, segment_futures: dict, opts: dict,
                     refresh: bool):
    """Submit one step of one clip: a ``segment`` task run per segment (after the same segment of
    its upstream steps), then the ``assemble`` task run. Returns the assemble future; the
    segment futures go into ``segment_futures[(sid, image)]``."""
    cp: ClipPlan = plan.clips[img.name]
    node = plan.nodes[(sid, img.name)]
    store = ws.store
    label = f"{sid}[{img.name}]"
    FRAMES.start(label, cp.frames, len(cp.segments))
    tgt = cp.targets.get(sid) or target(node)
    futs = []
    for i, (s, e) in enumerate(cp.segments):
        key = cp.keys[sid][i]
        payload = {**base_payload, "key": key, "index": i, "start": s, "stop": e, "warmup": cp.warmup, "label": label,
                   "target": tgt, "info": cp.info, "keep_depth": sid in cp.chained}
        ups = [segment_futures[(u, img.name)][i] for u in node.upstream]
        o = {**opts, "name": f"segment:{node.kind}", "task_run_name": f"{sid}[{img.name}]#{i} frames {s}-{e}",
             "refresh_cache": refresh or not store.has(key)}
        futs.append(segment_task.with_options(**o).submit(payload, ups, plan.session_id))
    segment_futures[(sid, img.name)] = futs
    payload = {**base_payload, "frames": cp.frames, "target": tgt, "info": cp.info}
    o = {**opts, "name": f"assemble:{node.kind}", "task_run_name": f"{sid}[{img.name}] assemble",
         "refresh_cache": refresh or not store.has(node.key)}
    return assemble_task.with_options(**o).submit(payload, futs, plan.session_id)


def segment_records(plan, sid: str, image: str, futures: list) -> tuple[list[dict], bool]:
    """Manifest records of one clip step's segments (frame range, key, cached or computed,
    seconds), and whether all of them came from the cache."""
    cp: ClipPlan = plan.clips[image]
    out, all_cached = [], True
    from .interrupt import settle

    for i, fut in enumerate(futures):
        settle(fut)
        state = fut.state
        s, e = cp.segments[i]
        rec: dict[str, Any] = {"index": i, "frames": [s, e], "key": cp.keys[sid][i]}
        if state.is_completed():
            r = state.result()
            cached = state.name == "Cached" or r.get("reused", False)
            rec.update(status="cached" if cached else "computed", seconds=round(r["seconds"], 3))
            FRAMES.segment_done(f"{sid}[{image}]", i, e - s)
        else:
            rec.update(status="failed" if state.is_failed() else state.name.lower(), error=_error(state))
            cached = False
        all_cached &= cached
        out.append(rec)
    return out, all_cached


def _error(state) -> str:
    if state.name == "NotReady" or "upstream" in (state.message or "").lower():
        return "skipped: an upstream segment failed"
    try:
        state.result(raise_on_failure=True)
    except Exception as e:  # noqa: BLE001 - we report whatever the segment raised
        return str(e) or type(e).__name__
    return state.message or state.name


def segment_error(records: list[dict]) -> str | None:
    """Why a clip step failed: the first segment that failed by itself (not as a consequence),
    naming its frames; the assemble task alone would only say that an upstream task failed."""
    for r in records:
        if r["status"] == "failed" and not r["error"].startswith("skipped"):
            return f"frames {r['frames'][0]}-{r['frames'][1]}: {r['error']}"
    return None


__all__ = ["assemble_task", "clip_summary", "publish", "segment_error", "segment_records", "segment_task", "submit_clip_step"]
