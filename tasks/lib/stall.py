"""The stall rule for model downloads: a minimum sustained rate over a sliding window, and an
overall deadline, enforced inside every socket read.

A per-read time-out alone cannot stop a server that trickles a byte every few seconds (each read
succeeds), one that slows to a crawl halfway, or one that drips its response headers: the
download would go on for days. :class:`Guard` tracks the bytes that arrived in the last
``window_s`` seconds and gives each connect, read and write only the time left before the rule
would fail if nothing more came, so a blocked read ends exactly when the rule does, headers and
TLS handshake included. It is installed as an httpcore network backend around the one the httpx
client already has (:func:`guard_client`); where that is not possible the download loop still
checks the rule between chunks (:meth:`Guard.check`).

The rule, for one download (``window_s`` W, ``min_kbps`` R, ``deadline_s`` D):

* during the first W seconds of a request nothing is judged (connecting, TCP slow start);
* after that, fewer than R x W bytes (1 KB = 1000 bytes) in any W seconds: too slow;
* past D seconds since the download began (lock wait, connect and every request included): over;
* with D set and the size known: when the rate of the last W seconds cannot finish the rest
  before D, it is given up at once rather than at D ("cannot finish in reasonable time").

Settings (environment): ``DEPTHCRAFT_DOWNLOAD_MIN_KBPS`` (R, default 10 KB/s),
``DEPTHCRAFT_DOWNLOAD_WINDOW_SECONDS`` (W; default 10 s for ``auto``'s implicit download, 60 s for
``depthcraft models pull``), ``DEPTHCRAFT_AUTO_DOWNLOAD_SECONDS`` (D for ``auto``, default 900 s:
99 MB at 1 Mbit/s is about 13 minutes; an explicit pull has no D, only the rate floor). ``0`` is
the smallest value each allows (W at least 1 s: a shorter window fails a fast server on an ordinary
hiccup), ``inf`` the largest; anything that is not a number >= 0 is a :class:`ParameterError`
naming the variable.
"""

from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass

from .settings import env_number

MIN_KBPS_ENV = "DEPTHCRAFT_DOWNLOAD_MIN_KBPS"
WINDOW_ENV = "DEPTHCRAFT_DOWNLOAD_WINDOW_SECONDS"
AUTO_DEADLINE_ENV = "DEPTHCRAFT_AUTO_DOWNLOAD_SECONDS"

MIN_KBPS = 10.0  # slower than any home line (80 kbit/s); a trickle or a crawl is far below it
AUTO_WINDOW_S = 10.0  # auto falls back this soon after a registry starts to trickle
PULL_WINDOW_S = 60.0  # an explicit pull rides out a minute-long hiccup
AUTO_DEADLINE_S = 900.0  # 99 MB at 1 Mbit/s (~13 min) still finishes
_UNITS = {MIN_KBPS_ENV: "KB/s", WINDOW_ENV: "seconds", AUTO_DEADLINE_ENV: "seconds"}
MIN_WINDOW_S = 1.0  # a shorter window fails a fast server on an ordinary scheduling or network hiccup
_BUCKET_S = 0.1  # samples closer than this are merged (keeps the window short to scan)...
_BUCKETS_PER_WINDOW = 50  # ...and than this share of the window: merging makes the window shorter by up to a bucket


def env_float(name: str, default: float, lo: float, hi: float) -> float:
    """A number from the environment (:func:`~.settings.env_number`: unset or empty is ``default``,
    not a number, nan or negative is a :class:`ParameterError` naming the variable), clamped to
    [lo, hi] (``0`` is the smallest sane value, ``inf`` the largest)."""
    units = _UNITS.get(name, "seconds" if name.endswith("_SECONDS") else "units")
    return min(max(lo, env_number(name, default, least=0.0, units=units)), hi)


