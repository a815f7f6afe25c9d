"""The local Prefect server that depthcraft starts on first use and reuses.

Prefect without a server starts a temporary one for every run (10 to 20 s on a small machine).
depthcraft instead keeps one real server on loopback, with its SQLite database in the
workspace, started by ``depthcraft run`` (or ``depthcraft server start``) and reused by every
later run; ``depthcraft server stop|status`` manage it. When ``PREFECT_API_URL`` is set the
user's own server (or Prefect Cloud) is used and nothing is started.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from depthcraft.tasks.lib.errors import DepthcraftError

from .workspace import Workspace

HOST = "127.0.0.1"


def _state_file(ws: Workspace) -> Path:
    return ws.root / "server.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        r = httpx.get(f"{url.rstrip('/')}/health", timeout=timeout)
        return r.status_code == 200
    except httpx.HTTPError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (OSError, ProcessLookupError):
        return False
    return True


def status(ws: Workspace) -> dict | None:
    """The running server's {url, pid, port, log}, or None."""
    try:
        st = json.loads(_state_file(ws).read_text())
    except (OSError, ValueError):
        return None
    if not _pid_alive(st.get("pid", -1)):
        return None
    return st


def server_env(ws: Workspace) -> dict:
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    env.update({
        "PREFECT_HOME": str(ws.prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{ws.prefect_home / 'prefect.db'}",
    })
    return env


def start(ws: Workspace, *, port: int | None = None, timeout: float = 240.0, ui: bool = True) -> dict:
    """Start the server if it is not running; wait until it answers. Returns its state.

    ``timeout``: a fresh database's migrations take 10 to 20 s on an idle machine but over 90 s
    on a busy one (measured at load 20 on 2 cores), so the wait is generous; a server that
    exits fails at once."""
    st = status(ws)
    if st and healthy(st["url"]):
        return st
    ws.prefect_home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = ws.root / "server.log"
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(port),
           "--analytics-off", "--no-late-runs"]
    if not ui:
        cmd.append("--no-ui")
    with open(log, "ab") as lf:
        # a session of its own: the server outlives this command and ignores its Ctrl-C
        proc = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=server_env(ws), start_new_session=True)
    url = f"http://{HOST}:{port}/api"
    st = {"url": url, "pid": proc.pid, "port": port, "log": str(log), "started": time.time()}
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-1500:]
            raise DepthcraftError(f"the local Prefect server exited at start (code {proc.returncode}):\n{tail}",
                                  hint=f"see {log}")
        if healthy(url, timeout=1.0):
            from depthcraft.tasks.lib.store import atomic_write_bytes

            atomic_write_bytes(_state_file(ws), json.dumps(st).encode())
            return st
        time.sleep(0.25)
    proc.terminate()
    raise DepthcraftError(f"the local Prefect server did not answer within {timeout:.0f} s", hint=f"see {log}")


def stop(ws: Workspace, timeout: float = 15.0) -> bool:
    """Stop the workspace's server. Returns whether one was running."""
    st = status(ws)
    if not st:
        _state_file(ws).unlink(missing_ok=True)
        return False
    try:
        os.killpg(st["pid"], signal.SIGTERM)
    except (OSError, ProcessLookupError):
        pass
    deadline = time.time() + timeout
    while time.time() < deadline and _pid_alive(st["pid"]):
        try:
            os.waitpid(st["pid"], os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    if _pid_alive(st["pid"]):
        try:
            os.killpg(st["pid"], signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass
    _state_file(ws).unlink(missing_ok=True)
    return True


def ensure_api(ws: Workspace) -> str:
    """The API URL to use: the user's ``PREFECT_API_URL``, else our local server (started if needed).

    Sets ``PREFECT_API_URL`` in this process so that Prefect, imported afterwards, talks to it.
    """
    url = os.environ.get("PREFECT_API_URL")
    if url:
        return url
    st = start(ws)
    os.environ["PREFECT_API_URL"] = st["url"]
    return st["url"]
