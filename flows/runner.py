"""A recipe as a Prefect flow: one task run per step and image, cached by content.

The flow reads like the recipe it runs: load the recipe, compile the plan, submit each step
for each image with its upstream futures (so Prefect sees the DAG and runs independent steps
and images concurrently), then publish outputs, log the session turns and write the manifest.

Caching is Prefect's own: each task run's cache key is the node's content key (see
:mod:`depthcraft.flows.compile`), results are persisted in the workspace, and a hit shows as *Cached* in
Prefect. Tasks exchange artifact references (path + sha256), never arrays.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.context import get_run_context
from prefect.task_runners import ThreadPoolTaskRunner

from depthcraft.tasks.lib import cancel
from depthcraft.tasks.lib import store as store_lib
from depthcraft.tasks.lib.errors import DepthcraftError, OutputError
from depthcraft.tasks.lib.store import CorruptObject

from . import interrupt
from . import manifest as mf
from . import progress
from . import segment_runs as clipseg
from . import serverwatch
from .compile import Plan, compile_plan, provider_identity
from .execute import execute_node, publish
from .recipe import load_recipe
from .session import SessionLog
from .workspace import Workspace


class RunFailed(DepthcraftError):
    """Some nodes failed; everything else was produced and kept. Carries the run summary."""

    def __init__(self, summary: dict):
        self.summary = summary
        n = len(summary["failures"])
        super().__init__(f"{n} step run{'s' if n != 1 else ''} failed; see the summary above "
                         f"and {summary.get('manifest') or 'the log'}")


def _node_key(context, parameters: dict) -> str:
    return parameters["payload"]["key"]


@task(name="step", persist_result=True, cache_key_fn=_node_key, retries=0)
def step_task(payload: dict, upstream: list[dict], session_id: str) -> dict:
    """One step on one image: a thin wrapper over :func:`depthcraft.flows.execute.execute_node`."""
    from .serverwatch import step_guard

    with step_guard(payload["key"]) as keep:  # no new step once the local server has stopped (see serverwatch)
        result = execute_node(payload, upstream)
        keep(result)  # (its outcome reaches the runner even when Prefect cannot report it)
        return result


def default_workers() -> int:
    env = os.environ.get("DEPTHCRAFT_WORKERS")
    return int(env) if env else max(2, os.cpu_count() or 2)


def _payload(plan: Plan, ws: Workspace, sid: str, img, refresh: bool = False) -> dict:
    node = plan.nodes[(sid, img.name)]
    return {"refresh": refresh,
        "key": node.key, "step_id": sid, "kind": node.kind, "image": img.name,
        "source": img.source.to_dict(), "given_depth": img.given_depth.to_dict() if img.given_depth else None,
        "params": node.params.model_dump(mode="json"), "provider": node.provider, "step_provider": node.step_provider,
        "mode": plan.recipe.mode, "session_id": plan.session_id, "workspace": str(ws.root),
        "options": {**plan.options(), "answers": plan.recipe.answers,
                    "provider_options": plan.recipe.provider_options},
    }


def run_plan(plan: Plan, ws: Workspace, *, refresh: bool = False) -> dict:
    """Submit every node, wait, publish, log and write the manifest. Returns the run summary."""
    started = time.time()
    try:
        run_id = str(get_run_context().flow_run.id)
    except Exception:  # noqa: BLE001 - outside a flow run (tests of run_plan itself)
        run_id = None
    store = ws.store
    session = SessionLog(ws, plan.session_id)
    futures: dict = {}
    meta: dict = {}
    quarantined_before = len(store_lib.quarantined())
    live = interrupt.live()
    live.total, live.recipe = len(plan.nodes), plan.recipe.name
    from .outlock import OutputFolder  # one writer per output folder; a manifest that never lies

    outfolder = OutputFolder(plan, mf.manifest_dir([plan.out_dirs[i.name] for i in plan.images], plan.out_root),
                             run_id=run_id, started=started)
    live.stop_hooks.append(outfolder.stopped)
    # Prefect leases a concurrency slot over the API for every tag of a task run, limited or not
    # (about 0.5 s per task on 2 busy cores): tag a task only with the tags that have a limit.
    limited = _limited_tags()
    seg_futures: dict = {}  # (step id, clip name) -> a future per segment
    for img in plan.ok_images:
        for sid in plan.order:
            node = plan.nodes[(sid, img.name)]
            tags = [t for t in ("depthcraft", f"step:{node.kind}", node.provider.split(":")[0]) if t in limited]
            # a missing record, or one whose objects no longer match their sha256 (quarantined
            # here), makes Prefect recompute the step instead of returning its cached result
            label = f"{sid}[{img.name}]"
            opts = dict(name=node.kind, task_run_name=label, tags=tags, result_storage=ws.results,
                        refresh_cache=refresh or not store.has(node.key, what=label))
            ups = [futures[(u, img.name)] for u in node.upstream]
            if img.name in plan.clips:  # a clip: a task run per segment, then one that assembles them
                fut = clipseg.submit_clip_step(plan, ws, sid, img, _payload(plan, ws, sid, img, refresh),
                                               segment_futures=seg_futures,
                                               opts=dict(tags=tags, result_storage=ws.results), refresh=refresh)
            else:
                fut = step_task.with_options(**opts).submit(_payload(plan, ws, sid, img, refresh), ups,
                                                            plan.session_id)
            futures[(sid, img.name)] = fut
            meta[fut.task_run_id] = (sid, img.name)

    nodes, failures = [], []
    for img in plan.images:
        if img.error:
            failures.append({"step": None, "image": img.name, "error": img.error})
    interrupted = False
    for fut in list(futures.values()):  # submission order: upstream before downstream
        sid, image = meta[fut.task_run_id]
        node = plan.nodes[(sid, image)]
        # the final state; once the server is gone, the step's outcome in this process (serverwatch)
        state = serverwatch.wait_state(fut, node.key) if image not in plan.clips else \
            (fut.state if interrupt.wait(fut) else None)
        if state is None:  # Ctrl-C / SIGTERM: publish nothing more, wind down
            interrupted = True
            break
        rec = {"step": sid, "kind": node.kind, "image": image, "key": node.key,
               "params": node.params.model_dump(mode="json"), "provider": node.provider}
        if node.requested_provider:  # e.g. auto -> onnx:depth-anything-v2-small, and why
            rec["provider_requested"] = {"name": node.requested_provider,
                                         **plan.resolved.get(node.requested_provider, {})}
        if image in plan.clips:
            rec["segments"] = clipseg.segment_records(plan, sid, image, seg_futures[(sid, image)])[0]
        if state.is_completed():
            result = state.result()
            cached = state.name == "Cached" or result.get("reused", False)
            err = "its outputs are missing from the store or corrupt (quarantined); run again to recompute"
            if not outfolder.begin():  # interrupted while another run held the output folder
                interrupted = True
                break
            try:
                if image in plan.clips:  # segments were checked when assembled
                    outs = clipseg.publish(result, sid, plan.specs[sid].primary, plan.out_dirs[image])
                else:
                    outs = _publish_checked(store, node.key, result, sid, plan, image)
            except _Stopped:
                interrupted = True
                break
            except OutputError as e:  # (the output folder, not the store: running again does not help)
                outs, err = None, str(e)
            except (CorruptObject, OSError, DepthcraftError) as e:
                outs, err = None, f"its outputs are missing from the store or corrupt ({e}); run again to recompute"
            if outs is None:
                rec.update(status="failed", cached=False, error=err)
                failures.append({"step": sid, "image": image, "error": err})
            else:
                rec.update(status="cached" if cached else "computed", cached=cached,
                           seconds=round(result["seconds"], 3), outputs=outs)
                rec.update(_service_session(result))
        else:
            err = _state_error(state)
            if image in plan.clips:
                err = clipseg.segment_error(rec["segments"]) or err
            rec.update(status="failed" if not err.startswith("skipped") else "skipped", cached=False, error=err)
            failures.append({"step": sid, "image": image, "error": err})
        nodes.append(rec)
        live.nodes.append(rec)
        outfolder.record(rec, failures)
        session.append({"run_id": run_id, "recipe": plan.recipe.name,
                        **{k: v for k, v in rec.items() if k != "key"}, "key": node.key[:16]})
        progress.advance()
        serverwatch.beat()

    if interrupted:
        outfolder.flush()
        outfolder.stopped(interrupt.signal_name())
        outfolder.close()
        return {"interrupted": True, "run_id": run_id, "recipe": plan.recipe.name, "session_id": plan.session_id,
                "nodes": len(plan.nodes), "finished": nodes, "failures": failures}
    order = {(sid, img.name): i for i, (sid, img) in enumerate((s, im) for im in plan.images for s in plan.order)}
    nodes.sort(key=lambda n: order.get((n["step"], n["image"]), 0))
    idents = {}
    for p in {n.provider for n in plan.nodes.values()}:
        try:
            idents[p] = provider_identity(p, plan.recipe.mode, {})
        except DepthcraftError:
            pass
    man = mf.build(plan, run_id=run_id, started=started, nodes=nodes, failures=failures, identities=idents)
    services = sorted({n["service_session"] for n in nodes if n.get("service_session")})
    if services:  # the recipe session as the remote service holds it (one service session per 50 messages)
        man["service_sessions"] = {plan.session_id: services}
    bad = store_lib.quarantined()[quarantined_before:]
    if bad:  # the manifest says which store objects were found corrupt (and recomputed)
        man["quarantined"] = bad
    if plan.clips:
        man["clips"] = {name: clipseg.clip_summary(cp) for name, cp in plan.clips.items()}
    folder = mf.manifest_dir([plan.out_dirs[i.name] for i in plan.images], plan.out_root)
    outfolder.finishing()  # (a run that published nothing holds the folder too); no partial manifest after this
    mpath = mf.write(man, folder)
    summary = {
        "run_id": run_id, "recipe": plan.recipe.name, "session_id": plan.session_id, "manifest": str(mpath),
        "out_dir": str(folder), "computed": sum(n["status"] == "computed" for n in nodes),
        "cached": sum(n["status"] == "cached" for n in nodes), "failures": failures,
        "nodes": len(nodes), "images": len(plan.images), "duration_s": round(time.time() - started, 3),
    }
    serverwatch.beat()
    summary["gallery"] = _show_run(man, folder, artifacts=False)
    outfolder.close()
    _record_run(ws, summary)
    from .serverwatch import finished

    finished(summary)  # the command line's watchdog prints it if the server has stopped (even during the next line)
    _show_run(man, folder, gallery=False)  # the Prefect artifacts: the API, last
    return summary


def _service_session(result: dict) -> dict:
    """``{"service_session": id}`` when a remote provider says which of its sessions held the turn."""
    for a in result.get("outputs", {}).values():
        sid = (a.get("meta") or {}).get("service_session")
        if sid:
            return {"service_session": sid}
    return {}


def _show_run(man: dict, folder: Path, *, artifacts: bool = True, gallery: bool = True) -> str | None:
    """The run's gallery (index.html beside the manifest) and its Prefect artifacts. Looking at
    a run is never a reason for it to fail: a problem here is logged, and the outputs stand."""
    from .artifacts import publish_run
    from .gallery import write_gallery

    try:
        log = get_run_logger()
    except Exception:  # noqa: BLE001 - outside a flow run
        import logging

        log = logging.getLogger(__name__)
    written = None
    try:
        if gallery:
            written = str(write_gallery(man, folder))
    except Exception as e:  # noqa: BLE001
        log.warning("no gallery written: %s", e)
    try:
        from .serverwatch import lost

        if artifacts and not lost():  # (its API calls would wait for minutes on a server that is gone)
            publish_run(man, folder)
    except Exception as e:  # noqa: BLE001
        log.warning("no Prefect artifacts published: %s", e)
    return written


class _Stopped(Exception):
    """Ctrl-C / SIGTERM arrived while a node waited to be published."""


def _publish_checked(store, key: str, result: dict, sid: str, plan: Plan, image: str) -> dict | None:
    """Publish a finished node from its store record (the truth for its key), every byte
    checked against its sha256. None when the record or an object has gone bad meanwhile."""
    found = store.load_record(key, what=f"{sid}[{image}]")
    if found is None:
        return None
    result = {**result, "outputs": {k: a.to_dict() for k, a in found.items()}}
    with interrupt.live().publish_lock:
        if cancel.requested():  # interrupted while waiting: publish nothing more
            raise _Stopped
        return publish(result, sid, plan.specs[sid].primary, plan.out_dirs[image], store,
                       claimed=plan.published_by)


def _limited_tags() -> set[str]:
    from .limits import limited_tags

    try:
        return limited_tags()
    except Exception:  # noqa: BLE001 - no API answer: run untagged rather than not at all
        return set()


def _state_error(state) -> str:
    if state.name == "NotReady" or "upstream" in (state.message or "").lower():
        return "skipped: an upstream step failed"
    try:
        state.result(raise_on_failure=True)
    except Exception as e:  # noqa: BLE001 - we report whatever the step raised
        return str(e) or type(e).__name__
    return state.message or state.name


def _record_run(ws: Workspace, summary: dict) -> None:
    import json

    ws.runs.mkdir(parents=True, exist_ok=True)
    line = json.dumps({k: summary[k] for k in ("run_id", "recipe", "session_id", "out_dir", "manifest", "computed",
                                                 "cached", "nodes", "duration_s")}
                      | {"failed": len(summary["failures"]), "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
    with open(ws.runs / "runs.jsonl", "a") as f:
        f.write(line + "\n")


@flow(name="depthcraft-recipe", log_prints=True, validate_parameters=False)
def recipe_flow(recipe_text: str, recipe_file: str = "<recipe>", overrides: list[str] | None = None,
                out_root: str | None = None, workspace: str | None = None, refresh: bool = False) -> dict:
    """Run a recipe: compile it (inputs are resolved now, so a scheduled run sees new photos),
    run every step on every image, write outputs, session turns and the manifest."""
    recipe, src = load_recipe(recipe_file, overrides=overrides or [], text=recipe_text)
    if recipe.concurrency:
        from .limits import apply_concurrency_limits

        apply_concurrency_limits(recipe)
    ws = Workspace.default(workspace)
    run_id = _register(ws)
    try:
        plan = compile_plan(recipe, src, ws, out_root=out_root or os.getcwd())
        get_run_logger().info("recipe %s: %d image(s) x %d step(s), session %s", recipe.name, len(plan.images),
                              len(plan.order), plan.session_id)
        summary = run_plan(plan, ws, refresh=refresh)
    except KeyboardInterrupt:  # a stop that reached this thread (cancel.Interrupted) is the user's, not a crash
        if not cancel.requested():
            raise
        from prefect.states import Cancelled

        return Cancelled(message=f"interrupted by {interrupt.signal_name()}")
    finally:
        from .outlock import release
        from .recovery import unregister_run

        release(run_id)  # output folders a run that raised still held
        if not serverwatch.lost():  # (else kept: the next run marks this flow run Crashed through the new server)
            unregister_run(ws, run_id)
    if summary.get("interrupted"):
        from prefect.states import Cancelled

        done = sum(n["status"] in ("computed", "cached") for n in summary["finished"])
        return Cancelled(message=f"interrupted by {interrupt.signal_name()}: {done} of {summary['nodes']} "
                                 "step run(s) finished")
    if summary["failures"]:
        raise RunFailed(summary)
    return summary


def _register(ws: Workspace) -> str | None:
    """Note this flow run as running in this process (see :mod:`depthcraft.flows.recovery`)."""
    from .recovery import register_run

    try:
        run_id = str(get_run_context().flow_run.id)
    except Exception:  # noqa: BLE001
        return None
    interrupt.live().flow_run_id = run_id
    register_run(ws, run_id, os.environ.get("PREFECT_API_URL"))
    return run_id


def flow_for(recipe, *, task_runner=None):
    """The recipe flow named after the recipe, with the recipe's task runner."""
    runner = task_runner or ThreadPoolTaskRunner(max_workers=default_workers())
    return recipe_flow.with_options(name=f"depthcraft-{recipe.name}", task_runner=runner,
                                    flow_run_name=f"{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}")


