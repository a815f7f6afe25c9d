"""The supervisor of a workspace's local Prefect server: starts it, stops it when idle.

``python -m depthcraft.flows.serverd --workspace DIR --port N --idle SECONDS [--no-ui]`` is what
:func:`depthcraft.flows.server.start` launches (in a session of its own). It runs
``prefect server start`` as its child, in its own process group, and exits when the server
exits, so ``server.json``'s pid (this process) is alive exactly while the server is.

**Idle** means, continuously for the idle period: no depthcraft command holds a lease on the
server (``server.clients``; every ``run``, ``reproduce``, ``deploy`` and ``serve`` does for its
whole life, a killed one releases it at once), and no Prefect worker of a work pool has sent a
heartbeat in the last two minutes (the runs it executes need the server). A check is a lock
test and one or two small API calls every ``min(30 s, idle / 6)``.
When the period is over it takes the workspace's server lock (so no command is starting or
reusing the server at that moment), checks the leases once more, removes ``server.json``
and stops the server. The next command starts a new one transparently.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import os
import signal
import subprocess
import sys
import time

_stopping = False


def _on_signal(signum, frame):  # noqa: ARG001 - signal handler signature
    global _stopping
    _stopping = True


def _log(msg: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} depthcraft supervisor: {msg}", flush=True)


def _api_busy(url: str) -> bool:
    """A Prefect worker polled the server in the last two minutes. False when it does not answer.

    Flow runs left *Running* by a killed process are deliberately not a sign of use: they would
    keep the server up for ever. Runs that depthcraft executes hold a lease instead.
    """
    import httpx

    now = dt.datetime.now(dt.timezone.utc)
    try:
        with httpx.Client(base_url=url, timeout=10) as c:
            r = c.post("/work_pools/filter", json={})
            pools = [p["name"] for p in r.json()] if r.status_code == 200 else []
            for name in pools:
                r = c.post(f"/work_pools/{name}/workers/filter", json={})
                for w in (r.json() if r.status_code == 200 else []):
                    beat = w.get("last_heartbeat_time")
                    if beat and now - dt.datetime.fromisoformat(beat.replace("Z", "+00:00")) < dt.timedelta(minutes=2):
                        return True
    except Exception:  # noqa: BLE001 - a server that cannot answer is not busy
        return False
    return False


def _stop_if_still_idle(ws, me: int) -> bool:
    """Under the server lock: if no command holds a lease, drop server.json. Returns whether to stop."""
    from . import server

    fd = os.open(ws.root / "server.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a command is starting or stopping the server right now
        cfd = os.open(ws.root / "server.clients", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(cfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            # holding both: no command can take a lease now, and the next one finds no record
            rec = server._read_record(ws)
            if rec and rec.get("pid") == me:
                server._state_file(ws).unlink(missing_ok=True)
            return True
        finally:
            os.close(cfd)
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="depthcraft.flows.serverd")
    p.add_argument("--workspace", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--idle", type=float, default=1800.0, help="seconds without use before stopping (0 = never)")
    p.add_argument("--no-ui", action="store_true")
    a = p.parse_args(argv)

    from pathlib import Path

    from .workspace import Workspace

    ws = Workspace(Path(a.workspace))
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, _on_signal)
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(a.port),
           "--analytics-off", "--no-late-runs"]
    if a.no_ui:
        cmd.append("--no-ui")
    child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)  # same process group: stop signals reach both
    url = f"http://127.0.0.1:{a.port}/api"
    tick = max(0.2, min(30.0, a.idle / 6)) if a.idle > 0 else 30.0
    last_used = time.monotonic()
    from . import server

    while True:
        try:
            return child.wait(timeout=0.5 if _stopping else tick)
        except subprocess.TimeoutExpired:
            pass
        if _stopping:
            break
        if a.idle <= 0:
            continue
        if server.clients_active(ws) or _api_busy(url):
            last_used = time.monotonic()
            continue
        if time.monotonic() - last_used >= a.idle and _stop_if_still_idle(ws, os.getpid()):
            _log(f"stopping the server after {a.idle / 60:g} min without use")
            break
    child.terminate()
    try:
        return child.wait(timeout=15)
    except subprocess.TimeoutExpired:
        child.kill()
        return child.wait()


if __name__ == "__main__":
    sys.exit(main())
