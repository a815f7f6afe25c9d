"""A small httpx client for the each::sense chat API and the each::labs storage API.

The protocol (``../shared/protocol/each-sense.md``): ``POST {base}/chat`` answers a stream of
``data: <json>`` lines (Server-Sent Events) ending with ``data: [DONE]``; local images are
uploaded first through the storage API (initiate, presigned PUT, poll until ``COMPLETED``).

What this module guarantees:

- One exception class per cause (:class:`AuthError`, :class:`BalanceError`,
  :class:`RateLimitError`...), each a :class:`~depthcraft.tasks.lib.errors.ProviderError` that says what happened
  and what to do, with the response's ``X-Request-Id``. ``retryable`` tells the retry loop.
- Retries with exponential backoff and full jitter for network errors, interrupted streams and
  408/429/5xx, honouring ``Retry-After``; never for 400/401/403/404/422 or a balance error.
  A retried chat reuses the same ``session_id``; an interrupted stream that already delivered a
  ``generation_response`` is not asked again, and one that did not is first looked up in the
  session memory (``GET /memory``), so that a dropped connection does not pay twice.
- The API key is read at request time from a callable, never stored on the object, never put
  in a log line or an exception (messages are scrubbed of it as a last line of defence).
- ``transport`` swaps the network for tests (``httpx.MockTransport``), as httpx intends.
- A process-wide semaphore bounds the remote calls in flight (``EACHSENSE_MAX_CONCURRENCY``),
  and a per-session lock keeps one conversation turn at a time in a session (the service
  answers ``SESSION_BUSY`` otherwise).
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import json
import logging
import os
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterable, Iterator
from urllib.parse import urlparse

import httpx

from ..lib import cancel
from ..lib.errors import ProviderError

log = logging.getLogger("depthcraft.eachsense")

DEFAULT_BASE_URL = "https://sense.eachlabs.run"
DEFAULT_STORAGE_URL = "https://storage-service.core.eachlabs.run"
MAX_IMAGES = 4
MAX_MESSAGE_CHARS = 10_000
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
KEY_HINT = "set EACHLABS_API_KEY (or EACHLABS_API_KEY_BLOCK, the name of a Prefect Secret block holding it)"


# ---- errors ------------------------------------------------------------------------------------
class EachSenseError(ProviderError):
    """Base of every each::sense failure; ``retryable`` decides whether the client tries again."""

    default_hint: str | None = None
    default_retryable = False

    def __init__(self, message: str, *, request_id: str | None = None, hint: str | None = None,
                 retryable: bool | None = None, retry_after: float | None = None,
                 status: int | None = None, code: str | None = None):
        self.retry_after, self.status, self.code = retry_after, status, code
        self.raw_message = _scrub(message)
        super().__init__(self.raw_message, provider="eachsense", request_id=request_id,
                         hint=_scrub(hint or self.default_hint) or None,
                         retryable=self.default_retryable if retryable is None else retryable)


class AuthError(EachSenseError):
    """No key, or the key was refused (401) or lacks permission (403)."""

    default_hint = KEY_HINT


class BalanceError(EachSenseError):
    """The account cannot pay for the generation (``INSUFFICIENT_BALANCE``, HTTP 402)."""

    default_hint = "top up the each::labs balance, then re-run (finished images are cached)"


class RateLimitError(EachSenseError):
    default_hint = "wait a minute and re-run, or lower EACHSENSE_MAX_CONCURRENCY"
    default_retryable = True


class ServiceUnavailableError(EachSenseError):
    """408 / 5xx, or a server-side ``TIMEOUT``."""

    default_hint = "the service is busy or down: wait a few minutes and re-run"
    default_retryable = True


class NetworkError(EachSenseError):
    default_hint = "check the network connection and EACHSENSE_BASE_URL / EACHLABS_STORAGE_URL"
    default_retryable = True


class StreamInterruptedError(EachSenseError):
    """The event stream ended without ``[DONE]`` or ``complete`` (dropped, or read timeout)."""

    default_hint = "the connection dropped: re-run (finished images are cached)"
    default_retryable = True


class StreamTimeoutError(StreamInterruptedError):
    default_hint = ("the service sent nothing for too long: raise EACHSENSE_READ_TIMEOUT (seconds), "
                    "use mode eco, or shrink the image")


class InvalidRequestError(EachSenseError):
    """400 / 404 / 422, or a request the service refuses as such (too many images...)."""


class ImageRejectedError(InvalidRequestError):
    default_hint = ("images must be JPEG/PNG/WebP/GIF, 64x64 to 8192x8192 px, at most 20 MB, and URLs "
                    "publicly reachable: shrink, enlarge or re-encode the image")


class ContentFilterError(InvalidRequestError):
    default_hint = "the service's safety checker refused the image or the message"


class SessionError(EachSenseError):
    default_hint = ("sessions expire after 15 minutes idle and belong to one API key: re-run to start "
                    "a new session")


class SessionBusyError(SessionError):
    default_hint = "another request is running in this session: wait for it, or use another session"
    default_retryable = True


class GenerationError(EachSenseError):
    """The stream ended with an ``error`` event not covered above."""

    default_hint = "try again later, another message, or mode max"


class UploadError(EachSenseError):
    default_hint = "check EACHLABS_ORG and EACHLABS_STORAGE_URL, or pass the image as a public URL"


class ClarificationNeeded(EachSenseError):
    """The service asked a question (``clarification_needed``) that the recipe does not answer."""

    def __init__(self, question: str, options: list, context: str | None = None, *,
                 request_id: str | None = None, session_id: str | None = None):
        self.question, self.options, self.context, self.session_id = question, list(options or []), context, session_id
        opts = "; ".join(f"{i + 1}) {o}" for i, o in enumerate(self.options))
        text = f"the service asks: {question!r}" + (f" options: {opts}" if opts else "")
        if context:
            text += f" ({context})"
        super().__init__(text, request_id=request_id,
                         hint=f"answer it in the recipe: answers: {{{json.dumps(question)}: <your answer>}}")


# ---- the key -----------------------------------------------------------------------------------
_block_cache: dict[str, str] = {}
_known_keys: set[str] = set()  # every key handed out, so that messages can be scrubbed of it


def api_key_from_env() -> str | None:
    """``EACHLABS_API_KEY``, else the Prefect Secret block named by ``EACHLABS_API_KEY_BLOCK``."""
    key = os.environ.get("EACHLABS_API_KEY", "").strip()
    if not key:
        block = os.environ.get("EACHLABS_API_KEY_BLOCK", "").strip()
        if block:
            if block not in _block_cache:
                try:
                    from prefect.blocks.system import Secret

                    _block_cache[block] = str(Secret.load(block).get()).strip()
                except Exception as e:  # noqa: BLE001 - any failure means: no key
                    raise AuthError(f"cannot load the Prefect Secret block {block!r} ({type(e).__name__})") from None
            key = _block_cache[block]
    if key:
        _known_keys.add(key)
    return key or None


def _scrub(text: str | None) -> str | None:
    if not text:
        return text
    for k in list(_known_keys):
        if len(k) >= 4:
            text = text.replace(k, "***")
    return text


# ---- concurrency -------------------------------------------------------------------------------
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


# ---- the event stream --------------------------------------------------------------------------
DONE = object()


def iter_sse(lines: Iterable[str]) -> Iterator[object]:
    """Events of an SSE stream: dicts with a ``type``, or :data:`DONE` for ``data: [DONE]``.

    Follows the SSE framing (``data:`` lines joined until a blank line; comments and ``event:``,
    ``id:``, ``retry:`` fields ignored). Non-JSON payloads and objects without a ``type`` are
    logged and skipped: they must never fail a run.
    """
    buf: list[str] = []

    def flush():
        payload = "\n".join(buf)
        buf.clear()
        if payload.strip() == "[DONE]":
            return DONE
        try:
            ev = json.loads(payload)
        except ValueError:
            log.warning("eachsense: skipping a malformed stream line: %.120r", payload)
            return None
        if not isinstance(ev, dict) or not isinstance(ev.get("type"), str):
            log.warning("eachsense: skipping a stream event without a type: %.120r", payload)
            return None
        return ev

    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if buf:
                ev = flush()
                if ev is not None:
                    yield ev
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            buf.append(value)
        elif name not in ("event", "id", "retry"):
            log.warning("eachsense: skipping a malformed stream line: %.120r", line)
    if buf:  # a last event without its blank line (the connection closed right after it)
        ev = flush()
        if ev is not None:
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


# ---- mapping answers to errors -----------------------------------------------------------------
def _detail(resp: httpx.Response) -> tuple[str, dict]:
    try:
        body = resp.json()
    except ValueError:
        return (resp.text or "").strip()[:300], {}
    if not isinstance(body, dict):
        return str(body)[:300], {}
    d = body.get("detail", body.get("error", body.get("message")))
    if isinstance(d, list):  # 422 validation errors
        d = "; ".join(f"{'.'.join(map(str, e.get('loc', [])))}: {e.get('msg')}" if isinstance(e, dict) else str(e)
                      for e in d)
    return (str(d) if d is not None else json.dumps(body)[:300]), body


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def http_error(resp: httpx.Response, what: str) -> EachSenseError:
    """The error for a non-2xx answer from the chat or storage API."""
    status, rid = resp.status_code, resp.headers.get("x-request-id")
    detail, body = _detail(resp)
    rid = rid or body.get("request_id")
    code = body.get("error_code") or body.get("code")
    msg = f"{what}: HTTP {status}: {detail}"
    kw = dict(request_id=rid, status=status, code=code)
    if status == 401:
        return AuthError(f"{what}: the API key was refused (HTTP 401: {detail})", **kw)
    if status == 403:
        return AuthError(f"{what}: the API key lacks permission (HTTP 403: {detail})",
                         hint="use a key allowed to run each::sense / upload files, and check EACHLABS_ORG", **kw)
    if status == 402 or code == "INSUFFICIENT_BALANCE":
        return BalanceError(f"{what}: insufficient balance ({detail})", **kw)
    if status == 429:
        ra = parse_retry_after(resp.headers.get("retry-after"))
        if ra is None and isinstance(body.get("retry_after"), (int, float)):
            ra = float(body["retry_after"])
        return RateLimitError(f"{what}: rate limited ({detail})", retry_after=ra, **kw)
    if status in RETRY_STATUSES:
        return ServiceUnavailableError(msg, retry_after=parse_retry_after(resp.headers.get("retry-after")), **kw)
    if status == 413:
        return ImageRejectedError(f"{what}: too large ({detail})", **kw)
    if status in (400, 404, 422):
        return InvalidRequestError(msg, hint="a depthcraft bug or an API change: report it with the request id", **kw)
    return EachSenseError(msg, hint="report it with the request id", **kw)


def stream_error(ev: dict, rid: str | None) -> EachSenseError:
    """The error for an ``error`` event inside the stream."""
    message = str(ev.get("message") or "unknown error")
    code = ev.get("error_code")
    low = message.lower()
    extra = f" ({ev['details']})" if isinstance(ev.get("details"), str) and ev["details"] else ""
    kw = dict(request_id=rid, code=code)
    suggestion = ev.get("suggestion") if isinstance(ev.get("suggestion"), str) else None
    if code == "INSUFFICIENT_BALANCE" or "insufficient balance" in low or "failed to create prediction: http 422" in low:
        return BalanceError(f"insufficient balance: {message}{extra}", **kw)
    if code == "RATE_LIMITED":
        ra = ev.get("retry_after")
        return RateLimitError(f"rate limited: {message}", retry_after=float(ra) if isinstance(ra, (int, float)) else None, **kw)
    if code == "TIMEOUT":
        return ServiceUnavailableError(f"the service timed out: {message}", **kw)
    if code == "CONTENT_FILTER":
        return ContentFilterError(f"refused by the content filter: {message}", **kw)
    if code == "SESSION_BUSY":
        return SessionBusyError(f"session busy: {message}", **kw)
    if code == "SESSION_NOT_FOUND" or "session not found" in low:
        return SessionError(f"session not found: {message}", **kw)
    if "maximum" in low and "image" in low:
        return InvalidRequestError(message, hint=f"send at most {MAX_IMAGES} images per request", **kw)
    if "invalid image" in low or "image url" in low:
        return ImageRejectedError(message + extra, **kw)
    return GenerationError(f"the service failed: {message}{extra}", hint=suggestion, **kw)


def _short_url(url: str) -> str:
    p = urlparse(url)
    return f"{p.scheme}://{p.netloc}{p.path}"


# ---- the client --------------------------------------------------------------------------------
class EachSenseClient:
    """each::sense chat + storage over one ``httpx.Client``.

    ``api_key`` is a callable returning the key (read at request time: nothing secret lives
    on the object). ``backoff_base``/``backoff_max`` (seconds) shape the retry delays
    (``base * 2**attempt``, full jitter), ``poll_interval`` the upload polling, ``sleep`` and
    ``transport`` exist for tests.
    """

    def __init__(self, *, base_url: str = DEFAULT_BASE_URL, storage_url: str = DEFAULT_STORAGE_URL,
                 org: str | None = None, api_key: Callable[[], str | None] = api_key_from_env,
                 connect_timeout: float = 30.0, read_timeout: float = 600.0, max_retries: int = 4,
                 backoff_base: float = 1.0, backoff_max: float = 60.0, max_retry_after: float = 300.0,
                 poll_interval: float = 2.0, upload_timeout: float = 300.0, recover_from_memory: bool = True,
                 transport: httpx.BaseTransport | None = None, sleep: Callable[[float], None] = time.sleep):
        self.base_url, self.storage_url = base_url.rstrip("/"), storage_url.rstrip("/")
        self.org = org
        self._api_key = api_key
        self.timeout = httpx.Timeout(connect=connect_timeout, read=read_timeout, write=120.0, pool=connect_timeout)
        self.max_retries, self.backoff_base, self.backoff_max = int(max_retries), float(backoff_base), float(backoff_max)
        self.max_retry_after = float(max_retry_after)
        self.poll_interval, self.upload_timeout = float(poll_interval), float(upload_timeout)
        self.recover_from_memory = recover_from_memory
        self._transport, self._sleep = transport, sleep
        self._http: httpx.Client | None = None
        self._uploads: dict[str, str] = {}  # sha256 of the bytes -> public_url
        self._seen_urls: set[str] = set()  # generation URLs already handed out by this client
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, **overrides) -> "EachSenseClient":
        """Settings from the environment (see docs/eachsense.md); ``overrides`` win."""
        env = os.environ

        def num(name, default):
            try:
                return float(env[name]) if env.get(name) else default
            except ValueError:
                raise EachSenseError(f"{name}={env[name]!r} is not a number", hint=f"unset {name} or give seconds") from None

        kw = dict(base_url=env.get("EACHSENSE_BASE_URL") or DEFAULT_BASE_URL,
                  storage_url=env.get("EACHLABS_STORAGE_URL") or DEFAULT_STORAGE_URL,
                  org=env.get("EACHLABS_ORG") or None,
                  connect_timeout=num("EACHSENSE_CONNECT_TIMEOUT", 30.0),
                  read_timeout=num("EACHSENSE_READ_TIMEOUT", 600.0),
                  max_retries=int(num("EACHSENSE_MAX_RETRIES", 4)),
                  backoff_base=num("EACHSENSE_BACKOFF_BASE", 1.0),
                  backoff_max=num("EACHSENSE_BACKOFF_MAX", 60.0),
                  max_retry_after=num("EACHSENSE_MAX_RETRY_AFTER", 300.0),
                  poll_interval=num("EACHSENSE_POLL_INTERVAL", 2.0),
                  upload_timeout=num("EACHSENSE_UPLOAD_TIMEOUT", 300.0),
                  recover_from_memory=env.get("EACHSENSE_RECOVER_FROM_MEMORY", "1") not in ("0", "false", "no"))
        kw.update(overrides)
        return cls(**kw)

    # -- plumbing --------------------------------------------------------------------------------
    def __getstate__(self):  # never pickle a connection pool (or anything learnt at run time)
        d = dict(self.__dict__)
        d.update(_http=None, _uploads={}, _seen_urls=set(), _lock=None)
        return d

    def __setstate__(self, d):
        self.__dict__.update(d)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"EachSenseClient(base_url={self.base_url!r}, storage_url={self.storage_url!r}, org={self.org!r})"

    @property
    def http(self) -> httpx.Client:
        with self._lock:
            if self._http is None:
                # after Ctrl-C / SIGTERM no request leaves this process (each one may be a paid call)
                self._http = httpx.Client(timeout=self.timeout, transport=self._transport, follow_redirects=True,
                                          event_hooks={"request": [lambda _req: cancel.check()]})
            return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def _key(self) -> str:
        key = self._api_key()
        if not key:
            raise AuthError("no API key")
        _known_keys.add(key)
        return key

    def _auth_headers(self, *, bearer: bool) -> dict:
        key = self._key()
        # The vendor's pages disagree (X-API-Key vs Authorization: Bearer): send both to the chat API.
        h = {"X-API-Key": key}
        if bearer:
            h["Authorization"] = f"Bearer {key}"
        return h

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Delay before retry ``attempt`` (0-based): full jitter over ``base * 2**attempt``, at
        least ``retry_after`` when the server gave one."""
        cap = min(self.backoff_max, self.backoff_base * (2 ** attempt))
        delay = random.uniform(cap / 2, cap)
        if retry_after is not None:
            delay = max(delay, float(retry_after) + random.uniform(0, min(1.0, self.backoff_base)))
        return delay

    def _retrying(self, what: str, fn: Callable[[int], object], *, before_retry: Callable[[EachSenseError], object] | None = None):
        """``fn(attempt)`` until it succeeds or fails for good. ``before_retry(err)`` may return a
        result that makes another attempt unnecessary (an interrupted chat found in memory)."""
        attempt = 0
        while True:
            try:
                return fn(attempt)
            except httpx.TimeoutException as e:
                err: EachSenseError = NetworkError(f"{what}: timed out ({type(e).__name__})")
            except httpx.TransportError as e:
                err = NetworkError(f"{what}: network error ({type(e).__name__}: {e})")
            except EachSenseError as e:
                err = e
            if not err.retryable:
                raise err
            if before_retry is not None:
                found = before_retry(err)
                if found is not None:
                    return found
            if err.retry_after is not None and err.retry_after > self.max_retry_after:
                raise type(err)(f"{err.raw_message}; the service asks to wait {err.retry_after:.0f} s",
                                request_id=err.request_id, retryable=False, status=err.status, code=err.code,
                                hint=f"wait {err.retry_after:.0f} s and re-run")
            if attempt >= self.max_retries:
                raise type(err)(f"{err.raw_message} (gave up after {attempt + 1} attempts)",
                                request_id=err.request_id, retryable=False, status=err.status, code=err.code,
                                hint=err.hint)
            delay = self.backoff(attempt, err.retry_after)
            log.warning("%s; retry %d of %d in %.1f s", err, attempt + 1, self.max_retries, delay)
            self._sleep(delay)
            attempt += 1

    # -- chat ------------------------------------------------------------------------------------
    def chat(self, message: str, *, session_id: str, mode: str = "max", image_urls: list[str] | None = None,
             behavior: str = "agent", validate: bool = True, **extra) -> ChatResult:
        """One conversation turn in ``session_id``, retried as the module docstring says."""
        urls = list(image_urls or [])
        if validate:
            if len(urls) > MAX_IMAGES:
                raise InvalidRequestError(f"{len(urls)} images in one request; the service takes at most {MAX_IMAGES}",
                                          hint="split the request")
            if not message or not message.strip():
                raise InvalidRequestError("empty message", hint="give the step a `message`")
            if len(message) > MAX_MESSAGE_CHARS:
                raise InvalidRequestError(f"message is {len(message)} characters; at most {MAX_MESSAGE_CHARS}",
                                          hint="shorten the recipe's message")
            if mode not in ("max", "eco"):
                raise InvalidRequestError(f"mode {mode!r}; one of max, eco", hint="set mode: max or mode: eco")
        body = {"message": message, "session_id": session_id, "stream": True, "mode": mode, "behavior": behavior}
        if urls:
            body["image_urls"] = urls
        body.update({k: v for k, v in extra.items() if v is not None})
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        sent_at = time.time()

        def attempt(n: int) -> ChatResult:
            with remote_slot():
                res = self._chat_once(body, headers)
            res.attempts = n + 1
            if res.generations or res.clarification:
                self._seen_urls.update(res.generations)
            return res

        def recover(err: EachSenseError):
            if isinstance(err, StreamInterruptedError) and self.recover_from_memory:
                found = self._recover(session_id, message, sent_at)
                if found is not None:
                    found.request_id = err.request_id
                    return found
            return None

        with session_lock(session_id):
            return self._retrying("chat", attempt, before_retry=recover)

    def _chat_once(self, body: dict, headers: dict) -> ChatResult:
        url = f"{self.base_url}/chat"
        with self.http.stream("POST", url, json=body, headers={**headers, **self._auth_headers(bearer=True)}) as resp:
            rid = resp.headers.get("x-request-id")
            if resp.status_code != 200:
                resp.read()
                raise http_error(resp, "chat")
            res = ChatResult(request_id=rid)
            if "application/json" in resp.headers.get("content-type", ""):
                resp.read()
                return self._from_json(resp.json(), res)
            cut: Exception | None = None
            try:
                for ev in iter_sse(resp.iter_lines()):
                    cancel.check()  # interrupted: abandon the stream
                    if ev is DONE:
                        res.done = True
                        break
                    res.add(ev)  # type: ignore[arg-type]
                    if res.error is not None:
                        break  # the stream always ends after an error
            except httpx.TimeoutException as e:
                cut = e
            except httpx.TransportError as e:
                cut = e
        if res.error is not None:
            raise stream_error(res.error, rid)
        if res.generations or res.clarification or res.done or res.completed:
            if not (res.done or res.completed):
                log.warning("eachsense: the stream dropped after delivering its result; using it [request id %s]", rid)
            return res
        if isinstance(cut, httpx.TimeoutException):
            raise StreamTimeoutError(f"chat: no event for {self.timeout.read:.0f} s (stream read timeout)", request_id=rid)
        why = f"{type(cut).__name__}" if cut else "closed"
        raise StreamInterruptedError(f"chat: the stream ended early ({why}, no [DONE] and no complete event)",
                                     request_id=rid)

    @staticmethod
    def _from_json(body: dict, res: ChatResult) -> ChatResult:
        """The non-streaming answer shape, should a server answer JSON to a streaming request."""
        if body.get("clarification_needed"):
            res.clarification = {"question": str(body.get("question") or ""), "options": list(body.get("options") or []),
                                 "context": body.get("context")}
            res.status = "awaiting_input"
        res.generations = [u for u in body.get("generations") or [] if isinstance(u, str)]
        res.text = str(body.get("text_response") or "")
        res.model, res.task_id = body.get("model"), body.get("task_id")
        res.status = res.status or body.get("status")
        res.done = res.completed = True
        return res

    def _recover(self, session_id: str, message: str, sent_at: float) -> ChatResult | None:
        """The result of an interrupted turn, if the session memory shows it finished.

        Accepted only when the memory's last exchange has our exact prompt, media this client
        has not handed out before, and a timestamp no older than our request (60 s of clock
        skew allowed); otherwise the turn is asked again.
        """
        try:
            mem = self.memory(session_id)
        except EachSenseError as e:
            log.info("eachsense: no session memory to recover from (%s)", e)
            return None
        hist = mem.get("conversation_history") or []
        if not hist or not isinstance(hist[-1], dict):
            return None
        last = hist[-1]
        media = [u for u in last.get("generated_media_urls") or [] if isinstance(u, str)]
        if last.get("user_prompt") != message or not media or any(u in self._seen_urls for u in media):
            return None
        ts = last.get("timestamp")
        try:
            when = datetime.fromisoformat(str(ts).replace("Z", "+00:00"))
            if when.tzinfo is None:
                when = when.replace(tzinfo=timezone.utc)
        except ValueError:
            return None
        if when.timestamp() < sent_at - 60:
            return None
        log.warning("eachsense: the stream dropped, but the session memory holds its result; not asking again")
        self._seen_urls.update(media)
        return ChatResult(generations=media, text=str(last.get("chatbot_response") or ""), status="ok",
                          completed=True, recovered=True)

    def memory(self, session_id: str) -> dict:
        """``GET /memory?session_id=...``: the session's conversation history."""
        def once(_n):
            with remote_slot():
                r = self.http.get(f"{self.base_url}/memory", params={"session_id": session_id},
                                  headers=self._auth_headers(bearer=True))
            if r.status_code != 200:
                raise http_error(r, "memory")
            return r.json()

        return self._retrying("memory", once)

    def clear_memory(self, session_id: str) -> dict:
        r = self.http.delete(f"{self.base_url}/memory", params={"session_id": session_id},
                             headers=self._auth_headers(bearer=True))
        if r.status_code != 200:
            raise http_error(r, "memory")
        return r.json()

    # -- storage ---------------------------------------------------------------------------------
    def upload(self, data: bytes, content_type: str = "image/png") -> str:
        """Upload bytes through the storage API and return their ``public_url``.

        The same bytes are uploaded once per client (a retried or repeated request reuses the URL).
        """
        digest = hashlib.sha256(data).hexdigest()
        if digest in self._uploads:
            return self._uploads[digest]
        org = (self.org or "").strip()
        if not org:
            raise UploadError("EACHLABS_ORG is not set; it is needed to upload local images",
                              hint="set EACHLABS_ORG to your organisation id (org-...), or pass the image as a URL")
        if not org.startswith("org-"):
            raise UploadError(f"EACHLABS_ORG={org!r} does not look like an organisation id (org-...)",
                              hint="set EACHLABS_ORG to the org-... id shown in the each::labs console")
        api = f"{self.storage_url}/api/v1/uploads"

        def initiate(_n):
            with remote_slot():
                r = self.http.post(api, json={"owner": org, "uploader": "customer", "file_type": "image",
                                              "content_type": content_type},
                                   headers={"Content-Type": "application/json", **self._auth_headers(bearer=False)})
            if r.status_code not in (200, 201):
                raise self._storage_error(http_error(r, "upload"))
            info = r.json()
            for k in ("id", "upload_url", "public_url"):
                if not info.get(k):
                    raise UploadError(f"upload: the storage answer lacks {k!r}", request_id=r.headers.get("x-request-id"))
            return info

        info = self._retrying("upload", initiate)
        required = {str(k): str(v) for k, v in (info.get("required_headers") or {"Content-Type": content_type}).items()}

        def put(_n):
            # exactly the required headers: a presigned URL's signature covers them; no key here
            req = httpx.Request("PUT", info["upload_url"], content=data, headers=required)
            with remote_slot():
                r = self.http.send(req)
            if r.status_code not in (200, 201, 204):
                raise self._storage_error(http_error(r, "upload PUT"))

        self._retrying("upload PUT", put)
        deadline = time.monotonic() + self.upload_timeout
        status_url = f"{api}/{info['id']}"
        while True:
            def poll(_n):
                with remote_slot():
                    r = self.http.get(status_url, headers=self._auth_headers(bearer=False))
                if r.status_code != 200:
                    raise self._storage_error(http_error(r, "upload status"))
                return r

            r = self._retrying("upload status", poll)
            st = r.json()
            status = str(st.get("status", "")).upper()
            if status == "COMPLETED":
                break
            if status in ("ERROR", "FAILED"):
                raise UploadError(f"upload failed: {st.get('error') or 'status ERROR'}",
                                  request_id=r.headers.get("x-request-id") or st.get("request_id"))
            if time.monotonic() > deadline:
                raise UploadError(f"upload still {status or 'unknown'} after {self.upload_timeout:.0f} s",
                                  hint="retry later, or raise EACHSENSE_UPLOAD_TIMEOUT")
            time.sleep(self.poll_interval)  # polling is not a retry: ``sleep`` records retries only
        self._uploads[digest] = info["public_url"]
        log.info("eachsense: uploaded %d bytes as %s", len(data), _short_url(info["public_url"]))
        return info["public_url"]

    @staticmethod
    def _storage_error(e: EachSenseError) -> EachSenseError:
        if isinstance(e, InvalidRequestError) and not isinstance(e, ImageRejectedError):
            return UploadError(e.raw_message, request_id=e.request_id, status=e.status, code=e.code)
        return e

    # -- results ---------------------------------------------------------------------------------
    def download(self, url: str, *, max_bytes: int = 512 * 1024 * 1024) -> bytes:
        """The bytes of a generated file. No key is sent: the URL may live on any host."""
        def once(_n):
            with remote_slot():
                r = self.http.get(url)
            if r.status_code != 200:
                e = http_error(r, f"download {_short_url(url)}")
                if r.status_code == 404:
                    raise GenerationError(f"the generated file is gone (HTTP 404): {_short_url(url)}",
                                          request_id=e.request_id, hint="re-run to generate it again")
                raise e
            if len(r.content) > max_bytes:
                raise GenerationError(f"the generated file is {len(r.content)} bytes, over {max_bytes}")
            return r.content

        return self._retrying("download", once)
