"""What a run leaves behind when it dies, and how the next run cleans it up.

A process that is killed (SIGKILL, a power cut, an out-of-memory kill) cannot clean up after
itself. So every run leaves two traces that the next command can judge:

- its work folders live under ``tmp/<host>-<pid>/`` in the workspace: a folder whose process
  is gone (same host, pid dead or reused by another program) is removed;
- each flow run it executes is recorded in ``runs/active/<flow run id>.json`` (pid, process
  start time, API URL) while it runs: a record whose process is gone names a flow run that
  Prefect may still show as *Running*; it is set to *Crashed* (and its unfinished task runs
  too) through the Prefect API, then the record is dropped.

A process is "this one" only when both its pid and its start time match (pids are reused).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
from pathlib import Path

from .workspace import Workspace

_HOST = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname()) or "host"


def _create_time(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:  # noqa: BLE001 - gone, or not ours to see
        return None


_MY_START = _create_time(os.getpid())


def process_alive(pid: int, started: float | None = None) -> bool:
    """Whether ``pid`` runs and (when ``started`` is given) is the process that started then."""
    if pid <= 0:
        return False
    t = _create_time(pid)
    if t is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return started is None
    return started is None or abs(t - started) < 2.0  # start times are recorded to the second


def _owner_gone(m: re.Match) -> bool:
    """Whether the process named by a folder (groups: pid, start time) is gone: not this one,
    and not running with that start time."""
    pid, started = int(m.group(1)), int(m.group(2))
    return pid != os.getpid() and not process_alive(pid, float(started) if started else None)


def process_tmp(ws: Workspace) -> Path:
    """This process's folder for work folders: ``tmp/<host>-<pid>-<start time>``. A worker of a
    local Dask cluster (a daemonic child of the run's process) works inside its parent's
    folder, ``tmp/<host>-<parent pid>-<start>/w<pid>``, so that the run's own clean-up (at the
    end, on Ctrl-C) and the next run's (after a kill -9) remove its work folders too."""
    import multiprocessing

    if multiprocessing.current_process().daemon:
        parent = os.getppid()
        started = _create_time(parent)
        if parent > 1 and started is not None:
            return ws.tmp / f"{_HOST}-{parent}-{int(started)}" / f"w{os.getpid()}"
    return ws.tmp / f"{_HOST}-{os.getpid()}-{int(_MY_START or 0)}"


def oneshot_tmp_prefix() -> str:
    """Prefix of a one-shot command's temporary folder (in the system's temp folder: a one-shot
    has no workspace to keep it in): ``depthcraft-<host>-<pid>-<start>-``, so that a folder
    left by a killed command (a partial video in it) is known as stale by the next one."""
    return f"depthcraft-{_HOST}-{os.getpid()}-{int(_MY_START or 0)}-"


def clean_stale_oneshot_tmp() -> list[Path]:
    """Remove the temporary folders of one-shot commands of this host whose process is gone."""
    import tempfile

    removed = []
    try:
        entries = list(Path(tempfile.gettempdir()).glob(f"depthcraft-{_HOST}-*"))
    except OSError:
        return removed
    for d in entries:
        m = re.match(rf"depthcraft-{re.escape(_HOST)}-(\d+)-(\d+)-", d.name)
        if not m or not d.is_dir() or not _owner_gone(m):
            continue
        shutil.rmtree(d, ignore_errors=True)
        if not d.exists():
            removed.append(d)
    return removed


def clean_own_tmp(ws: Workspace) -> None:
    shutil.rmtree(process_tmp(ws), ignore_errors=True)


def clean_stale_tmp(ws: Workspace) -> list[Path]:
    """Remove work folders left by dead processes of this host. Returns what was removed."""
    removed = []
    try:
        entries = list(ws.tmp.iterdir())
    except OSError:
        return removed
    for d in entries:
        m = re.fullmatch(rf"{re.escape(_HOST)}-(\d+)-(\d+)", d.name)
        if m:
            if not _owner_gone(m):
                continue
        elif re.fullmatch(r"[0-9a-f]{16}-\d+", d.name) and not _live_runs(ws):
            pass  # a clip segment's folder of the old layout (it names no process): no run is live, so stale
        else:
            # folders of the old layout while a run is live, or of other hosts: only when a day old
            try:
                if time.time() - d.stat().st_mtime < 86400:
                    continue
            except OSError:
                continue
        had_files = any(f.is_file() for f in d.rglob("*"))
        shutil.rmtree(d, ignore_errors=True)
        if had_files and not d.exists():  # an empty folder of a finished run is no news
            removed.append(d)
    return removed


