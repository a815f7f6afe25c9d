"""How many remote calls run at once: a process-wide slot pool and one lock per session.

The semaphore bounds the calls in flight (``EACHSENSE_MAX_CONCURRENCY``, default 4); the
per-session lock keeps one conversation turn at a time in a service session (the service
answers ``SESSION_BUSY`` otherwise).
"""

from __future__ import annotations

import contextlib
import os
import threading

_sem_lock = threading.Lock()
_semaphore: threading.BoundedSemaphore | None = None
_session_locks: dict[str, threading.RLock] = {}


def max_concurrency() -> int:
    try:
        return max(1, int(os.environ.get("EACHSENSE_MAX_CONCURRENCY", "4")))
    except ValueError:
        return 4


def set_max_concurrency(n: int) -> None:
    """Replace the process-wide limit (tests; a runner that knows better than the env)."""
    global _semaphore
    with _sem_lock:
        _semaphore = threading.BoundedSemaphore(max(1, int(n)))


@contextlib.contextmanager
def remote_slot():
    """Hold one of the process-wide remote-call slots for the duration of the block."""
    global _semaphore
    with _sem_lock:
        if _semaphore is None:
            _semaphore = threading.BoundedSemaphore(max_concurrency())
        sem = _semaphore
    with sem:
        yield


def session_lock(session_id: str) -> threading.RLock:
    """One lock per session: a conversation runs one turn at a time (re-entrant for the same thread)."""
    with _sem_lock:
        return _session_locks.setdefault(session_id, threading.RLock())
