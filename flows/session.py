"""Sessions: the history of a production, one JSON line per step run ("turn").

A session id comes from the recipe (``session:``) or is derived from the recipe name and its
inputs. Every step run, computed or cached, appends a turn with its inputs, parameters,
provider, outputs and timing; a recipe naming an existing session continues it. Remote
providers receive the same id, so their conversation and ours stay in step.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .workspace import Workspace


class SessionLog:
    def __init__(self, ws: Workspace, session_id: str):
        self.session_id = session_id
        self.path = ws.sessions / f"{session_id}.jsonl"

    def exists(self) -> bool:
        return self.path.exists()

    def append(self, turn: dict) -> dict:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        turn = {"session_id": self.session_id, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **turn}
        line = (json.dumps(turn, sort_keys=True, default=str) + "\n").encode()
        # one write() on an O_APPEND descriptor: concurrent runs never interleave within a line
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        return turn

    def turns(self) -> list[dict]:
        if not self.path.exists():
            return []
        out = []
        # (bytes, not text: one damaged byte must cost its line, not every session)
        for line in self.path.read_bytes().splitlines():
            try:
                turn = json.loads(line)
            except ValueError:  # (UnicodeDecodeError too) a torn or damaged line: skip it, keep the rest
                continue
            if isinstance(turn, dict):
                out.append(turn)
        return out


def list_sessions(ws: Workspace) -> list[tuple[str, int, float]]:
    """(id, turns, last modified) for every session, newest first."""
    rows = []
    for p in Path(ws.sessions).glob("*.jsonl"):
        with open(p, "rb") as f:  # (counted as bytes: a damaged byte does not hide the list)
            n = sum(1 for _ in f)
        rows.append((p.stem, n, p.stat().st_mtime))
    return sorted(rows, key=lambda r: -r[2])
