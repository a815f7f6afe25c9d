"""Ends a command cleanly, within seconds, when the local Prefect server stops under it.

Without a server, Prefect's client retries every API call for minutes ("EventsWorker failed",
then an ``httpx.ConnectError`` traceback) and the run's summary is lost. The steps themselves
do not need the server (results and the cache live in the workspace), so when the watchdog
sees the server's processes gone it:

1. says so at once, in one line naming the server's log;
2. lets the steps that are already running finish (their results are kept in the cache) and
   fails the ones that have not started with "not started: the local Prefect server stopped
   during the run" (:func:`step_guard`, called by the runner's step task);
3. prints the summary of what finished: the runner's own (:func:`finished`), which counts, publishes
   and lists in the manifest every step that finished, also those that finished after the server
   went away. Prefect reports a step's end over the API, so a future of the runner waits for
   minutes once the server is gone; :func:`wait_state` hands the runner the step's outcome from
   this process instead (:func:`step_guard` keeps it). Only if the runner is stuck elsewhere, the
   watchdog's own count of finished steps;
4. exits with :data:`EXIT_CODE` (75, EX_TEMPFAIL: try again), skipping Prefect's exit-time
   retries. The next command starts a new server; finished steps come from the cache.

Only the command line starts a watchdog (``ensure_api(ws, watch=True)``); in any other process
(tests, Dask workers, deployment runs) the guard and the hand-over do nothing.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager

from depthcraft.tasks.lib.errors import DepthcraftError

EXIT_CODE = 75  # EX_TEMPFAIL
POLL_S = 0.5
GRACE_S = 5.0  # after the last running step: how long the runner gets to hand over its summary
MESSAGE = "the local Prefect server stopped during the run"

_lost = threading.Event()
_summary_ready = threading.Event()
_lock = threading.Lock()
_state = {"running": 0, "done": 0, "failed": 0, "summary": None, "t0": time.time(), "watching": False, "beat": 0}
# the outcome of each step run this process ran since the watchdog started, by node key (only
# kept while watching: a long-lived process without a watchdog keeps nothing)
_running_keys: dict[str, int] = {}
_outcomes: dict[str, tuple[dict | None, str | None]] = {}


class ServerLost(DepthcraftError):
    """The local Prefect server stopped while a command was using it."""

    exit_code = EXIT_CODE


def lost() -> bool:
    return _lost.is_set()


@contextmanager
def step_guard(key: str | None = None):
    """Around one step: refuse to start it once the server is gone; count it while it runs.

    Yields a function the step calls with its result, kept under ``key`` for :func:`wait_state`."""
    with _lock:  # (the check and the count under one lock: the watchdog sets _lost under it too)
        if _lost.is_set():
            raise ServerLost(f"not started: {MESSAGE}")
        _state["running"] += 1
        if key is not None and _state["watching"]:
            _running_keys[key] = _running_keys.get(key, 0) + 1
    ok, kept = False, {}
    try:
        yield lambda result: kept.update(result=result)
        ok = True
    except BaseException as e:
        kept["error"] = str(e) or type(e).__name__
        raise
    finally:
        with _lock:
            _state["running"] -= 1
            _state["done" if ok else "failed"] += 1
            if key is not None and key in _running_keys:
                _running_keys[key] -= 1
                if not _running_keys[key]:
                    del _running_keys[key]
                _outcomes[key] = (kept.get("result") if ok else None, None if ok else kept.get("error", "failed"))


class LostState:
    """A step's outcome known in this process once the server is gone, shaped as the little of a
    Prefect state the runner reads (``is_completed``, ``result``, ``name``, ``message``)."""

    def __init__(self, result: dict | None, error: str | None):
        self._result, self.message = result, error
        self.name = "Completed" if result is not None else "Failed"

    def is_completed(self) -> bool:
        return self._result is not None

    def result(self, raise_on_failure: bool = True):
        if self._result is None and raise_on_failure:
            raise DepthcraftError(self.message or "failed")
        return self._result


def wait_state(fut, key: str, poll: float = 0.2):
    """Wait for a step's Prefect future and return its final state; None once a stop (Ctrl-C)
    is requested. Once the server is gone: the step's outcome in this process (a
    :class:`LostState`) as soon as it has one, waiting while it runs; a step that never started
    here (and whose future is not done) is "not started"."""
    from depthcraft.tasks.lib import cancel

    from .interrupt import settle

    while not cancel.requested():
        settle(fut, poll)  # (a step stopped by Ctrl-C raises KeyboardInterrupt from a plain wait)
        try:
            done = fut.wrapped_future.done()
        except AttributeError:  # a future without a wrapped future: wait for it plainly
            settle(fut)
            done = True
        if done:
            settle(fut)  # the done-callback can fire before the final state is attached
            return None if cancel.requested() else fut.state
        if _lost.is_set():
            with _lock:
                if key in _running_keys:
                    continue
                if key in _outcomes:
                    return LostState(*_outcomes[key])
            return LostState(None, f"not started: {MESSAGE}")
    return None


def beat() -> None:
    """The runner is still publishing (after the server went away): the watchdog waits for it."""
    with _lock:
        _state["beat"] += 1


def finished(summary: dict) -> None:
    """The runner's summary of a run (what finished, what failed), handed over before Prefect reports it."""
    _state["summary"] = summary
    _summary_ready.set()


