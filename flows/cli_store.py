"""``depthcraft store verify [--repair]`` and ``depthcraft store gc [--delete]``.

``verify`` hashes every object of the workspace's store against its name (its sha256);
``--repair`` moves the ones that differ to ``store/quarantine/`` (never deleting them), so the
steps that made them are recomputed by the next run. ``gc`` lists the objects and cache records
that no manifest (of a run in ``runs/runs.jsonl``) and no session references, and removes them
with ``--delete``; anything written in the last hour is kept (a run may be writing it).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from depthcraft.tasks.lib.store import Store

from .workspace import Workspace

GRACE_S = 3600.0


def _console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def _objects(store: Store):
    for p in sorted(store.objects.glob("*/*")):
        if p.is_file() and not p.name.startswith("."):
            yield p


def _temp_files(store: Store):
    for folder in (store.objects, store.records):
        for p in folder.rglob(".*.tmp"):
            yield p


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def cmd_verify(a) -> int:
    ws = Workspace.default(a.workspace)
    store = ws.store
    con = _console()
    t0 = time.time()
    n = size = 0
    bad: list[Path] = []
    for p in _objects(store):
        n += 1
        size += p.stat().st_size
        if not store.verify(p, quarantine=False):
            bad.append(p)
    missing = 0
    for r in store.records.glob("*.json"):
        try:
            outs = json.loads(r.read_text()).get("outputs", {})
        except (OSError, ValueError):
            missing += 1
            continue
        if any(not Path(o.get("path", "")).exists() for o in outs.values()):
            missing += 1
    con.print(f"checked {n} object(s), {_mb(size)}, in {time.time() - t0:.1f} s: "
              f"{len(bad)} do not match their sha256")
    for p in bad:
        if a.repair:
            dst = store.quarantine(p, "its bytes do not match its sha256", "store verify")
            con.print(f"  [red]corrupt[/] {p} -> moved to {dst}")
        else:
            con.print(f"  [red]corrupt[/] {p}")
    if missing:
        con.print(f"{missing} cache record(s) name an object that is gone: their steps are recomputed by the next run")
    q = list(store.quarantine_dir.glob("*")) if store.quarantine_dir.exists() else []
    if q:
        con.print(f"quarantine: {len(q)} file(s) in {store.quarantine_dir} (kept for inspection; delete them by hand)")
    if bad and not a.repair:
        con.print("run `depthcraft store verify --repair` to move them aside; the next run recomputes them")
        return 1
    return 0


def references(ws: Workspace) -> tuple[set[str], set[str], set[str], list[str]]:
    """(full record keys, 16-character key prefixes, output sha256s, manifests read) that the
    manifests of recorded runs and the session logs reference."""
    keys, prefixes, shas, manifests = set(), set(), set(), []
    runs = ws.runs / "runs.jsonl"
    paths = set()
    if runs.exists():
        for line in runs.read_text().splitlines():
            try:
                m = json.loads(line).get("manifest")
            except ValueError:
                continue
            if m:
                paths.add(m)
    for m in sorted(paths):
        try:
            man = json.loads(Path(m).read_text())
        except (OSError, ValueError):
            continue
        manifests.append(m)
        for n in man.get("steps", []):
            if n.get("key"):
                keys.add(n["key"])
            for o in (n.get("outputs") or {}).values():
                shas.add(o.get("sha256"))
    for s in ws.sessions.glob("*.jsonl"):
        for line in s.read_text(errors="replace").splitlines():
            try:
                t = json.loads(line)
            except ValueError:
                continue
            if t.get("key"):
                prefixes.add(str(t["key"])[:16])
            for o in (t.get("outputs") or {}).values():
                if isinstance(o, dict):
                    shas.add(o.get("sha256"))
    return keys, prefixes, shas, manifests


def garbage(ws: Workspace, *, now: float | None = None, grace: float = GRACE_S) -> dict:
    """What gc would remove: {records: [...], objects: [...], temp: [...], bytes: n}."""
    now = now or time.time()
    store = ws.store
    keys, prefixes, shas, manifests = references(ws)
    keep_objects: set[str] = set(s for s in shas if s)
    dead_records = []
    for r in sorted(store.records.glob("*.json")):
        key = r.stem
        try:
            body = json.loads(r.read_text())
            objs = [Path(o["path"]).name[:64] for o in body.get("outputs", {}).values()]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            body, objs = None, []
        recent = now - r.stat().st_mtime < grace
        if key in keys or key[:16] in prefixes or recent:
            keep_objects.update(objs)
        else:
            dead_records.append(r)
    dead_objects, size = [], 0
    for p in _objects(store):
        st = p.stat()
        if p.name[:64] in keep_objects or now - st.st_mtime < grace:
            continue
        dead_objects.append(p)
        size += st.st_size
    temp = [p for p in _temp_files(store) if now - p.stat().st_mtime >= grace]
    return {"records": dead_records, "objects": dead_objects, "temp": temp, "bytes": size, "manifests": manifests}


def cmd_gc(a) -> int:
    ws = Workspace.default(a.workspace)
    con = _console()
    g = garbage(ws)
    verb = "removed" if a.delete else "would remove"
    con.print(f"{verb} {len(g['objects'])} object(s) ({_mb(g['bytes'])}) and {len(g['records'])} cache record(s) "
              f"that no manifest ({len(g['manifests'])} read, from {ws.runs / 'runs.jsonl'}) and no session "
              f"references, and {len(g['temp'])} leftover temp file(s); anything newer than "
              f"{GRACE_S / 3600:.0f} h is kept")
    if a.verbose_list:
        for p in g["objects"] + g["records"] + g["temp"]:
            con.print(f"  {p}")
    if not a.delete:
        if g["objects"] or g["records"] or g["temp"]:
            con.print("dry run: nothing was deleted; `depthcraft store gc --delete` deletes them")
        return 0
    for p in g["records"] + g["objects"] + g["temp"]:
        p.unlink(missing_ok=True)
    return 0


def register(sub) -> None:
    st = sub.add_parser("store", help="check (verify) or clean (gc) the artifact store")
    ss = st.add_subparsers(dest="store_action", required=True, metavar="ACTION")
    v = ss.add_parser("verify", help="hash every object against its name (sha256); --repair quarantines bad ones")
    v.add_argument("--repair", action="store_true", help="move corrupt objects to store/quarantine/ (never deleted)")
    v.set_defaults(func=cmd_verify)
    g = ss.add_parser("gc", help="objects and records no manifest or session references (dry run unless --delete)")
    g.add_argument("--delete", action="store_true", help="delete them (default: only list what would go)")
    g.add_argument("--list", dest="verbose_list", action="store_true", help="print every path")
    g.set_defaults(func=cmd_gc)
