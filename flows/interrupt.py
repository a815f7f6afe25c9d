"""Ctrl-C (SIGINT) and SIGTERM: stop within seconds, keep what finished, leave nothing running.

Why this is needed: Prefect runs each task in a thread of its ``ThreadPoolTaskRunner``. A
``KeyboardInterrupt`` reaches only the main thread; on its way out Prefect's flow engine marks
the run *Crashed* and its task runner's ``__exit__`` calls ``shutdown(wait=True)``, so the
process waits for every running task, and tasks already waiting on their upstream futures
(threads of their own) start anyway: a remote run went on for a minute, paying for new
requests. The interpreter also joins those (non-daemon) threads at exit.

So ``run`` and ``reproduce`` run the flow in a worker thread (:func:`run_flow`), and the main
thread only waits and handles signals (:func:`install`):

1. the first signal sets the process-wide stop flag (:mod:`depthcraft.tasks.lib.cancel`): no
   step starts, no remote request is sent, video loops stop at their next frame, and the flow
   stops publishing;
2. the main thread gives the flow :data:`GRACE` seconds to end on its own, waits for a publish
   in progress to finish (every published file is written to a temp file and renamed, so none
   is ever half-written), sets the flow run (and its unfinished task runs) to *Cancelled*
   through the Prefect API, removes this process's work folders, prints what finished, and
   exits with 130 (SIGINT) or 143 (SIGTERM) without waiting for abandoned threads;
3. a second signal exits at once.

Finished steps are in the store, so the next run resumes from them.
"""

from __future__ import annotations

import contextvars
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field

from depthcraft.tasks.lib import cancel

GRACE = float(os.environ.get("DEPTHCRAFT_INTERRUPT_GRACE", "2"))
_installed = False


@dataclass
class LiveRun:
    """What the running flow has done so far (read by the main thread on interruption)."""

    flow_run_id: str | None = None
    recipe: str | None = None
    total: int = 0
    nodes: list = field(default_factory=list)
    started: float = field(default_factory=time.time)
    publish_lock: threading.Lock = field(default_factory=threading.Lock)
    stop_hooks: list = field(default_factory=list)  # called with the signal's name once publishing has stopped


_live = LiveRun()


def live() -> LiveRun:
    return _live


def reset() -> LiveRun:
    global _live
    _live = LiveRun()
    return _live


def _handler(signum, _frame):
    if cancel.requested():  # the second signal: exit at once
        os.write(2, f"\n{signal.Signals(signum).name} again: exiting now\n".encode())
        os._exit(128 + (cancel.signum() or signum))
    cancel.request(signum)
    raise cancel.Interrupted(signum)


def install() -> None:
    """Handle SIGINT and SIGTERM in this (main) thread: the first raises
    :class:`~depthcraft.tasks.lib.cancel.Interrupted` and sets the stop flag, the second exits."""
    global _installed
    if threading.current_thread() is not threading.main_thread():
        return
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, _handler)
    _installed = True