@dataclass(frozen=True)
class StallRule:
    """``min_kbps`` KB/s sustained over ``window_s`` s, and (optionally) ``deadline_s`` overall."""

    min_kbps: float = MIN_KBPS
    window_s: float = PULL_WINDOW_S
    deadline_s: float | None = None

    @classmethod
    def for_pull(cls) -> StallRule:
        """An explicit ``depthcraft models pull`` (or a first use of ``onnx:NAME``): patient, never endless."""
        return cls(env_float(MIN_KBPS_ENV, MIN_KBPS, 0.001, 1e7), env_float(WINDOW_ENV, PULL_WINDOW_S, MIN_WINDOW_S, 3600.0))

    @classmethod
    def for_auto(cls) -> StallRule:
        """``auto``'s implicit download: falls back soon; D bounds the whole of it."""
        return cls(env_float(MIN_KBPS_ENV, MIN_KBPS, 0.001, 1e7), env_float(WINDOW_ENV, AUTO_WINDOW_S, MIN_WINDOW_S, 3600.0),
                   env_float(AUTO_DEADLINE_ENV, AUTO_DEADLINE_S, 0.1, 7 * 86400.0))


class Guard:
    """The running state of a :class:`StallRule` for one download (thread-safe).

    ``begin()`` starts a request (a fresh window); ``budget(timeout)`` is the time one socket
    operation may take; ``got(n)`` records bytes read; ``check(done, total)`` raises
    :class:`Stalled` when the rule fails; ``tripped`` is the reason once it has.
    """

    def __init__(self, rule: StallRule, clock=time.monotonic):
        self.rule = rule
        self.clock = clock
        self.t0 = clock()
        self.deadline = None if rule.deadline_s is None else self.t0 + rule.deadline_s
        self.tripped: str | None = None
        self._lock = threading.Lock()
        self._bucket = min(_BUCKET_S, rule.window_s / _BUCKETS_PER_WINDOW)
        self.begin()

    @property
    def need(self) -> float:
        """Bytes a window must hold."""
        return self.rule.min_kbps * 1000.0 * self.rule.window_s

    def begin(self) -> None:
        with self._lock:
            self.start = self.clock()
            self.connected = False
            self.total = 0
            # samples: at time _times[i], _cums[i] bytes had arrived (both ascending)
            self._times: list[float] = [self.start]
            self._cums: list[int] = [0]
            self._last_projection = self.start

    def got(self, n: int) -> None:
        with self._lock:
            now = self.clock()
            self.total += n
            if now - self._times[-1] < self._bucket and len(self._times) > 1:
                self._cums[-1] = self.total  # merged: the bucket's bytes count from its first moment (a little stricter)
                return
            self._times.append(now)
            self._cums.append(self.total)
            # keep the last sample at or before the window's start: it says what had arrived by then
            i = bisect.bisect_right(self._times, now - self.rule.window_s) - 1
            if i > 0:
                del self._times[:i], self._cums[:i]

    def _rate_fail_at(self) -> float:
        """When the rate rule fails if nothing more arrives: once the sample that lifted the total
        past ``total - need`` has left the window."""
        w = self.rule.window_s
        i = bisect.bisect_right(self._cums, self.total - self.need)
        t = self._times[i] if i < len(self._times) else self.start
        return max(self.start + w, t + w)

    def fail_at(self) -> float:
        with self._lock:
            at = self._rate_fail_at()
        return at if self.deadline is None else min(at, self.deadline)

    def window_rate(self, now: float | None = None) -> float:
        """Bytes per second over the last window (or since the request began)."""
        now = self.clock() if now is None else now
        with self._lock:
            since = max(self.start, now - self.rule.window_s)
            i = bisect.bisect_right(self._times, since) - 1
            before = self._cums[i] if i >= 0 else 0
            span = max(1e-6, now - since)
            return (self.total - before) / span

    def reason(self, now: float | None = None) -> str:
        """Why the rule failed at ``now`` (said to the user)."""
        now = self.clock() if now is None else now
        if self.deadline is not None and now >= self.deadline - 1e-3:
            return f"not finished within {self.rule.deadline_s:g} s ({AUTO_DEADLINE_ENV})"
        w = self.rule.window_s
        if not self.connected:
            return f"no connection within {w:g} s"
        if self.total == 0:
            return f"no answer within {w:g} s"
        rate = self.window_rate(now) / 1000.0
        return (f"too slow: {rate:.2f} KB/s over the last {w:g} s, under the {self.rule.min_kbps:g} KB/s minimum "
                f"({MIN_KBPS_ENV}, {WINDOW_ENV})")

    def trip(self, why: str | None = None) -> str:
        if self.tripped is None:
            self.tripped = why or self.reason()
        return self.tripped

    def budget(self, timeout: float | None) -> tuple[float | None, bool]:
        """(the time one socket operation may take, whether the rule is what limits it); raises
        :class:`Stalled` when no time is left."""
        if self.tripped:
            raise Stalled(self.tripped)
        now = self.clock()
        left = self.fail_at() - now
        if left <= 0:
            raise Stalled(self.trip())
        if timeout is None or left < timeout:
            return left, True
        return timeout, False

    def check(self, done: int | None = None, total: int | None = None) -> None:
        """Between chunks: the rule, and with a deadline and a known size, the projection."""
        now = self.clock()
        if self.tripped:
            raise Stalled(self.tripped)
        if now >= self.fail_at():
            raise Stalled(self.trip())
        if (self.deadline is None or total is None or done is None or now - self.start < self.rule.window_s
                or now - self._last_projection < 0.5):
            return
        self._last_projection = now
        rate = self.window_rate(now)
        left = total - done
        if left > 0 and rate > 0 and now + left / rate > self.deadline:
            eta = left / rate
            raise Stalled(self.trip(
                f"at {rate / 1000:.0f} KB/s the remaining {left / 1e6:.1f} MB would take about {_duration(eta)}, "
                f"past the {_duration(self.rule.deadline_s)} limit ({AUTO_DEADLINE_ENV})"))


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min"