def watch(ws, record: dict, print_summary=None) -> threading.Thread | None:
    """Start the watchdog for the server of ``record`` (its supervisor and the server under it).

    ``print_summary(console, summary, seconds)`` prints a run's summary (the command line's own).
    """
    import psutil

    if _state["watching"]:
        return None
    try:
        sup = psutil.Process(int(record["pid"]))
        procs = [sup, *sup.children(recursive=False)]
    except (psutil.Error, KeyError, ValueError):
        return None
    _state.update(watching=True, t0=time.time(), print_summary=print_summary)
    t = threading.Thread(target=_run, args=(ws, record, procs), name="depthcraft-server-watchdog", daemon=True)
    t.start()
    return t


def _alive(procs) -> bool:
    import psutil

    for p in procs:
        try:
            if not p.is_running() or p.status() == psutil.STATUS_ZOMBIE:
                return False
        except psutil.Error:
            return False
    return True


def _console():
    from . import progress
    from .interrupt import flush_std_streams

    rep = progress._reporter
    if rep is not None and hasattr(rep, "progress"):
        return rep.progress.console
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def _run(ws, record: dict, procs) -> None:
    while _alive(procs):
        time.sleep(POLL_S)
    with _lock:
        _lost.set()
    # from here on this thread ends the process: an exception in the main thread must not print
    # a traceback or run Prefect's exit-time retries first
    sys.excepthook = lambda *a: _wait_forever()
    con = _console()
    con.print(f"[red]error:[/] {MESSAGE} (its log: {record.get('log')}); steps already running finish, "
              "no new ones start")
    idle_since, last_beat = None, None
    while not _summary_ready.is_set():
        with _lock:
            running, b = _state["running"], _state["beat"]
        if running or b != last_beat:  # a step runs, or the runner publishes what finished
            idle_since, last_beat = None, b
        elif idle_since is None:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > GRACE_S:
            break
        _summary_ready.wait(POLL_S)
    summary = _state["summary"]
    try:
        if summary is not None and _state.get("print_summary"):
            _state["print_summary"](con, summary, time.time() - _state["t0"])
        elif summary is not None:
            con.print(f"{summary['recipe']}: {summary['computed']} computed, {summary['cached']} cached, "
                      f"{len(summary['failures'])} failed; manifest {summary['manifest']}")
        else:
            con.print(f"{_state['done']} step run(s) finished and {_state['failed']} failed before the run stopped; "
                      "finished steps are in the cache")
        con.print("the next depthcraft command starts a new server and reuses every finished step")
    finally:
        _exit(EXIT_CODE)


def _wait_forever() -> None:
    while True:
        time.sleep(60)


def _exit(code: int) -> None:
    from . import progress
    from .interrupt import flush_std_streams

    rep = progress._reporter
    try:
        if rep is not None and hasattr(rep, "progress"):
            rep.progress.stop()
    except Exception:  # noqa: BLE001 - leaving anyway
        pass
    flush_std_streams()
    os._exit(code)
