"""An ordered map over forked worker processes that write their results into shared memory.

Why processes: the parallax renderer's per-frame work is a few hundred short numpy and OpenCV
calls, and between them each thread needs the GIL. On 2 cores two render threads reach 62-64
frames/s at 1080p, two forked processes 70 (``bench/bench_render.py``). Why fork: the workers
share the parent's photo layers copy-on-write (nothing is pickled) and start in milliseconds,
where a spawned interpreter spends ~0.5 CPU-s importing numpy and OpenCV before its first
frame. Linux only (:func:`available`); elsewhere callers keep their threads. Why not
``concurrent.futures.ProcessPoolExecutor`` with a fork context: it pickles each 3 MB result
through a pipe, keeps every inherited descriptor open in its workers (an encoder's stdin
among them), inherits the parent's SIGINT/SIGTERM handlers, and refuses to start inside a
Dask worker (a daemonic process).

What a worker may do: pure computation on what it inherited (numpy, OpenCV). It never logs or
talks to a server: a fork copies only the calling thread, so locks that other threads held at
that moment stay held in the child. It closes every inherited file descriptor but its own
control pipe (an encoder's stdin, a server socket), ignores SIGINT (Ctrl-C is the parent's to
handle), and exits when its pipe closes, so a parent killed with ``kill -9`` takes its workers
with it.
"""

from __future__ import annotations

import gc
import mmap
import os
import pickle
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import Pipe

import numpy as np

from .errors import ForkFailed, WorkerError

__all__ = ["ForkFailed", "WorkerError", "available", "forked_map"]


def available() -> bool:
    """Whether :func:`forked_map` can run here (Linux with ``os.fork``; not switched off by
    ``DEPTHCRAFT_FORK=0``, ``false``, ``no`` or ``off``)."""
    off = os.environ.get("DEPTHCRAFT_FORK", "1").strip().lower() in ("0", "false", "no", "off")
    return sys.platform.startswith("linux") and hasattr(os, "fork") and not off


