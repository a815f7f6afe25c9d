"""Typed each::sense failures, one class per cause, and the mapping from an answer to its class.

Every class is a :class:`~depthcraft.tasks.lib.errors.ProviderError` that says what happened
and what to do, with the response's ``X-Request-Id``; ``retryable`` tells the retry loop
(:mod:`.retries`). Messages and hints are scrubbed of the API key (:func:`.redact.scrub`).
"""

from __future__ import annotations

import json

import httpx

from ...lib.errors import ProviderError
from .redact import scrub
from .retries import RETRY_STATUSES, parse_retry_after

MAX_IMAGES = 4
KEY_HINT = "set EACHLABS_API_KEY (or EACHLABS_API_KEY_BLOCK, the name of a Prefect Secret block holding it)"


class EachSenseError(ProviderError):
    """Base of every each::sense failure; ``retryable`` decides whether the client tries again."""

    default_hint: str | None = None
    default_retryable = False

    def __init__(self, message: str, *, request_id: str | None = None, hint: str | None = None,
                 retryable: bool | None = None, retry_after: float | None = None,
                 status: int | None = None, code: str | None = None):
        self.retry_after, self.status, self.code = retry_after, status, code
        self.raw_message = scrub(message)
        super().__init__(self.raw_message, provider="eachsense", request_id=request_id,
                         hint=scrub(hint or self.default_hint) or None,
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


class SessionFullError(SessionError):
    """The session holds as many messages as the service keeps (50): no further turn fits."""

    default_hint = ("each::sense keeps at most 50 messages per session; depthcraft spreads a recipe's session over "
                    "several service sessions (EACHSENSE_SESSION_MAX_MESSAGES): re-run, and check that no other "
                    "program uses the same session id")


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
    if "memory limit" in low or code == "SESSION_FULL":
        return SessionFullError(f"session full: {message}", **kw)
    if code == "SESSION_NOT_FOUND" or "session not found" in low:
        return SessionError(f"session not found: {message}", **kw)
    if "maximum" in low and "image" in low:
        return InvalidRequestError(message, hint=f"send at most {MAX_IMAGES} images per request", **kw)
    if "invalid image" in low or "image url" in low:
        return ImageRejectedError(message + extra, **kw)
    return GenerationError(f"the service failed: {message}{extra}", hint=suggestion, **kw)
