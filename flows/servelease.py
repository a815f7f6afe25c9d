"""One ``depthcraft serve`` per deployment in a workspace: the lease, and ``--replace``.

Two serves of one deployment both pick up its runs (each Prefect runner polls the deployment), so
a second ``serve`` of a deployment that another serve of this workspace is serving is refused,
naming that serve and the way to replace it. ``serve --replace`` takes over instead: it asks the
older serve to stop (SIGTERM, as a terminal's ``kill`` does), waits until it has stopped, and
only then registers and serves the deployment itself. The older serve, told by a hand-over note
that it is being replaced, hands the runs it had picked up back to the schedule (Scheduled, now)
instead of cancelling them, so the new serve runs them again (finished steps are cache hits).

The lease is an exclusive ``flock`` on ``<workspace>/serving/<deployment>.lock``, held for the
serve's lifetime: the kernel lets it go when the process ends, also on ``kill -9`` (no stale
lease to clear by hand). The file holds the holder's pid and recipe, read by the one refused.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import signal
import sys
import time
from pathlib import Path

# how long --replace waits for the older serve to stop: its own stop waits up to 30 s for the
# runner and 15 s for its task, then sets its runs' states
REPLACE_WAIT_DEFAULT_S = 120.0


def replace_wait() -> float:
    """``DEPTHCRAFT_SERVE_REPLACE_WAIT`` seconds (default 120), read when ``--replace`` is used: a
    value that is not a number >= 0 is one line naming the variable (it was a traceback of every
    ``serve``, read at import)."""
    from depthcraft.tasks.lib.settings import env_number

    return env_number("DEPTHCRAFT_SERVE_REPLACE_WAIT", REPLACE_WAIT_DEFAULT_S, least=0, units="seconds")

_HELD: dict[str, int] = {}  # deployment full name -> the descriptor holding its lease (this process)


def _folder(workspace: str | os.PathLike) -> Path:
    return Path(workspace) / "serving"


def _stem(full_name: str) -> str:
    """A file name for ``flow/name`` (readable, and unique by a short hash of the exact name)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", full_name)[:80]
    return f"{safe}-{hashlib.sha256(full_name.encode()).hexdigest()[:8]}"


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def take(workspace: str | os.PathLike, full_names: list[str], recipes: list[str], *, replace: bool,
         option_error) -> None:
    """Hold the lease of every deployment in ``full_names`` for this process, before any is
    registered. A deployment another serve holds: refused (``option_error(option, message)``,
    raised) without ``replace``; with it, that serve is stopped (SIGTERM) and waited for. Leases
    already taken are kept on refusal only until the process exits (it exits at once)."""
    wait_s = replace_wait() if replace else 0.0  # (a bad value refused before anyone is asked to stop)
    folder = _folder(workspace)
    for full in full_names:
        path = folder / f"{_stem(full)}.lock"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = _try_lock(path)
        except OSError as e:  # a read-only workspace, a file where the folder should be
            from depthcraft.tasks.lib.errors import DepthcraftError

            raise DepthcraftError(f"cannot take the serve lease {path}: "
                                  f"{'a file is in the way' if isinstance(e, (FileExistsError, NotADirectoryError)) else e.strerror or e}",
                                  hint="serve needs a workspace it can write (--workspace or DEPTHCRAFT_HOME)") from None
        if fd is None:
            holder = _read(path)
            pid = int(holder.get("pid") or 0)
            who = (f"depthcraft serve (pid {pid}, {' '.join(holder.get('recipes') or []) or '?'})" if pid > 0 else
                   "another depthcraft serve (starting up)")
            if not replace:
                raise option_error("--replace", f"deployment {full} is already served by {who} in this workspace; "
                                                f"two serves would both pick up its runs: stop that one, or pass "
                                                f"--replace to take over from it")
            fd = _replace(path, full, pid, who, option_error, wait_s)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "deployment": full, "recipes": recipes,
                                  "since": time.time()}).encode(), 0)
        _handover(path).unlink(missing_ok=True)
        _HELD[full] = fd


def _handover(lock: Path) -> Path:
    return lock.with_suffix(".handover")


def _replace(path: Path, full: str, pid: int, who: str, option_error, wait_s: float) -> int:
    """Stop the serve holding ``path`` (SIGTERM, after a hand-over note) and take its lease."""
    sent = False
    try:
        _handover(path).write_text(json.dumps({"pid": os.getpid(), "start": _started(os.getpid())}))
        print(f"replacing {who} as the serve of {full}: asked it to stop (SIGTERM), waiting for it to hand "
              f"back its runs...", flush=True)
        if pid > 0 and pid != os.getpid():
            try:
                os.kill(pid, signal.SIGTERM)
                sent = True
            except ProcessLookupError:
                pass  # (it ended meanwhile: its lease is free)
            except PermissionError:
                raise option_error("--replace", f"{who} is another user's; it cannot be stopped from here") from None
        return _wait(path, full, pid, who, option_error, wait_s)
    except BaseException as e:  # (Ctrl-C while waiting, given up): the older serve stops as any stop does
        _handover(path).unlink(missing_ok=True)
        if sent and isinstance(e, KeyboardInterrupt):  # (a SIGTERM cannot be taken back: said, not left to guess)
            print(f"{who} was already asked to stop: it stops as any stop does (its unfinished runs cancelled) "
                  f"and nothing serves {full} then; run depthcraft serve again to serve it", file=sys.stderr,
                  flush=True)
        raise


def _wait(path: Path, full: str, pid: int, who: str, option_error, wait_s: float) -> int:
    deadline = time.monotonic() + wait_s
    while True:
        fd = _try_lock(path)
        if fd is not None:
            return fd
        now = int(_read(path).get("pid") or 0)
        if now and now != pid:  # (two --replace at once: the other one took over first)
            raise option_error("--replace", f"deployment {full} was taken over meanwhile by depthcraft serve "
                                            f"(pid {now}); pass --replace again to take over from it")
        if time.monotonic() > deadline:
            raise option_error("--replace", f"{who} did not stop within {wait_s:g} s of SIGTERM; "
                                            f"stop it (kill {pid}), then serve again")
        time.sleep(0.2)


def replaced_by(full_names: list[str], workspace: str | os.PathLike) -> int | None:
    """The pid of the serve taking over from this one (``--replace``), if one asked and is still
    there: a replacing serve killed (-9) while it waited leaves its note behind, and this serve
    then stops as any stop does (its runs cancelled), not "replaced by" a process that is gone."""
    for full in full_names:
        note = _read(_handover(_folder(workspace) / f"{_stem(full)}.lock"))
        pid = note.get("pid")
        if isinstance(pid, int) and pid > 0 and _alive(pid) and note.get("start") in (None, _started(pid)):
            return pid  # (the same process, not another that was given its pid later)
    return None


def _started(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, /proc/PID/stat field 22; None where
    unknown): a pid and its start time name one process, where a pid alone is reused."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # (another user's: there)
        return True
    try:  # a killed child of the test or shell not yet reaped is gone too
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def release() -> None:
    """Let this process's leases go (at its stop, after its runs are handed back or cancelled)."""
    while _HELD:
        _, fd = _HELD.popitem()
        os.close(fd)
