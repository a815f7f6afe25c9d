"""Progress bars that steps can feed from any thread of this process.

The command line installs a reporter (rich) for the length of a run; steps receive a plain
``(done, total)`` callback through their context and never import rich. Where no reporter is
installed (a Dask worker, a deployment run, a test) the callbacks do nothing.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator

_lock = threading.Lock()
_reporter = None


class RichReporter:
    """One overall bar (nodes done) and one bar per long-running node (e.g. video frames)."""

    def __init__(self, total: int, description: str = "steps", *, transient: bool = False):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), transient=transient)
        self.overall = self.progress.add_task(description, total=total)
        self.sub: dict[str, int] = {}

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def advance(self, n: int = 1):
        self.progress.advance(self.overall, n)

    def update(self, label: str, done: int, total: int):
        with _lock:
            tid = self.sub.get(label)
            if tid is None:
                tid = self.sub[label] = self.progress.add_task(f"  {label}", total=total)
        self.progress.update(tid, completed=done, total=total)
        if done >= total:
            self.progress.update(tid, visible=False)


@contextmanager
def reporting(reporter) -> Iterator:
    global _reporter
    prev, _reporter = _reporter, reporter
    try:
        yield reporter
    finally:
        _reporter = prev


def callback(label: str) -> Callable[[int, int], None] | None:
    r = _reporter
    if r is None:
        return None
    return lambda done, total: r.update(label, done, total)


def advance(n: int = 1) -> None:
    r = _reporter
    if r is not None:
        r.advance(n)


def stop() -> None:
    """Stop the live display (an interrupted run exits without unwinding its ``with``)."""
    r = _reporter
    if r is not None:
        try:
            r.progress.stop()
        except Exception:  # noqa: BLE001 - best effort: the terminal is restored either way
            pass
