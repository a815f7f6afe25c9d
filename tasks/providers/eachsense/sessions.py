"""A recipe's session spread over service sessions that each stay under the service's message limit.

each::sense keeps at most 50 messages per session (``../shared/protocol/each-sense.md``,
"Sessions"); the 51st turn fails with "Session memory limit reached". A batch of 27 photos with
an estimate and a refine turn each is 54 turns, so one recipe session (``session:`` in the
recipe) maps to several *service* sessions:

- the first is named as the recipe session itself (a small batch looks exactly as before),
  the next ``<session>~2``, ``<session>~3``...;
- a photo's chain of turns (estimate, its clarifications, the refine that continues it) stays
  in one service session: a chain is placed where its whole reservation fits
  (``EACHSENSE_TURNS_PER_PHOTO`` turns, default 3), and a refine continues the service session its
  estimate recorded in the depth map's metadata (``service_session``), even in a later run;
- no turn is sent to a service session that has no room left: the count per service session
  starts from the service's own memory (``GET /memory`` ``total_exchanges``, so a re-run or another
  process sees what earlier runs used) and grows by one per request sent (retries included);
- a chain that outgrows its service session (many clarifications) continues in a fresh one,
  with the current depth map sent as an image, and says so.

The limit is ``EACHSENSE_SESSION_MAX_MESSAGES`` (default 50).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field

from .errors import EachSenseError

log = logging.getLogger("depthcraft.eachsense")

DEFAULT_MAX_MESSAGES = 50
DEFAULT_TURNS_PER_PHOTO = 3


def _env_int(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name, "") or default))
    except ValueError:
        return default


def max_messages() -> int:
    """Messages one service session holds: ``EACHSENSE_SESSION_MAX_MESSAGES`` or 50."""
    return _env_int("EACHSENSE_SESSION_MAX_MESSAGES", DEFAULT_MAX_MESSAGES)


def turns_per_photo() -> int:
    """Turns reserved for one photo's chain: ``EACHSENSE_TURNS_PER_PHOTO`` or 3."""
    return _env_int("EACHSENSE_TURNS_PER_PHOTO", DEFAULT_TURNS_PER_PHOTO)


def service_name(recipe_session: str, n: int) -> str:
    """The n-th (1-based) service session of a recipe session."""
    return recipe_session if n == 1 else f"{recipe_session}~{n}"


def belongs(service_session: str, recipe_session: str) -> bool:
    """Is ``service_session`` one of ``recipe_session``'s service sessions?"""
    if service_session == recipe_session:
        return True
    head, sep, n = service_session.rpartition("~")
    return bool(sep) and head == recipe_session and n.isdigit()


@dataclass
class _Service:
    used: int  # messages the service session holds (known or sent)
    chains: dict = field(default_factory=dict)  # chain -> turns used by it in this process


class SessionPlanner:
    """Places chains of turns in service sessions; one per service (base URL) and process."""

    def __init__(self, memory_count):
        self._count = memory_count  # service session -> messages it holds now (0 when unknown)
        self._lock = threading.Lock()
        self._services: dict[str, _Service] = {}
        self._chains: dict[tuple[str, str], str] = {}

    def _service(self, sid: str) -> _Service:
        s = self._services.get(sid)
        if s is None:
            s = self._services[sid] = _Service(used=self._count(sid))
        return s

    def _load(self, s: _Service, reserve: int) -> int:
        """Messages used plus those still reserved by the chains placed here."""
        return s.used + sum(max(0, reserve - n) for n in s.chains.values())

    def place(self, recipe_session: str, chain: str, *, continues: str | None = None) -> str:
        """The service session for the next turn of ``chain`` (a photo) in ``recipe_session``.

        ``continues`` is the service session the chain's earlier turn used (recorded upstream):
        kept while it has room. Raises nothing: a full session moves the chain to a new one.
        """
        limit, reserve = max_messages(), min(turns_per_photo(), max_messages())
        key = (recipe_session, chain)
        if continues and not belongs(continues, recipe_session):
            continues = None  # an estimate cached from another session: this session starts its own chain
        with self._lock:
            current = self._chains.get(key) or continues
            if current:
                s = self._service(current)
                if s.used + 1 <= limit:
                    self._chains[key] = current
                    s.chains.setdefault(chain, 0)
                    return current
                log.warning("eachsense: service session %s is full (%d of %d messages); this photo's next turn "
                            "starts a new one (the current depth map is sent along)", current, s.used, limit)
                s.chains.pop(chain, None)
            n = 1
            while True:
                sid = service_name(recipe_session, n)
                s = self._service(sid)
                if self._load(s, reserve) + reserve <= limit:
                    s.chains[chain] = 0
                    self._chains[key] = sid
                    return sid
                n += 1

    def sent(self, service_session: str, chain: str, requests: int = 1) -> None:
        """Count ``requests`` chat requests sent to ``service_session`` for ``chain``."""
        with self._lock:
            s = self._service(service_session)
            s.used += requests
            s.chains[chain] = s.chains.get(chain, 0) + requests

    def room(self, service_session: str) -> int:
        with self._lock:
            return max_messages() - self._service(service_session).used

    def mapping(self, recipe_session: str) -> list[str]:
        """The service sessions this process has placed chains of ``recipe_session`` in."""
        with self._lock:
            return sorted({sid for (rs, _), sid in self._chains.items() if rs == recipe_session})


_planners: dict[str, SessionPlanner] = {}
_planners_lock = threading.Lock()


def planner_for(client) -> SessionPlanner:
    """The process-wide planner of ``client``'s service (by base URL)."""
    with _planners_lock:
        p = _planners.get(client.base_url)
        if p is None:
            def count(sid: str) -> int:
                try:
                    mem = client.memory(sid)
                except EachSenseError as e:  # a session the service does not know holds nothing
                    if e.status != 404 and e.code != "SESSION_NOT_FOUND":
                        log.info("eachsense: cannot read the memory of session %s (%s); counting from 0", sid, e)
                    return 0
                n = mem.get("total_exchanges")
                hist = mem.get("conversation_history")
                return int(n) if isinstance(n, int) else len(hist) if isinstance(hist, list) else 0

            p = _planners[client.base_url] = SessionPlanner(count)
        return p


def reset_planners() -> None:
    """Forget every placement (tests; a new run in a long-lived process may keep them)."""
    with _planners_lock:
        _planners.clear()
