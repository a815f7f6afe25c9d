"""The local Prefect server that depthcraft starts on first use and reuses.

Prefect without a server starts a temporary one for every run (10 to 20 s on a small machine).
depthcraft instead keeps one real server on loopback, with its SQLite database in the
workspace, started by ``depthcraft run`` (or ``depthcraft server start``) and reused by every
later run; ``depthcraft server stop|status|reset`` manage it. When ``PREFECT_API_URL`` is set the
user's own server (or Prefect Cloud) is used and nothing is started.

What keeps this safe when several commands, crashes and unrelated processes meet:

- **One server per workspace.** Starting, stopping and resetting hold an exclusive OS file lock
  (``server.lock``, ``flock``), so two commands started at once start one server; the second waits
  and reuses it. Before a new server starts, every process that belongs to this workspace's
  server (found by a marker in its environment, or the database path for servers started by
  older versions) is stopped, so a server orphaned by a ``kill -9`` never shares the database.
- **Only our own processes are signalled.** ``server.json`` records the pid together with the
  process's start time and command line, written as soon as the process exists. A record whose
  pid now names another process is stale and is dropped; that process is never signalled.
- **Idle stop.** The server runs under a small supervisor (:mod:`depthcraft.flows.serverd`) that
  stops it after ``DEPTHCRAFT_SERVER_IDLE_MINUTES`` (default 30) without use. Each depthcraft
  command that uses the server holds a shared lock on ``server.clients`` for its lifetime.
- **A damaged database** is named with the way out (``depthcraft server reset``) instead of the
  server's traceback.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

from depthcraft.tasks.lib.errors import DepthcraftError, ParameterError

from .workspace import Workspace

HOST = "127.0.0.1"
#: set in the environment of the supervisor and the server: how our processes are recognised
MARK_ENV = "DEPTHCRAFT_SERVER_WORKSPACE"
IDLE_ENV = "DEPTHCRAFT_SERVER_IDLE_MINUTES"
DEFAULT_IDLE_MINUTES = 30.0
START_TIMEOUT = 300.0  # a loaded small machine has taken 90 s; a server that exits is seen at once
RESET_HINT = ("`depthcraft server reset` moves it aside and starts afresh: outputs and the artifact store "
              "are kept, only the run history in Prefect is lost")


class ServerError(DepthcraftError):
    """The local Prefect server could not be started, reached or stopped."""


def _state_file(ws: Workspace) -> Path:
    return ws.root / "server.json"


def db_path(ws: Workspace) -> Path:
    return ws.prefect_home / "prefect.db"


def idle_seconds() -> float:
    """The idle period after which the server stops (``DEPTHCRAFT_SERVER_IDLE_MINUTES``; 0 = never)."""
    raw = os.environ.get(IDLE_ENV, "").strip()
    if not raw:
        return DEFAULT_IDLE_MINUTES * 60
    try:
        minutes = float(raw)
    except ValueError:
        raise DepthcraftError(f"{IDLE_ENV}={raw!r} is not a number of minutes",
                              hint="e.g. 30, 0.5, or 0 to keep the server up until `depthcraft server stop`") from None
    if minutes < 0 or minutes != minutes:
        raise DepthcraftError(f"{IDLE_ENV}={raw!r} must be 0 or more minutes")
    return minutes * 60


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


# -- locks -------------------------------------------------------------------------------------
@contextmanager
def _flock(path: Path, mode: int, timeout: float, what: str) -> Iterator[int]:
    """Hold ``flock(mode)`` on ``path``; the kernel drops it when this process dies (kill -9 too)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise ServerError(f"waited {timeout:.0f} s for {what} ({path})",
                                      hint="another depthcraft command holds it; wait for it or stop it") from None
                time.sleep(0.1)
        yield fd
    finally:
        os.close(fd)  # closing releases the lock


def _locked(ws: Workspace, timeout: float = START_TIMEOUT + 30):
    """The workspace's server lock: held while a server is started, stopped or reset."""
    return _flock(ws.root / "server.lock", fcntl.LOCK_EX, timeout, "the local Prefect server's lock")


_lease_fd: int | None = None


