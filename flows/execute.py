"""Running one node (one step on one image) outside of Prefect, and publishing its files.

:func:`execute_node` is what the Prefect task wraps. It takes and returns plain JSON-safe data
(artifact references, never arrays), so the same call works in a thread, in a Dask worker on
another machine that sees the same workspace, or in a test without Prefect at all.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from depthcraft.tasks.catalog import get_step
from depthcraft.tasks.lib.step import StepContext
from depthcraft.tasks.lib.store import Artifact, atomic_copy, sha256_file

from . import progress
from .artifacts import with_progress_artifact
from .workspace import Workspace


def execute_node(payload: dict, upstream: list[dict]) -> dict:
    """Run the step described by ``payload`` on one image; store its outputs under its key.

    ``payload`` holds: key, step_id, kind, image, source (artifact dict), given_depth, params
    (JSON), provider, step_provider, mode, session_id, options, workspace. ``upstream`` holds
    the results of the upstream nodes (as returned by this function). Returns
    ``{"outputs": {name: artifact dict}, "seconds": float, "reused": bool}``.
    """
    ws = Workspace.default(payload["workspace"])
    store = ws.store
    key = payload["key"]
    found = store.load_record(key)
    if found is not None:  # artifacts already made (e.g. Prefect's result store was cleared)
        return {"outputs": {k: a.to_dict() for k, a in found.items()}, "seconds": 0.0, "reused": True}
    spec = get_step(payload["kind"])
    params = spec.params.model_validate(payload["params"])
    workdir = ws.tmp / f"{key[:16]}-{time.monotonic_ns()}"
    label = f"{payload['step_id']}[{payload['image']}]"
    ctx = StepContext(
        step_id=payload["step_id"], image_name=payload["image"], source=Artifact.from_dict(payload["source"]),
        workdir=workdir, session_id=payload["session_id"], provider=payload["provider"], mode=payload["mode"],
        upstream=[{k: Artifact.from_dict(a) for k, a in u["outputs"].items()} for u in upstream],
        given_depth=Artifact.from_dict(payload["given_depth"]) if payload.get("given_depth") else None,
        options={**payload.get("options", {}), "step_provider": payload.get("step_provider", False)},
        progress=with_progress_artifact(label, progress.callback(label)),
    )
    t0 = time.perf_counter()
    try:
        produced = spec.run(ctx, params)
        seconds = time.perf_counter() - t0
        outputs: dict[str, Artifact] = {}
        paths = [str(o.path) for o in produced.values()]
        for name, out in produced.items():
            shared = paths.count(str(out.path)) > 1  # one file under two names: copy, don't move
            outputs[name] = store.put_file(out.path, out.kind, {**out.meta, "publish": out.publish}, move=not shared)
        store.save_record(key, outputs, {"step": payload["kind"], "seconds": seconds})
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"outputs": {k: a.to_dict() for k, a in outputs.items()}, "seconds": seconds, "reused": False}


def output_name(step_id: str, name: str, primary: str, suffix: str) -> str:
    """``<step id><suffix>`` for the primary output, ``<step id>-<name><suffix>`` for the others."""
    return f"{step_id}{suffix}" if name == primary else f"{step_id}-{name}{suffix}"


def publish(result: dict, step_id: str, primary: str, out_dir: Path) -> dict[str, dict]:
    """Copy a node's published outputs into ``out_dir`` (atomically, skipping identical files)."""
    done: dict[str, dict] = {}
    outs = {n: Artifact.from_dict(ad) for n, ad in result["outputs"].items()}
    for name, a in outs.items():
        if not a.meta.get("publish", True):
            continue
        owner = a.meta.get("sidecar_of")
        if owner in outs:  # a metadata sidecar travels as <the published file>.json
            o = outs[owner]
            dst = out_dir / (output_name(step_id, owner, primary, o.suffix) + ".json")
        else:
            dst = out_dir / output_name(step_id, name, primary, a.suffix)
        if not (dst.exists() and dst.stat().st_size == Path(a.path).stat().st_size and sha256_file(dst) == a.sha256):
            atomic_copy(a.path, dst)
        done[name] = {"path": str(dst), "sha256": a.sha256, "kind": a.kind}
    return done

