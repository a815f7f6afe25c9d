"""Downloading URL inputs: bounded in size and time, streamed to disk, once per run.

A URL in a recipe's inputs is fetched into the workspace's ``downloads/`` folder (named by a
hash of the URL, so that the next run finds it). A download:

- streams to a partial file next to its destination and is renamed into place only when
  complete; any failure deletes the partial file;
- stops at ``DEPTHCRAFT_FETCH_MAX_BYTES`` (default 500 MB; refused at once when the server
  announces a larger ``Content-Length``);
- stops at ``DEPTHCRAFT_FETCH_TIMEOUT`` seconds in total (default 300), however slowly the
  server sends: a server that trickles a byte every few seconds forever hits this deadline;
- is made once per run: inside :func:`run_scope` (the command line wraps a whole run in it) a
  URL that failed is not asked again; its error is given again.

Every error is an :class:`~depthcraft.tasks.lib.errors.InputError` naming the URL.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from pathlib import Path

from depthcraft.tasks.lib.errors import InputError
from depthcraft.tasks.lib.store import sha256_bytes

DEFAULT_MAX_BYTES = 500_000_000
DEFAULT_TIMEOUT = 300.0

_lock = threading.Lock()
_scope: dict | None = None  # url -> Path or InputError (and once_per_run's keys), for the run in progress


def _setting(name: str, default, cast):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        v = cast(raw)
    except ValueError:
        raise InputError(f"{name}={raw!r} is not a number", hint=f"unset {name} or give a positive number") from None
    if v <= 0:
        raise InputError(f"{name}={raw!r} must be positive", hint=f"unset {name} or give a positive number")
    return v


def max_bytes() -> int:
    """``DEPTHCRAFT_FETCH_MAX_BYTES`` or 500 MB."""
    return _setting("DEPTHCRAFT_FETCH_MAX_BYTES", DEFAULT_MAX_BYTES, lambda s: int(float(s)))


def total_timeout() -> float:
    """``DEPTHCRAFT_FETCH_TIMEOUT`` (seconds for the whole download) or 300."""
    return _setting("DEPTHCRAFT_FETCH_TIMEOUT", DEFAULT_TIMEOUT, float)


@contextlib.contextmanager
def run_scope():
    """Within the block, each URL is fetched at most once (failures are remembered too)."""
    global _scope
    with _lock:
        outer = _scope
        if outer is None:
            _scope = {}
    try:
        yield
    finally:
        if outer is None:
            with _lock:
                _scope = None


def once_per_run(key: tuple, make):
    """``make()``, made once within :func:`run_scope` (``key``: what it depends on) and every
    time outside one. A ``depthcraft run`` compiles its plan twice (the command line, to fail
    before any server starts, then the flow): both must see the same answers."""
    with _lock:
        scope = _scope
        if scope is not None and key in scope:
            return scope[key]
    value = make()
    if scope is not None:
        with _lock:
            value = scope.setdefault(key, value)
    return value


def destination(url: str, folder: Path) -> Path:
    """Where ``url`` is kept: a hash of the URL, with the path's image suffix."""
    return Path(folder) / (sha256_bytes(url.encode())[:24] + Path(url.split("?")[0]).suffix.lower()[:6])


def fetch_url(url: str, folder: Path) -> Path:
    """The local file of ``url``, downloaded into ``folder`` unless already there.

    Raises :class:`InputError` (path = the URL): an HTTP error status, an unreachable host, a
    body over :func:`max_bytes`, a download over :func:`total_timeout` seconds.
    """
    dst = destination(url, folder)
    if dst.exists():
        return dst
    scope = _scope
    if scope is not None and url in scope:
        found = scope[url]
        if isinstance(found, InputError):
            raise found
        if Path(found).exists():
            return Path(found)
    try:
        got = _download(url, dst)
    except InputError as e:
        if scope is not None:
            scope[url] = e
        raise
    if scope is not None:
        scope[url] = got
    return got


def _must_be_an_image(path: str, url: str, ctype: str | None) -> None:
    """A login page or an error page served with status 200 is not a photo: say so by URL
    (later, only the downloaded copy's name would be known)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path):
            pass
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise InputError(f"the server sent something that is not an image ({ctype or 'no content type'})",
                         path=url, hint="check that the address points at the image itself") from None


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB" if n >= 1e6 else f"{n:,} bytes"


def _download(url: str, dst: Path) -> Path:
    import httpx

    limit, budget = max_bytes(), total_timeout()
    deadline = time.monotonic() + budget
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, part = tempfile.mkstemp(prefix=dst.name + ".", suffix=".part", dir=dst.parent)
    done = False
    too_slow = InputError(f"download took longer than {budget:g} s", path=url,
                          hint="raise DEPTHCRAFT_FETCH_TIMEOUT (seconds), or download it and give the path")
    try:
        # No single wait may outlast the whole budget; the deadline is checked after every chunk.
        per_read = max(0.5, min(30.0, budget))
        with os.fdopen(fd, "wb") as out, httpx.Client(follow_redirects=True, timeout=httpx.Timeout(per_read)) as c:
            with c.stream("GET", url) as r:
                if r.status_code >= 400:
                    raise InputError(f"download failed: HTTP {r.status_code}", path=url)
                announced = r.headers.get("content-length")
                if announced and announced.isdigit() and int(announced) > limit:
                    raise InputError(f"the server announces {_mb(int(announced))}, over the limit of {_mb(limit)}",
                                     path=url, hint="raise DEPTHCRAFT_FETCH_MAX_BYTES, or download it and give the path")
                got = 0
                # each chunk as it arrives (a chunk size would buffer a trickle past the deadline);
                # counted after decoding, so that a compressed body cannot expand past the limit
                for chunk in r.iter_bytes():
                    got += len(chunk)
                    if got > limit:
                        raise InputError(f"download is over the limit of {_mb(limit)}", path=url,
                                         hint="raise DEPTHCRAFT_FETCH_MAX_BYTES, or download it and give the path")
                    out.write(chunk)
                    if time.monotonic() > deadline:
                        raise too_slow
        if time.monotonic() > deadline:
            raise too_slow
        _must_be_an_image(part, url, r.headers.get("content-type"))
        os.replace(part, dst)
        done = True
        return dst
    except httpx.TimeoutException:
        if time.monotonic() > deadline - 0.01:
            raise too_slow from None
        raise InputError("the server stopped sending (read timeout)", path=url,
                         hint="check the address, or download it and give the path") from None
    except httpx.HTTPError as e:
        raise InputError(f"unreachable URL ({type(e).__name__}: {e})", path=url,
                         hint="check the address and your network, or download it and give the path") from None
    finally:
        if not done:
            with contextlib.suppress(OSError):
                os.unlink(part)