class Stalled(Exception):
    """The stall rule failed; ``str()`` is the reason."""


# -- the httpcore backend that enforces it --------------------------------------------------------
def guard_client(client, guard: Guard) -> bool:
    """Route every connection of the httpx ``client`` (its transport and its proxy mounts) through
    ``guard``. False when this httpx/httpcore does not expose its network backend (the download
    loop's between-chunk checks then still apply)."""
    transports = [getattr(client, "_transport", None), *getattr(client, "_mounts", {}).values()]
    done = False
    for t in transports:
        pool = getattr(t, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if backend is not None:
            if not isinstance(backend, _Backend):
                pool._network_backend = _Backend(backend, guard)
            done = True
    return done


def _timeout_error(kind: str, why: str):
    import httpcore

    return {"connect": httpcore.ConnectTimeout, "read": httpcore.ReadTimeout,
            "write": httpcore.WriteTimeout}[kind](why)


class _Backend:
    """An httpcore ``NetworkBackend`` that gives each operation only the time the rule leaves."""

    def __init__(self, inner, guard: Guard):
        self.inner, self.guard = inner, guard

    def _timed(self, kind: str, fn, timeout, *a, **kw):
        try:
            t, limiting = self.guard.budget(timeout)
        except Stalled as e:
            raise _timeout_error(kind, str(e)) from None
        import httpcore

        try:
            return fn(*a, timeout=t, **kw)
        except httpcore.TimeoutException as e:
            if limiting and self.guard.clock() >= self.guard.fail_at() - 0.05:
                raise _timeout_error(kind, self.guard.trip()) from e
            raise

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        s = self._timed("connect", self.inner.connect_tcp, timeout, host, port, local_address=local_address,
                        socket_options=socket_options)
        self.guard.connected = True
        return _Stream(s, self)

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        s = self._timed("connect", self.inner.connect_unix_socket, timeout, path, socket_options=socket_options)
        self.guard.connected = True
        return _Stream(s, self)

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


class _Stream:
    def __init__(self, inner, backend: _Backend):
        self.inner, self.backend = inner, backend

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data = self.backend._timed("read", self.inner.read, timeout, max_bytes)
        self.backend.guard.got(len(data))
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.backend._timed("write", self.inner.write, timeout, buffer)

    def close(self) -> None:
        self.inner.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None):
        s = self.backend._timed("connect", self.inner.start_tls, timeout, ssl_context, server_hostname=server_hostname)
        return _Stream(s, self.backend)

    def get_extra_info(self, info: str):
        return self.inner.get_extra_info(info)
