"""When and how long to wait before asking again: ``Retry-After``, backoff with jitter, the loop.

Retried: network errors, interrupted streams and 408/429/5xx (the error's ``retryable``), after
``base * 2**attempt`` seconds with full jitter, at least the server's ``Retry-After``. Never
retried: 400/401/403/404/422, a balance error, or a ``Retry-After`` longer than the caller accepts.
This module knows no error class: the client passes the function that turns a transport
exception into one (so that the loop stays independent of the service's error mapping).
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from dataclasses import dataclass
from datetime import timezone
from typing import Callable

log = logging.getLogger("depthcraft.eachsense")

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
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


@dataclass
class RetryPolicy:
    """``max_retries`` after the first attempt; delays in seconds."""

    max_retries: int = 4
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    max_retry_after: float = 300.0

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Delay before retry ``attempt`` (0-based): full jitter over ``base * 2**attempt``, at
        least ``retry_after`` when the server gave one."""
        cap = min(self.backoff_max, self.backoff_base * (2 ** attempt))
        delay = random.uniform(cap / 2, cap)
        if retry_after is not None:
            delay = max(delay, float(retry_after) + random.uniform(0, min(1.0, self.backoff_base)))
        return delay


def _final(err, message: str, hint: str | None):
    """A copy of ``err`` that is not retried any more, with ``message``."""
    return type(err)(message, request_id=err.request_id, retryable=False, status=err.status, code=err.code, hint=hint)


def retrying(what: str, fn: Callable[[int], object], *, policy: RetryPolicy, sleep: Callable[[float], None],
             to_error: Callable[[str, Exception], Exception | None], before_retry: Callable | None = None):
    """``fn(attempt)`` until it succeeds or fails for good.

    ``to_error(what, exc)`` turns an exception into the client's error (with ``retryable``,
    ``retry_after``, ``raw_message``...), or returns None to let it through untouched.
    ``before_retry(err)`` may return a result that makes another attempt unnecessary (an
    interrupted chat found in the session memory).
    """
    attempt = 0
    while True:
        try:
            return fn(attempt)
        except Exception as e:  # noqa: BLE001 - classified right below; anything else re-raised
            err = to_error(what, e)
            if err is None:
                raise
        if not err.retryable:
            raise err
        if before_retry is not None:
            found = before_retry(err)
            if found is not None:
                return found
        if err.retry_after is not None and err.retry_after > policy.max_retry_after:
            raise _final(err, f"{err.raw_message}; the service asks to wait {err.retry_after:.0f} s",
                         f"wait {err.retry_after:.0f} s and re-run")
        if attempt >= policy.max_retries:
            raise _final(err, f"{err.raw_message} (gave up after {attempt + 1} attempts)", err.hint)
        delay = policy.backoff(attempt, err.retry_after)
        log.warning("%s; retry %d of %d in %.1f s", err, attempt + 1, policy.max_retries, delay)
        sleep(delay)
        attempt += 1