def _reset_signals() -> None:
    """In a worker: Ctrl-C is ignored (the parent handles it and then closes the pipes); every
    other signal the parent handles in Python (SIGTERM: cancel the run) takes its default
    action again, so a worker sent one just ends (and the parent reports the signal)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for sig in signal.valid_signals():
        if sig in (signal.SIGINT, signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            if callable(signal.getsignal(sig)):
                signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError, TypeError):
            pass


def _layout(shapes: list[tuple[tuple[int, ...], np.dtype]]) -> tuple[list[int], int]:
    offsets, size = [], 0
    for shape, dtype in shapes:
        offsets.append(size)
        size += -(-int(np.prod(shape)) * np.dtype(dtype).itemsize // 64) * 64  # cache-line aligned
    return offsets, size


def _views(buf: mmap.mmap, base: int, shapes, offsets) -> list[np.ndarray]:
    return [np.frombuffer(buf, np.dtype(dt), int(np.prod(sh)), base + off).reshape(sh)
            for (sh, dt), off in zip(shapes, offsets)]


def forked_map(fn: Callable[[object, list[np.ndarray]], object], items: Iterable, *,
               shapes: list[tuple[tuple[int, ...], np.dtype]], workers: int = 2,
               depth: int = 2) -> Iterator[tuple[list[np.ndarray], object]]:
    """``fn(item, outs)`` for each item on ``workers`` forked processes, results in item order.

    ``outs``: arrays of ``shapes`` (shape, dtype) in memory shared with the parent (a slot,
    reused once its result has been consumed), for ``fn`` to fill; ``fn`` returns a small picklable value. Yields ``(outs, value)``; the arrays
    are valid until the next item is requested (copy what must live longer). Item *i* runs on
    worker ``i % workers``, each with ``depth`` items in flight, so at most
    ``workers * depth`` results are held. Raises what ``fn`` raised (or a :class:`WorkerError`
    naming the exception when it cannot be sent back) and :class:`WorkerError` when a worker
    dies. Closing the generator (or an exception in the consumer) ends the workers.
    """
    offsets, slot_bytes = _layout(shapes)
    nslots = workers * depth
    buf = mmap.mmap(-1, max(slot_bytes * nslots, 1))  # MAP_SHARED | MAP_ANONYMOUS: seen by the forks
    pairs = [Pipe() for _ in range(workers)]
    pids: list[int] = []
    try:
        for k in range(workers):
            with warnings.catch_warnings():  # (3.12+: "multi-threaded, fork may deadlock": see above)
                warnings.simplefilter("ignore", DeprecationWarning)
                try:
                    pid = os.fork()
                except OSError as e:  # strict overcommit, a process limit: nothing ran yet
                    raise ForkFailed(f"could not start render process {k + 1} of {workers} ({e})") from None
            if pid == 0:  # the worker: never returns into the parent's stack
                code = 1
                try:
                    _reset_signals()
                    gc.disable()  # no finalizers of the parent's objects (they may take its locks)
                    conn = pairs[k][1]
                    keep = conn.fileno()
                    os.closerange(3, keep)
                    os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))
                    _serve(fn, conn, buf, shapes, offsets, slot_bytes)
                    code = 0
                finally:
                    os._exit(code)
            pids.append(pid)
        for parent_end, child_end in pairs:
            child_end.close()
        conns = [p[0] for p in pairs]
        it = iter(items)
        sent = 0

        def send() -> bool:
            nonlocal sent
            for item in it:
                try:
                    conns[sent % workers].send((sent % nslots, item))
                except OSError:  # that worker is gone: its turn to answer reports it (EOF)
                    pass
                sent += 1
                return True
            return False

        for _ in range(nslots):
            if not send():
                break
        done = 0
        while done < sent:
            k = done % workers
            try:
                ok, value = conns[k].recv()
            except (EOFError, OSError):
                raise WorkerError(f"render process {k + 1} of {workers} ended without a result "
                                  f"({_exit_status(pids[k])})") from None
            except Exception as e:  # an answer that does not unpickle
                raise WorkerError(f"render process {k + 1} of {workers}: unreadable answer "
                                  f"({type(e).__name__}: {e})") from None
            if not ok:
                raise value
            yield _views(buf, (done % nslots) * slot_bytes, shapes, offsets), value
            done += 1
            send()  # into the slot just consumed
    finally:
        for ends in pairs:
            for end in ends:
                try:
                    end.close()  # the parent's end: EOF, each worker exits after its current item
                except OSError:
                    pass
        for pid in pids:
            _reap(pid)
        try:
            buf.close()
        except BufferError:  # a view of the last result is still referenced: the GC frees it
            pass


def _serve(fn, conn, buf, shapes, offsets, slot_bytes) -> None:
    while True:
        try:
            slot, item = conn.recv()
        except (EOFError, OSError):
            return
        try:
            value = fn(item, _views(buf, slot * slot_bytes, shapes, offsets))
            reply = (True, value)
        except BaseException as e:  # noqa: BLE001 - sent back to the parent, which raises it
            try:  # an exception whose pickle does not rebuild it would fail in the parent
                pickle.loads(pickle.dumps(e))
                reply = (False, e)
            except Exception:  # noqa: BLE001
                reply = (False, WorkerError(f"{type(e).__name__}: {e}"))
        try:
            conn.send(reply)
        except (OSError, ValueError):
            return
        except Exception as e:  # the exception (or value) does not pickle: its text does
            ok, what = reply
            text = f"the result does not pickle ({type(e).__name__}: {e})" if ok else f"{type(what).__name__}: {what}"
            try:
                conn.send((False, WorkerError(text)))
            except OSError:
                return


def _exit_status(pid: int) -> str:
    try:
        got, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return "already reaped"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return f"killed by signal {sig}" + (" (out of memory?)" if sig == signal.SIGKILL else "")
    return f"exit status {os.WEXITSTATUS(status)}"


def _reap(pid: int, timeout: float = 5.0) -> None:
    """Wait for a worker that was told to stop; kill it if it does not within ``timeout``."""
    end = time.monotonic() + timeout
    while True:
        try:
            got, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if got:
            return
        if time.monotonic() > end:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            return
        time.sleep(0.005)
