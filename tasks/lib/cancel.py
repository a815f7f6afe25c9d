"""Cooperative cancellation: one process-wide flag that Ctrl-C (SIGINT) or SIGTERM raises.

The command line's signal handler calls :func:`request`; from then on no step starts, no
remote request is sent (the each::sense client checks :func:`check` before every request),
and long loops (video frames) stop at their next :func:`check`. Work already running in other
threads is abandoned by the command line after a short grace period, never waited for.

:class:`Interrupted` derives from ``KeyboardInterrupt`` (not ``Exception``), so retry loops and
``except Exception`` blocks in steps and providers never swallow it.
"""

from __future__ import annotations

import signal
import threading

_event = threading.Event()
_signum: list[int] = []


class Interrupted(KeyboardInterrupt):
    """The run was interrupted by a signal; ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int = signal.SIGINT):
        self.signum = int(signum)
        super().__init__(f"interrupted by {signal.Signals(self.signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def request(signum: int = signal.SIGINT) -> None:
    """Ask everything in this process to stop (first signal wins)."""
    if not _signum:
        _signum.append(int(signum))
    _event.set()


def requested() -> bool:
    return _event.is_set()


def signum() -> int | None:
    return _signum[0] if _signum else None


def check() -> None:
    """Raise :class:`Interrupted` when a stop was requested (call before starting new work)."""
    if _event.is_set():
        raise Interrupted(_signum[0] if _signum else signal.SIGINT)


def sleep(seconds: float) -> None:
    """``time.sleep`` that ends early (raising :class:`Interrupted`) when a stop is requested."""
    if _event.wait(max(0.0, seconds)):
        check()


def reset() -> None:
    """Clear the flag (tests that run several interruptions in one process)."""
    _event.clear()
    _signum.clear()
