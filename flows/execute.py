"""Running one node (one step on one image) outside of Prefect, and publishing its files.

:func:`execute_node` is what the Prefect task wraps. It takes and returns plain JSON-safe data
(artifact references, never arrays), so the same call works in a thread, in a Dask worker on
another machine that sees the same workspace, or in a test without Prefect at all.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from depthcraft.tasks.catalog import get_step
from depthcraft.tasks.lib.step import StepContext
from depthcraft.tasks.lib import cancel
from depthcraft.tasks.lib.errors import DepthcraftError, OutputError
from depthcraft.tasks.lib.store import Artifact, CorruptObject, copy_verified, sha256_file

from . import progress
from .artifacts import with_progress_artifact
from .recovery import process_tmp
from .workspace import Workspace


def execute_node(payload: dict, upstream: list[dict]) -> dict:
    """Run the step described by ``payload`` on one image; store its outputs under its key.

    ``payload`` holds: key, step_id, kind, image, source (artifact dict), given_depth, params
    (JSON), provider, step_provider, mode, session_id, options, workspace. ``upstream`` holds
    the results of the upstream nodes (as returned by this function). Returns
    ``{"key": str, "outputs": {name: artifact dict}, "seconds": float, "reused": bool}``; with
    ``payload["refresh"]`` the step is recomputed even when the store holds its outputs.
    """
    cancel.check()  # interrupted: start nothing new
    ws = Workspace.default(payload["workspace"])
    store = ws.store
    key = payload["key"]
    label = f"{payload['step_id']}[{payload['image']}]"
    # --refresh recomputes: the record of an earlier run is not reused
    found = None if payload.get("refresh") else store.load_record(key, what=label)
    if found is not None:  # artifacts already made (e.g. Prefect's result store was cleared)
        return {"key": key, "outputs": {k: a.to_dict() for k, a in found.items()}, "seconds": 0.0, "reused": True}
    spec = get_step(payload["kind"])
    params = spec.params.model_validate(payload["params"])
    inputs = [upstream_outputs(store, u, label) for u in upstream]
    workdir = process_tmp(ws) / f"{key[:16]}-{time.monotonic_ns()}"
    ctx = StepContext(
        step_id=payload["step_id"], image_name=payload["image"], source=Artifact.from_dict(payload["source"]),
        workdir=workdir, session_id=payload["session_id"], provider=payload["provider"], mode=payload["mode"],
        upstream=inputs,
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
    return {"key": key, "outputs": {k: a.to_dict() for k, a in outputs.items()}, "seconds": seconds, "reused": False}


def upstream_outputs(store, result: dict, label: str) -> dict[str, Artifact]:
    """An upstream node's outputs, checked against their sha256 before this step reads them.

    The store's record for the upstream key is the truth (a Prefect result cached by an older
    run may name objects since recomputed); an object that no longer matches is quarantined
    and this step fails with one clear line instead of computing from corrupt bytes.
    """
    key = result.get("key")
    if key:
        found = store.load_record(key, what=f"input of {label}")
        if found is not None:
            return found
    outs = {k: Artifact.from_dict(a) for k, a in result["outputs"].items()}
    if not key and store.check_artifacts(outs, what=f"input of {label}"):
        return outs
    raise DepthcraftError(f"{label}: an input made by an upstream step is missing from the store or no "
                          "longer matches its sha256 (quarantined)", hint="run again: the upstream step is recomputed")


def output_name(step_id: str, name: str, primary: str, suffix: str) -> str:
    """``<step id><suffix>`` for the primary output, ``<step id>-<name><suffix>`` for the others."""
    return f"{step_id}{suffix}" if name == primary else f"{step_id}-{name}{suffix}"


def _check_writable(dst: Path) -> None:
    """:class:`OutputError` (one line naming the path, not "run again": the store is fine) when
    ``dst`` cannot be written: its folder cannot be made (a file is in the way), is read-only, or
    a folder has ``dst``'s name."""
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(str(dst.parent), e) from None
    if not dst.parent.is_dir():
        raise OutputError(str(dst.parent), NotADirectoryError(20, "not a folder"))
    if dst.is_dir():
        raise OutputError(str(dst), IsADirectoryError(21, "a folder has this output's name"))
    if not os.access(dst.parent, os.W_OK | os.X_OK):
        raise OutputError(str(dst.parent), PermissionError(13, "the folder is not writable"))


def publish(result: dict, step_id: str, primary: str, out_dir: Path, store=None,
            claimed: dict[Path, str] | None = None) -> dict[str, dict]:
    """Copy a node's published outputs into ``out_dir`` (atomically, skipping identical files).

    Every byte copied is hashed on the way: a store object that no longer matches its sha256
    is never published (it is quarantined and :class:`CorruptObject` raised)."""
    outs = {n: Artifact.from_dict(ad) for n, ad in result["outputs"].items()}
    dests: dict[str, Path] = {}
    for name, a in outs.items():
        if not a.meta.get("publish", True):
            continue
        owner = a.meta.get("sidecar_of")
        if owner in outs:  # a metadata sidecar travels as <the published file>.json
            dests[name] = out_dir / (output_name(step_id, owner, primary, outs[owner].suffix) + ".json")
        else:
            dests[name] = out_dir / output_name(step_id, name, primary, a.suffix)
    if claimed is not None:  # (step `pair-left` and the left view of step `pair`: one file, two owners)
        # all of the step's files are checked before any is written: a clash publishes none of them
        for dst in dests.values():
            owner_step = claimed.get(dst, step_id)
            if owner_step != step_id:  # (errno None: OSError(17, ...) would be "a file is in the way")
                raise OutputError(str(dst), OSError(None, f"step {owner_step!r} of this run wrote this file; "
                                                        f"rename step {step_id!r} or {owner_step!r}"))
        for dst in dests.values():
            claimed[dst] = step_id
    done: dict[str, dict] = {}
    for name, dst in dests.items():
        a = outs[name]
        if not (dst.is_file() and sha256_file(dst) == a.sha256):
            _check_writable(dst)
            try:
                copy_verified(a.path, dst, a.sha256)
            except CorruptObject:
                if store is not None:
                    store.quarantine(a.path, "its bytes no longer match its sha256", f"{step_id} ({dst.name})")
                raise
            except OSError as e:  # (the store's side was readable: _check_writable passed; what failed is the write)
                if e.filename is not None and Path(e.filename).parent == dst.parent or e.filename == str(dst):
                    raise OutputError(str(dst), e) from None
                raise
        done[name] = {"path": str(dst), "sha256": a.sha256, "kind": a.kind}
    return done

