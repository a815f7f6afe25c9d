"""Notices: one line for each change depthcraft makes on its own (a photo downscaled, a size trimmed).

A step or library function calls :func:`notice`; the line goes to the ``depthcraft.notice``
logger and, where the command line has installed a sink (:func:`set_sink`), to the terminal,
once per process for the same text (a photo read by five steps is downscaled five times but
said once). Nothing here imports the command line: the library stays below the flows.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

log = logging.getLogger("depthcraft.notice")

_lock = threading.Lock()
_sink: Callable[[str], None] | None = None
_said: set[str] = set()


def set_sink(sink: Callable[[str], None] | None) -> None:
    """Where notices are shown (the command line prints them on stderr); None: only logged."""
    global _sink
    with _lock:
        _sink = sink
        _said.clear()


def notice(text: str) -> None:
    """Say ``text`` once (per process and sink)."""
    with _lock:
        if text in _said:
            return
        _said.add(text)
        sink = _sink
    if sink is not None:
        log.info("%s", text)  # shown by the sink; a warning would reach stderr a second time
        sink(text)
    else:
        log.warning("%s", text)