def flush_std_streams() -> None:
    """Flush stdout and stderr before an ``os._exit`` (which skips Python's own flush); a closed
    or broken stream is not an error while leaving."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass


def finished() -> None:
    """The command is done: a signal now (while Python winds down Prefect's log and event
    workers) exits at once with 128 + the signal, instead of a traceback from the teardown."""
    if not _installed or threading.current_thread() is not threading.main_thread():
        return
    flush_std_streams()
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda signum, _f: os._exit(128 + signum))


def settle(fut, timeout: float | None = None) -> None:
    """``fut.wait(timeout)`` for a Prefect future, without a step's stop reaching the caller.

    A step stopped by the stop flag raises :class:`~depthcraft.tasks.lib.cancel.Interrupted`
    (a ``KeyboardInterrupt``) in its task thread; Prefect's thread-pool future re-raises it from
    ``wait`` (``concurrent.futures.Future.result``) in the thread that waits: the flow's. There
    Prefect's engine would take it for a crash of the flow and report the flow run *Crashed*,
    late enough under load to overwrite the *Cancelled* that the main thread set. The step's own
    task run records its end; the flow thread only has to see that it is over."""
    try:
        fut.wait(timeout=timeout)
    except KeyboardInterrupt:
        pass


def wait(fut, poll: float = 0.2) -> bool:
    """Wait for a Prefect future; False as soon as a stop is requested."""
    while not cancel.requested():
        settle(fut, poll)
        try:
            if fut.wrapped_future.done():
                settle(fut)  # the done-callback can fire before the final state is attached
                return not cancel.requested()
        except AttributeError:  # a future without a wrapped future: wait for it plainly
            settle(fut)
            return not cancel.requested()
    return False


def run_flow(fn, *, ws, say) -> object:
    """Call ``fn()`` (which runs a flow) in a worker thread; handle Ctrl-C / SIGTERM meanwhile.

    Returns what ``fn`` returns, raises what it raises. On a signal, never returns: the run is
    wound down as the module docstring says and the process exits with 128 + the signal."""
    if not _installed:
        return fn()
    reset()
    box: dict = {}
    ctx = contextvars.copy_context()  # Prefect's settings context (API URL) follows the flow

    def target():
        try:
            box["result"] = ctx.run(fn)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            box["error"] = e

    t = threading.Thread(target=target, name="depthcraft-flow", daemon=True)
    t.start()
    try:
        while t.is_alive():
            t.join(0.25)
    except cancel.Interrupted as e:
        _wind_down(ws, e, t, say)
    if "error" in box:
        raise box["error"]
    return box.get("result")


UNWIND = 2.0  # seconds the flow thread gets to finish unwinding before the last word on its state


def _wind_down(ws, e: cancel.Interrupted, t: threading.Thread, say) -> None:
    name = signal.Signals(e.signum).name
    say(f"{name}: stopping (no new steps or requests; {'Ctrl-C' if e.signum == signal.SIGINT else 'the signal'}"
        " again exits at once)")
    t.join(GRACE)
    run = _live
    got = run.publish_lock.acquire(timeout=10)  # a file being published is finished, never cut
    for hook in list(run.stop_hooks):  # e.g. the manifest marked partial (outlock)
        try:
            hook(name)
        except Exception:  # noqa: BLE001 - winding down goes on whatever a hook meets
            pass
    state = _cancel_flow_run(run.flow_run_id, f"interrupted by {name}")
    # the flow thread may still report Crashed as it unwinds (its stop hooks and folder locks take
    # a moment under load): give it up to UNWIND seconds, then say Cancelled last, in any case
    until = time.monotonic() + UNWIND
    while t.is_alive() and time.monotonic() < until:
        t.join(0.1)
    state = _cancel_flow_run(run.flow_run_id, f"interrupted by {name}", attempts=1) or state
    from .recovery import clean_own_tmp, unregister_run

    clean_own_tmp(ws)
    unregister_run(ws, run.flow_run_id)
    from . import progress

    progress.stop()  # restore the terminal (cursor) before the last lines
    nodes = list(run.nodes)
    done = [n for n in nodes if n["status"] in ("computed", "cached")]
    failed = [n for n in nodes if n["status"] == "failed"]
    say(f"interrupted by {name} after {time.time() - run.started:.1f} s: {len(done)} of {run.total or '?'} step "
        f"run(s) finished ({sum(n['status'] == 'computed' for n in done)} computed, "
        f"{sum(n['status'] == 'cached' for n in done)} cached, {len(failed)} failed); finished steps are kept in "
        "the cache and the next run resumes from them")
    for n in done:
        files = ", ".join(os.path.basename(o["path"]) for o in (n.get("outputs") or {}).values())
        say(f"  finished {n['step']}[{n['image']}]" + (f": {files}" if files else ""))
    if run.flow_run_id:
        say(f"flow run {run.flow_run_id}: {state or 'state unknown (the Prefect server did not answer)'}")
    if got:
        run.publish_lock.release()
    flush_std_streams()
    # abandoned task threads (and Prefect's log workers) must not hold the exit
    os._exit(e.exit_code)


def _cancel_flow_run(flow_run_id: str | None, message: str, attempts: int = 3) -> str | None:
    """Set the flow run and its unfinished task runs to Cancelled (unless already final); a busy
    server gets ``attempts`` tries, half a second apart. None when the server did not answer."""
    for k in range(attempts):
        state = _cancel_once(flow_run_id, message)
        if state is not None or not flow_run_id:
            return state
        if k + 1 < attempts:
            time.sleep(0.5)
    return None


def _cancel_once(flow_run_id: str | None, message: str) -> str | None:
    if not flow_run_id:
        return None
    try:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
        from prefect.states import Cancelled

        with get_client(sync_client=True) as client:
            fr = client.read_flow_run(flow_run_id)
            for tr in client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[fr.id]))):
                if tr.state is not None and (not tr.state.is_final() or tr.state.is_crashed()):
                    client.set_task_run_state(tr.id, Cancelled(message=message), force=True)
            # Crashed too: Prefect's engine may mark the run Crashed while our stop unwinds it
            # (a race under load); the truth is that the user cancelled it
            if fr.state is None or not fr.state.is_final() or fr.state.is_crashed():
                client.set_flow_run_state(fr.id, Cancelled(message=message), force=True)
                return "Cancelled"
            return fr.state.name
    except Exception:  # noqa: BLE001 - the next run marks it Crashed (recovery) if we could not
        return None


def signal_name() -> str:
    s = cancel.signum()
    return signal.Signals(s).name if s else "a signal"