def _live_runs(ws: Workspace) -> bool:
    """Whether a flow run of this workspace is being executed by a live process (any host)."""
    for p in _active_dir(ws).glob("*.json"):
        try:
            rec = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if rec.get("host") != _HOST or process_alive(int(rec.get("pid", -1)), rec.get("started")):
            return True
    return False


# -- flow runs of dead processes -------------------------------------------------------------
def _active_dir(ws: Workspace) -> Path:
    return ws.runs / "active"


def register_run(ws: Workspace, flow_run_id: str | None, api_url: str | None) -> Path | None:
    """Note that this process executes ``flow_run_id`` (dropped again by :func:`unregister_run`)."""
    if not flow_run_id:
        return None
    from depthcraft.tasks.lib.store import atomic_write_bytes

    p = _active_dir(ws) / f"{flow_run_id}.json"
    atomic_write_bytes(p, json.dumps({"flow_run_id": flow_run_id, "pid": os.getpid(), "host": _HOST,
                                      "started": _MY_START, "api_url": api_url, "time": time.time(),
                                      "own_server": bool(api_url) and api_url == _own_server_url(ws)}).encode())
    return p


def _own_server_url(ws: Workspace) -> str | None:
    """The URL of this workspace's local server as ``server.json`` records it (no liveness check).

    Its database outlives it: a run of a server that died is marked Crashed through the next
    one, on another port."""
    try:
        return json.loads((ws.root / "server.json").read_text()).get("url")
    except (OSError, ValueError, AttributeError):
        return None


def unregister_run(ws: Workspace, flow_run_id: str | None) -> None:
    if flow_run_id:
        (_active_dir(ws) / f"{flow_run_id}.json").unlink(missing_ok=True)


def dead_runs(ws: Workspace) -> list[dict]:
    """Records of flow runs whose process (on this host) is gone."""
    out = []
    for p in sorted(_active_dir(ws).glob("*.json")):
        try:
            rec = json.loads(p.read_text())
        except (OSError, ValueError):
            p.unlink(missing_ok=True)
            continue
        if rec.get("host") != _HOST or process_alive(int(rec.get("pid", -1)), rec.get("started")):
            continue
        rec["_file"] = str(p)
        out.append(rec)
    return out


def mark_crashed(flow_run_id: str, message: str, *, timeout: float = 10.0) -> str | None:
    """Set a flow run that is not final to *Crashed*, and its unfinished task runs too.

    Returns the state name it had (None when it could not be read)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.states import Crashed

    with get_client(sync_client=True) as client:
        fr = client.read_flow_run(flow_run_id)
        had = fr.state.name if fr.state else None
        if fr.state is None or not fr.state.is_final():
            for tr in client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[fr.id]))):
                if tr.state is not None and not tr.state.is_final():
                    client.set_task_run_state(tr.id, Crashed(message=message), force=True)
            client.set_flow_run_state(fr.id, Crashed(message=message), force=True)
        return had


def recover(ws: Workspace, api_url: str | None = None, *, say=None) -> dict:
    """Clean up after killed runs: stale work folders, and flow runs left *Running* by a dead
    process (set to *Crashed*). Safe to call at the start of every run; never raises."""
    say = say or (lambda line: None)
    removed = clean_stale_tmp(ws)
    crashed = []
    for rec in dead_runs(ws):
        same_db = rec.get("own_server") and api_url == _own_server_url(ws)
        if api_url and rec.get("api_url") and rec["api_url"] != api_url and not same_db:
            continue  # another Prefect API: not ours to judge from here
        try:
            had = mark_crashed(rec["flow_run_id"], f"the depthcraft process (pid {rec.get('pid')}) running this "
                                                   "flow run died (killed?); marked Crashed by the next run")
        except Exception as e:  # noqa: BLE001
            from prefect.exceptions import ObjectNotFound

            if not isinstance(e, ObjectNotFound):
                continue  # the API did not answer: keep the record for the next run
            had = None  # the server does not know it (a reset database): nothing to mark
        if had is not None and had not in ("Completed", "Failed", "Cancelled", "Crashed", "Cached"):
            crashed.append(rec["flow_run_id"])
            say(f"flow run {rec['flow_run_id']} of a process that died (pid {rec.get('pid')}) was {had}: "
                "marked Crashed")
        Path(rec["_file"]).unlink(missing_ok=True)
    if removed:
        say(f"removed {len(removed)} work folder(s) left in {ws.tmp} by a process that died")
    return {"removed_tmp": [str(p) for p in removed], "crashed": crashed}