def run_recipe(path: str | Path, *, overrides: list[str] | None = None, out_root: str | None = None,
               workspace: str | None = None, refresh: bool = False, task_runner=None) -> dict:
    """Run a recipe file as a Prefect flow in this process. Raises RunFailed on partial failure."""
    text = Path(path).read_text(encoding="utf-8") if Path(path).exists() else None
    recipe, _ = load_recipe(path, overrides=overrides or [])  # fail fast, before any flow run exists
    f = flow_for(recipe, task_runner=task_runner)
    return f(recipe_text=text, recipe_file=str(Path(path).resolve()), overrides=list(overrides or []),
             out_root=str(Path(out_root or os.getcwd()).resolve()), workspace=workspace, refresh=refresh)


def _env_flow():
    """The recipe flow with a Dask task runner configured from the environment.

    A work-pool deployment names this flow as its entrypoint (``depthcraft.flows.runner.recipe_flow_dask``)
    when the recipe asks for Dask; the worker's job sets ``DEPTHCRAFT_DASK_ADDRESS`` (and/or
    ``_WORKERS``, ``_THREADS``) through the deployment's job variables.
    """
    from .scale import dask_runner

    return recipe_flow.with_options(task_runner=dask_runner())


def __getattr__(name: str):
    # built on first access so that importing this module does not import Prefect (whose
    # settings are read at import time, before ensure_api has set PREFECT_API_URL)
    if name == "recipe_flow_dask":
        flow = _env_flow()
        globals()[name] = flow
        return flow
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
