"""A small httpx client for the each::sense chat API and the each::labs storage API.

The protocol (``../shared/protocol/each-sense.md``): ``POST {base}/chat`` answers a stream of
``data: <json>`` lines (Server-Sent Events, :mod:`.sse`) ending with ``data: [DONE]``; local
images are uploaded first through the storage API (:mod:`.uploads`).

What this package guarantees:

- One exception class per cause (:mod:`.errors`: :class:`AuthError`, :class:`BalanceError`,
  :class:`RateLimitError`...), each a :class:`~depthcraft.tasks.lib.errors.ProviderError` that says
  what happened and what to do, with the response's ``X-Request-Id``. ``retryable`` tells the
  retry loop.
- Retries with exponential backoff and full jitter for network errors, interrupted streams and
  408/429/5xx, honouring ``Retry-After`` (:mod:`.retries`); never for 400/401/403/404/422 or a
  balance error. A retried chat reuses the same ``session_id``; an interrupted stream that
  already delivered a ``generation_response`` is not asked again, and one that did not is first
  looked up in the session memory (``GET /memory``), so that a dropped connection does not pay twice.
- The API key is read at request time from a callable, never stored on the object, never put
  in a log line or an exception (messages are scrubbed of it as a last line of defence, :mod:`.redact`).
- ``transport`` swaps the network for tests (``httpx.MockTransport``), as httpx intends (:mod:`.transport`).
- A process-wide semaphore bounds the remote calls in flight (``EACHSENSE_MAX_CONCURRENCY``),
  and a per-session lock keeps one conversation turn at a time in a session (:mod:`.concurrency`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import datetime, timezone
from typing import Callable

import httpx

from ...lib import cancel
from .concurrency import max_concurrency, remote_slot, session_lock, set_max_concurrency
from .errors import (MAX_IMAGES, AuthError, BalanceError, ClarificationNeeded, ContentFilterError, EachSenseError,
                     GenerationError, ImageRejectedError, InvalidRequestError, NetworkError, RateLimitError,
                     ServiceUnavailableError, SessionBusyError, SessionError, SessionFullError, StreamInterruptedError,
                     StreamTimeoutError, UploadError, http_error, stream_error)
from .keys import _block_cache, _known_keys, api_key_from_env
from .redact import remember
from .retries import RETRY_STATUSES, RetryPolicy, parse_retry_after, retrying
from .sse import DONE, KNOWN_EVENTS, ChatResult, iter_sse
from .transport import make_http_client, make_timeout, short_url
from .uploads import upload as _upload

__all__ = [
    "EachSenseClient", "ChatResult", "DONE", "KNOWN_EVENTS", "iter_sse", "parse_retry_after", "RETRY_STATUSES",
    "api_key_from_env", "max_concurrency", "set_max_concurrency", "remote_slot", "session_lock",
    "http_error", "stream_error", "MAX_IMAGES", "MAX_MESSAGE_CHARS", "DEFAULT_BASE_URL", "DEFAULT_STORAGE_URL",
    "EachSenseError", "AuthError", "BalanceError", "RateLimitError", "ServiceUnavailableError", "NetworkError",
    "StreamInterruptedError", "StreamTimeoutError", "InvalidRequestError", "ImageRejectedError",
    "ContentFilterError", "SessionError", "SessionBusyError", "SessionFullError", "GenerationError", "UploadError",
    "ClarificationNeeded", "_block_cache", "_known_keys",
]

log = logging.getLogger("depthcraft.eachsense")

DEFAULT_BASE_URL = "https://sense.eachlabs.run"
DEFAULT_STORAGE_URL = "https://storage-service.core.eachlabs.run"
MAX_MESSAGE_CHARS = 10_000


class StreamDeadline(Exception):
    """The stream was still sending events at ``stream_deadline`` (internal: becomes a StreamTimeoutError)."""


def _as_error(what: str, e: Exception) -> EachSenseError | None:
    """A transport exception as the client's error; an each::sense error as it is; else None."""
    if isinstance(e, httpx.TimeoutException):
        return NetworkError(f"{what}: timed out ({type(e).__name__})")
    if isinstance(e, httpx.TransportError):
        return NetworkError(f"{what}: network error ({type(e).__name__}: {e})")
    if isinstance(e, EachSenseError):
        return e
    return None


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
                 stream_deadline: float = 900.0,
                 transport: httpx.BaseTransport | None = None, sleep: Callable[[float], None] = time.sleep):
        self.base_url, self.storage_url = base_url.rstrip("/"), storage_url.rstrip("/")
        self.org = org
        self._api_key = api_key
        self.timeout = make_timeout(connect_timeout, read_timeout)
        self.max_retries, self.backoff_base, self.backoff_max = int(max_retries), float(backoff_base), float(backoff_max)
        self.max_retry_after = float(max_retry_after)
        self.poll_interval, self.upload_timeout = float(poll_interval), float(upload_timeout)
        self.recover_from_memory = recover_from_memory
        # (the read timeout only times silence: a stream that keeps sending progress events and
        # never its result would hold a run for ever)
        self.stream_deadline = float(stream_deadline)
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
                  recover_from_memory=env.get("EACHSENSE_RECOVER_FROM_MEMORY", "1") not in ("0", "false", "no"),
                  stream_deadline=num("EACHSENSE_STREAM_DEADLINE", 900.0))
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
                self._http = make_http_client(self.timeout, self._transport)
            return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def _key(self) -> str:
        key = self._api_key()
        if not key:
            raise AuthError("no API key")
        remember(key)
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
        return self._policy().backoff(attempt, retry_after)

    def _policy(self) -> RetryPolicy:
        return RetryPolicy(self.max_retries, self.backoff_base, self.backoff_max, self.max_retry_after)

    def _retrying(self, what: str, fn: Callable[[int], object], *, before_retry: Callable[[EachSenseError], object] | None = None):
        """``fn(attempt)`` until it succeeds or fails for good (:func:`.retries.retrying`)."""
        return retrying(what, fn, policy=self._policy(), sleep=self._sleep, to_error=_as_error,
                        before_retry=before_retry)

    # -- chat ------------------------------------------------------------------------------------
    def chat(self, message: str, *, session_id: str, mode: str = "max", image_urls: list[str] | None = None,
             behavior: str = "agent", validate: bool = True, on_attempt: Callable[[], None] | None = None,
             **extra) -> ChatResult:
        """One conversation turn in ``session_id``, retried as the module docstring says.

        ``on_attempt()`` is called before each request is sent (each one is a message in the
        service's session memory, which holds a limited number: :mod:`.sessions` counts them).
        """
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
            if on_attempt is not None:
                on_attempt()
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
            deadline = time.monotonic() + self.stream_deadline
            try:
                for ev in iter_sse(resp):
                    cancel.check()  # interrupted: abandon the stream
                    if time.monotonic() > deadline:
                        cut = StreamDeadline()
                        break
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
        if isinstance(cut, StreamDeadline):
            raise StreamTimeoutError(f"chat: no result after {self.stream_deadline:.0f} s of events "
                                     "(EACHSENSE_STREAM_DEADLINE)", request_id=rid,
                                     hint="the service kept the stream open without finishing: raise "
                                          "EACHSENSE_STREAM_DEADLINE (seconds), use mode eco, or shrink the image")
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
        """Upload bytes through the storage API and return their ``public_url`` (:func:`.uploads.upload`)."""
        return _upload(self, data, content_type)

    # -- results ---------------------------------------------------------------------------------
    def download(self, url: str, *, max_bytes: int = 512 * 1024 * 1024) -> bytes:
        """The bytes of a generated file. No key is sent: the URL may live on any host.
        Only http(s): a ``file://`` (or other) URL in an answer is refused at once, never retried."""
        from urllib.parse import urlsplit

        if urlsplit(url).scheme.lower() not in ("http", "https"):
            raise GenerationError(f"the answer names a file at a URL that is not http(s): {short_url(url)}",
                                  hint="a service answer may only point at http(s) downloads")

        def once(_n):
            with remote_slot():
                r = self.http.get(url)
            if r.status_code != 200:
                e = http_error(r, f"download {short_url(url)}")
                if r.status_code == 404:
                    raise GenerationError(f"the generated file is gone (HTTP 404): {short_url(url)}",
                                          request_id=e.request_id, hint="re-run to generate it again")
                raise e
            if len(r.content) > max_bytes:
                raise GenerationError(f"the generated file is {len(r.content)} bytes, over {max_bytes}")
            return r.content

        return self._retrying("download", once)
