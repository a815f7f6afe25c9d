"""The chat answer's event stream: SSE framing by ``httpx-sse``, events folded into a result.

Framing follows the SSE specification (WHATWG HTML, "server-sent events"): ``data:`` lines are
joined until a blank line; comments and ``event:``, ``id:``, ``retry:`` fields are not needed
here. Each event's data is one JSON object with a ``type``; the stream ends with
``data: [DONE]``. Non-JSON payloads and objects without a ``type`` are logged and skipped: they
must never fail a run. A last event whose blank line never came (the connection closed right
after it) still counts.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import httpx
from httpx_sse import EventSource

log = logging.getLogger("depthcraft.eachsense")

DONE = object()


def _chunks(source: "httpx.Response | Iterable[str]") -> Iterator[bytes]:
    if isinstance(source, httpx.Response):
        yield from source.iter_bytes()
    else:
        for line in source:
            yield (line.rstrip("\r\n") + "\n").encode()  # one item = one line
    yield b"\n\n"  # the stream ended cleanly: dispatch a last event that lacked its blank line


def iter_sse(source: "httpx.Response | Iterable[str]") -> Iterator[object]:
    """Events of an SSE stream: dicts with a ``type``, or :data:`DONE` for ``data: [DONE]``.

    ``source`` is a streaming response (its body is read as it arrives; transport errors and
    read timeouts propagate) or the stream's lines. Any content type is read as a stream: the
    caller has already handled a JSON answer.
    """
    framed = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=_chunks(source))
    for sse in EventSource(framed).iter_sse():
        payload = sse.data
        if not payload:
            continue  # an event with no data (``event:`` or ``id:`` alone)
        if payload.strip() == "[DONE]":
            yield DONE
            continue
        try:
            ev = json.loads(payload)
        except ValueError:
            log.warning("eachsense: skipping a malformed stream line: %.120r", payload)
            continue
        if not isinstance(ev, dict) or not isinstance(ev.get("type"), str):
            log.warning("eachsense: skipping a stream event without a type: %.120r", payload)
            continue
        yield ev


KNOWN_EVENTS = frozenset({
    "thinking_delta", "status", "text_response", "generation_response", "clarification_needed",
    "web_search_query", "web_search_citations", "workflow_created", "workflow_fetched", "workflow_built",
    "workflow_updated", "execution_started", "execution_progress", "execution_completed", "tool_call",
    "message", "complete", "error"})


@dataclass
class ChatResult:
    """What one chat turn produced."""

    request_id: str | None = None
    generations: list[str] = field(default_factory=list)
    text: str = ""
    clarification: dict | None = None
    status: str | None = None  # complete.status: ok | awaiting_input
    task_id: str | None = None
    model: str | None = None
    done: bool = False  # [DONE] seen
    completed: bool = False  # complete seen
    error: dict | None = None
    recovered: bool = False  # taken from the session memory after an interrupted stream
    attempts: int = 1
    event_types: list[str] = field(default_factory=list)

    def add(self, ev: dict) -> None:
        t = ev["type"]
        self.event_types.append(t)
        if t == "generation_response":
            urls = [u for u in ([ev.get("url")] + list(ev.get("generations") or [])) if isinstance(u, str) and u]
            for u in urls:
                if u not in self.generations:
                    self.generations.append(u)
            self.model = ev.get("model") or self.model
        elif t in ("text_response", "message"):
            if isinstance(ev.get("content"), str):
                self.text += ev["content"] + "\n"
        elif t == "clarification_needed":
            self.clarification = {"question": str(ev.get("question") or ""), "options": list(ev.get("options") or []),
                                  "context": ev.get("context")}
        elif t == "complete":
            self.completed, self.status = True, ev.get("status")
            self.task_id = ev.get("task_id") or self.task_id
            self.model = ev.get("model") or self.model
            for u in ev.get("generations") or []:
                if isinstance(u, str) and u and u not in self.generations:
                    self.generations.append(u)
        elif t == "error":
            self.error = ev
        elif t == "status":
            self.model = ev.get("model") or self.model
            log.debug("eachsense: %s", ev.get("message"))
        elif t not in KNOWN_EVENTS:
            log.info("eachsense: skipping an event of unknown type %r", t)