def hold_lease(ws: Workspace) -> None:
    """Mark this process as a user of the local server until it exits (the idle stop waits for it).

    A shared ``flock`` on ``server.clients``: any number of commands hold it at once, the
    supervisor checks it with a non-blocking exclusive lock, and a killed command releases it.
    """
    global _lease_fd
    if _lease_fd is not None:
        return
    fd = os.open(ws.root / "server.clients", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while a supervisor checks (milliseconds)
    _lease_fd = fd


def release_lease() -> None:
    global _lease_fd
    if _lease_fd is not None:
        os.close(_lease_fd)
        _lease_fd = None


def clients_active(ws: Workspace) -> bool:
    """Whether any depthcraft command (another process) holds a lease on the local server."""
    fd = os.open(ws.root / "server.clients", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


# -- which processes are ours ------------------------------------------------------------------
def _identity(pid: int) -> dict | None:
    import psutil

    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return None
        return {"pid": pid, "create_time": p.create_time(), "cmdline": p.cmdline()}
    except (psutil.Error, OSError):
        return None


def _is_recorded_process(rec: dict, ws: Workspace) -> bool:
    """Whether the pid in ``rec`` is still the very process that was recorded (start time, command
    line) and the server of ``ws`` (a record copied along with a workspace names another's)."""
    try:
        pid, created, cmdline = int(rec["pid"]), float(rec["create_time"]), list(rec["cmdline"])
        if cmdline[cmdline.index("--workspace") + 1] != str(ws.root):
            return False
    except (KeyError, TypeError, ValueError, IndexError):
        return False  # a record without identity (older versions, hand-written) proves nothing
    now = _identity(pid)
    return bool(now) and abs(now["create_time"] - created) < 1.0 and now["cmdline"] == cmdline


def workspace_processes(ws: Workspace) -> list:
    """Every live process of this workspace's server(s): supervisors, servers and their children.

    Recognised by ``DEPTHCRAFT_SERVER_WORKSPACE`` in their environment, or (servers started by
    older depthcraft versions) a Prefect server whose database URL is this workspace's database.
    """
    import psutil

    root, db = str(ws.root), str(db_path(ws))
    me = os.getpid()
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        if p.pid == me:
            continue
        try:
            env = p.environ()
        except (psutil.Error, OSError):
            continue  # not ours to read: another user's process
        if env.get(MARK_ENV) == root:
            found.append(p)
            continue
        cmd = " ".join(p.info.get("cmdline") or [])
        if "prefect" in cmd and "server" in cmd and env.get("PREFECT_API_DATABASE_CONNECTION_URL") == f"sqlite+aiosqlite:///{db}":
            found.append(p)
    return found


def _terminate(procs: list, timeout: float = 15.0) -> None:
    import psutil

    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    alive = _wait_gone(procs, timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    _wait_gone(alive, 5)


def _wait_gone(procs: list, timeout: float) -> list:
    """Wait until the processes are gone (a zombie counts as gone: its parent reaps it). Returns the rest."""
    import psutil

    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for p in procs:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.Error:
                pass
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.1)


# -- the state record --------------------------------------------------------------------------
def _read_record(ws: Workspace) -> dict | None:
    try:
        st = json.loads(_state_file(ws).read_text())
    except (OSError, ValueError):
        return None
    return st if isinstance(st, dict) else None


def _write_record(ws: Workspace, st: dict) -> None:
    from depthcraft.tasks.lib.store import atomic_write_bytes

    atomic_write_bytes(_state_file(ws), json.dumps(st).encode())


def _drop_stale(ws: Workspace) -> None:
    """Remove server.json if it (still) names no live server of ours; never waits for the lock."""
    try:
        with _flock(ws.root / "server.lock", fcntl.LOCK_EX, 0, "the lock"):
            rec = _read_record(ws)
            if rec is not None and not _is_recorded_process(rec, ws):
                _state_file(ws).unlink(missing_ok=True)
    except ServerError:
        pass  # someone is starting or stopping it: their record is the one that counts


def status(ws: Workspace) -> dict | None:
    """The running server's record {url, pid, port, log, ...}, or None (a stale record is dropped)."""
    rec = _read_record(ws)
    if rec is None:
        return None
    if not _is_recorded_process(rec, ws):
        _drop_stale(ws)
        return None
    return rec


def server_env(ws: Workspace) -> dict:
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    env.update({
        MARK_ENV: str(ws.root),
        "PREFECT_HOME": str(ws.prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{db_path(ws)}",
    })
    return env


# -- the database ------------------------------------------------------------------------------
_CORRUPT_SIGNS = ("file is not a database", "database disk image is malformed", "malformed database schema",
                  "unsupported file format")


def check_database(ws: Workspace) -> None:
    """Refuse a damaged ``prefect.db`` with its name and the way out, before a server trips over it.

    Checks the SQLite header and runs ``PRAGMA quick_check`` (read-only; milliseconds for the
    database of a few thousand runs). A missing or empty file is fine: Prefect creates it.
    """
    db = db_path(ws)
    try:
        size = db.stat().st_size
    except FileNotFoundError:
        return
    if size == 0:
        return
    with open(db, "rb") as f:
        header = f.read(16)
    problem = None
    if header != b"SQLite format 3\x00":
        problem = "it is not an SQLite database"
    else:
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
            try:
                rows = con.execute("PRAGMA quick_check").fetchall()
            finally:
                con.close()
            if rows != [("ok",)]:
                problem = f"SQLite reports {'; '.join(str(r[0]) for r in rows[:2])}"
        except sqlite3.DatabaseError as e:
            if "locked" in str(e):
                return  # a live writer, not damage
            problem = f"SQLite reports: {e}"
    if problem:
        raise ServerError(f"the local Prefect server's database {db} is damaged: {problem}", hint=RESET_HINT)


def reset(ws: Workspace) -> Path | None:
    """Stop the workspace's server(s) and move ``prefect.db`` aside. Returns where it went.

    Outputs, the artifact store, sessions and manifests are untouched; only the run history that
    Prefect kept (flow and task runs, deployments) is lost. The next command starts a fresh server.
    """
    with _locked(ws):
        if clients_active(ws):
            raise ServerError("another depthcraft command is using the local Prefect server",
                              hint="wait for it to finish (or stop it), then run `depthcraft server reset` again")
        _stop_locked(ws)
        db = db_path(ws)
        if not db.exists():
            return None
        aside = db.with_name(f"prefect.db.broken-{time.strftime('%Y%m%d-%H%M%S')}")
        db.rename(aside)
        for extra in ("-wal", "-shm", "-journal"):
            side = db.with_name(db.name + extra)
            if side.exists():
                side.rename(aside.with_name(aside.name + extra))
        return aside


# -- start and stop ----------------------------------------------------------------------------
def _start_failed(ws: Workspace, log: Path, code: int, since: int) -> ServerError:
    try:
        with open(log, "rb") as f:  # what this start wrote
            f.seek(since)
            tail = f.read()[-200_000:].decode(errors="replace")
    except OSError:
        tail = ""
    if any(s in tail for s in _CORRUPT_SIGNS):
        return ServerError(f"the local Prefect server's database {db_path(ws)} is damaged "
                           "(the server could not read it)", hint=RESET_HINT)
    lines = [ln for ln in tail.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error" in ln or "error" in ln]  # the cause, not "Server stopped!"
    last = (errors or lines)[-1:] or ["(no output)"]
    return ServerError(f"the local Prefect server exited at start (code {code}): {last[0].strip()[:300]}",
                       hint=f"the full log is {log}")


def start(ws: Workspace, *, port: int | None = None, timeout: float = START_TIMEOUT, ui: bool = True,
          lease: bool = False) -> dict:
    """Start the server if it is not running; wait until it answers. Returns its record.

    Safe to call from several processes at once: exactly one starts the server, the others wait
    for the lock and reuse it. With ``lease``, this process holds a lease on the server it
    returns (:func:`hold_lease`), taken before the idle stop can stop it.
    """
    st = status(ws)
    if st and healthy(st["url"]):
        if not lease:
            return st
        hold_lease(ws)
        # the idle stop removes the record while it holds the leases' lock: if the record is
        # still the same now that we hold a lease, the server stays up
        cur = _read_record(ws)
        if cur and cur.get("pid") == st.get("pid") and _is_recorded_process(cur, ws):
            return st
        release_lease()
    with _locked(ws, timeout + 30):
        st = _read_record(ws)
        if not (st and _is_recorded_process(st, ws) and _answers_soon(st, ws, timeout)):
            st = _start_locked(ws, port=port, timeout=timeout, ui=ui)
        if lease:
            hold_lease(ws)  # under the server lock, which the idle stop takes first
        return st


def _answers_soon(st: dict, ws: Workspace, timeout: float) -> bool:
    """A live server of ours: answering, or still starting (its starter may have been killed)."""
    deadline = st.get("started", 0) + timeout
    while True:
        if healthy(st["url"], timeout=1.0):
            return True
        if time.time() >= deadline or not _is_recorded_process(st, ws):
            return False
        time.sleep(0.25)


def _start_locked(ws: Workspace, *, port: int | None, timeout: float, ui: bool) -> dict:
    _stop_locked(ws)  # whatever is left of this workspace's servers: never two on one database
    check_database(ws)
    idle = idle_seconds()
    ws.prefect_home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = ws.root / "server.log"
    since = log.stat().st_size if log.exists() else 0
    cmd = [sys.executable, "-m", "depthcraft.flows.serverd", "--workspace", str(ws.root), "--port", str(port),
           "--idle", f"{idle:g}"]
    if not ui:
        cmd.append("--no-ui")
    env = server_env(ws)
    # the UI's browser code calls the API at this address (Prefect's default is port 4200)
    env["PREFECT_UI_API_URL"] = env["PREFECT_SERVER_UI_API_URL"] = f"http://{HOST}:{port}/api"
    with open(log, "ab") as lf:
        # a session of its own: the server outlives this command and ignores its Ctrl-C
        proc = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
    # the command line as the kernel will show it once the child has exec'd (right after the
    # fork it still shows ours); the start time does not change at exec
    ident = {"pid": proc.pid, "create_time": (_identity(proc.pid) or {}).get("create_time"), "cmdline": cmd}
    url = f"http://{HOST}:{port}/api"
    st = {"url": url, "port": port, "log": str(log), "started": time.time(), "idle_s": idle,
          "db": str(db_path(ws)), **ident}
    # recorded before it answers, so that a kill -9 of this command leaves no unknown server
    _write_record(ws, st)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            _state_file(ws).unlink(missing_ok=True)
            raise _start_failed(ws, log, proc.returncode, since)
        if healthy(url, timeout=1.0):
            return st
        time.sleep(0.25)
    _stop_locked(ws)
    raise ServerError(f"the local Prefect server did not answer within {timeout:.0f} s", hint=f"see {log}")


def _stop_locked(ws: Workspace, timeout: float = 15.0) -> bool:
    """Stop the recorded server and every other process of this workspace's servers."""
    import psutil

    rec = _read_record(ws)
    procs = []
    if rec and _is_recorded_process(rec, ws):
        try:
            procs.append(psutil.Process(int(rec["pid"])))
        except psutil.Error:
            pass
    known = {p.pid for p in procs}
    procs += [p for p in workspace_processes(ws) if p.pid not in known]
    _state_file(ws).unlink(missing_ok=True)
    if procs:
        _terminate(procs, timeout)
    return bool(procs)


def stop(ws: Workspace, timeout: float = 15.0) -> bool:
    """Stop every server of this workspace. Returns whether one was running.

    Signals only processes proven to be this workspace's server (recorded identity, or the
    marker in their environment); a stale record naming some other process is just dropped.
    """
    with _locked(ws):
        return _stop_locked(ws, timeout)


def _check_external(url: str, timeout: float = 5.0) -> None:
    """One line, not Prefect's traceback, when the user's ``PREFECT_API_URL`` cannot be reached.

    Any HTTP answer counts as reachable (Prefect Cloud answers ``/health`` differently from a
    local server); only a malformed URL or a failed connection is refused.
    """
    hint = "unset PREFECT_API_URL to use depthcraft's own local server"
    health = f"{url.rstrip('/')}/health"
    try:
        r = httpx.get(health, timeout=timeout)
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as e:
        raise ParameterError(f"{url!r} is not an http(s) URL ({e})", parameter="PREFECT_API_URL", hint=hint) from None
    except httpx.HTTPError as e:
        raise ParameterError(f"cannot reach the Prefect API at {url} ({type(e).__name__}: {e})",
                             parameter="PREFECT_API_URL", hint=hint) from None
    # a Prefect API answers /health with JSON (a key it wants, 401/403, is Prefect's own line later);
    # a web server that is not one (404, 5xx, an HTML page) is said here, not in a traceback
    if r.status_code in (401, 403):
        return
    try:
        ok = r.status_code == 200 and r.json() is not None
    except ValueError:
        ok = False
    if not ok:
        kind = r.headers.get("content-type", "?").split(";")[0]
        raise ParameterError(f"{url} answers, but not as a Prefect API (HTTP {r.status_code}, {kind}, on {health})",
                             parameter="PREFECT_API_URL", hint=hint)


def ensure_api(ws: Workspace, *, watch=False) -> str:
    """The API URL to use: the user's ``PREFECT_API_URL``, else our local server (started if needed).

    Sets ``PREFECT_API_URL`` in this process so that Prefect, imported afterwards, talks to it,
    and holds a lease on the server for this process's lifetime (the idle stop waits for it).
    With ``watch`` (True, or the function ``(console, summary, seconds)`` that prints a run's
    summary), a watchdog ends the command cleanly if the server stops during it
    (:mod:`depthcraft.flows.serverwatch`).
    """
    url = os.environ.get("PREFECT_API_URL")
    if url:
        _check_external(url)
        return url
    st = start(ws, lease=True)
    os.environ["PREFECT_API_URL"] = st["url"]
    if watch:
        from . import serverwatch

        serverwatch.watch(ws, st, print_summary=watch if callable(watch) else None)
    return st["url"]

