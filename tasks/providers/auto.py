"""``provider: auto``: the best depth this machine can have, decided once per run.

Resolution order (:func:`resolve`):

1. the best model already in the model cache (:data:`PREFERENCE`, then any other registry
   model the user pulled): no network at all;
2. else, unless offline (``DEPTHCRAFT_OFFLINE=1``, or ``--offline`` which sets it), a
   connectivity probe of the registry host with a short deadline (:data:`PROBE_SECONDS`, DNS
   included: it runs in a thread that is abandoned at the deadline; a slow link may raise it with
   ``DEPTHCRAFT_PROBE_SECONDS``), then a one-time pull of
   :data:`AUTO_MODEL` (Depth Anything V2 Small, Apache-2.0, sha256-pinned in the registry),
   announced in one line (what, how big, why) with the download's progress bar, under the stall
   rule of ``lib/stall.py`` (:meth:`StallRule.for_auto`: a trickle or a crawl ends after a 10 s
   window, the whole download after 900 s, or at once when it cannot finish by then);
3. else ``classic``, said in one line with the command that gets a trained model.

What ``auto`` resolved to is a concrete provider spec (``onnx:<model>`` or ``classic``): the
compiler puts that provider's identity in the cache keys and records the resolution in the
manifest and the session log, so a classic result is never served for a model result.

A failed probe or download is remembered for :data:`RETRY_SECONDS` in this process, so the
compile before a flow and the one inside it agree and the user is told once.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Callable
from urllib.parse import urlsplit

from ..lib import models as M
from ..lib.errors import ParameterError
from ..lib.stall import StallRule, env_float

AUTO_MODEL = "depth-anything-v2-small"
# Best first: larger Depth Anything models are more detailed; metric ones give relative depth too.
PREFERENCE = ("depth-anything-v2-large", "depth-anything-v2-base", "depth-anything-v2-small",
              "depth-anything-v2-metric-outdoor-small", "depth-anything-v2-metric-indoor-small",
              "midas-v2.1-small")
PROBE_SECONDS = 0.6  # the whole connectivity probe, name lookup included (DEPTHCRAFT_PROBE_SECONDS)
PROBE_ENV = "DEPTHCRAFT_PROBE_SECONDS"
RETRY_SECONDS = 300.0  # a failed probe or download is not retried sooner within one process
# The download auto starts gives up when the registry (or the proxy) stays silent this long: to
# connect, before the answer, or mid-file (the part is kept; the next run resumes it). An explicit
# `depthcraft models pull` waits longer (60 s). A registry that keeps sending, but too slowly to
# matter (a trickle, a crawl halfway, headers a byte at a time), is ended by the stall rule
# (lib/stall.py: a minimum rate over a sliding window, DEPTHCRAFT_DOWNLOAD_MIN_KBPS and
# DEPTHCRAFT_DOWNLOAD_WINDOW_SECONDS, and the whole download's deadline,
# DEPTHCRAFT_AUTO_DOWNLOAD_SECONDS).
STALL_SECONDS = 5.0
OFFLINE_ENV = "DEPTHCRAFT_OFFLINE"


@dataclass(frozen=True)
class Resolution:
    """What ``auto`` became: ``provider`` (``classic`` or ``onnx:<model>``) and why."""

    provider: str
    reason: str  # cached | downloaded | offline | unreachable | download-failed | not-downloaded
    model: str | None = None
    message: str | None = None  # the line the user was told, if any

    def record(self) -> dict:
        """For manifests and session logs."""
        return {k: v for k, v in asdict(self).items() if v is not None}


is_offline = M.is_offline


_told_bad: set[tuple] = set()


_unloadable: dict[tuple, str] = {}  # file version -> why ONNX Runtime could not load it (tried once)


def best_cached(say: Callable[[str], None] | None = None, *, load: bool = False) -> M.ModelInfo | None:
    """The best registry model in the model cache whose file matches its sha256, or ``None``.

    A file with a model's name and other bytes (corrupt, truncated, replaced; for an unpinned
    model: empty, random bytes, an HTML page, a truncated copy, see lib/onnxfile.py) is passed
    over, said once per process through ``say``: it is never used as the model it is named after.
    ``load`` (a run, not ``validate``/``plan``): the candidate's ONNX Runtime session is created
    too (and kept for the run: providers/onnx.py caches it), and a file it cannot load is passed
    over the same way, so that a run falls back instead of dying on the model.
    """
    order = [M.REGISTRY[n] for n in PREFERENCE if n in M.REGISTRY]
    order += [i for n, i in M.REGISTRY.items() if n not in PREFERENCE]
    for info in order:
        path = M.cached_path(info)
        fix = f"{M.repair_hint(info)} downloads it again"
        if M.cached_ok(info):
            why = _load_problem(path) if load else None
            if why is None:
                return info
            if info.pinned:  # the very bytes pinned: the runtime, not the file, is what to change
                fix = "it is the pinned file: upgrade onnxruntime (pip install -U onnxruntime)"
        elif M.is_cached(info):
            why = M.cached_problem(info)
        else:
            continue
        if say is not None and why is not None:
            try:  # said once per file version; its size and times name it without hashing it again
                st = path.stat()
                key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
            except OSError:  # unreadable: nothing to say about its bytes
                continue
            if key not in _told_bad:
                _told_bad.add(key)
                say(f"auto: {path} {why}: not used; {fix}")
    return None


def _load_problem(path) -> str | None:
    """None when ONNX Runtime can create a session for ``path`` (kept for the run), else why not.
    Tried once per file version in this process; a file whose stamp says this runtime loaded its
    bytes before (:func:`~depthcraft.tasks.lib.models.stamped_loadable`) is not loaded again
    here: its steps load it when they run, and a fully cached re-run never does."""
    from .onnx import get_session

    try:
        st = path.stat()
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
    sha = M.hashed_sha256(path)  # (hashed just now by cached_ok, for a pinned or recorded model)
    if sha is not None and M.stamped_loadable(path, sha):
        return None  # this runtime loaded these very bytes before: a cached re-run pays no load
    if key not in _unloadable:
        try:
            get_session(path)
            M.stamp_loadable(path)
            return None
        except Exception as e:  # noqa: BLE001 - any failure to load means "not this model"
            _unloadable[key] = getattr(e, "reason", None) or " ".join(str(e).split())[:300]
    return _unloadable[key]


def probe_seconds() -> float:
    """``DEPTHCRAFT_PROBE_SECONDS`` (unset: :data:`PROBE_SECONDS`), clamped to 0.05..60 s (a
    thread join cannot wait "inf"; a minute is the longest sane probe). Not a number, nan or
    negative: :class:`ParameterError` naming the variable, as for the download's settings."""
    return env_float(PROBE_ENV, PROBE_SECONDS, 0.05, 60.0)


def probe(url: str, seconds: float | None = None) -> str | None:
    """``None`` when the host of ``url`` answers within ``seconds``, else why not.

    A TCP connection, the TLS handshake for https, and the first byte of the answer to an HTTP
    HEAD: a host that accepts connections and never answers counts as down. Through a proxy
    (``https_proxy``/``http_proxy``, as the download uses them) the proxy is asked the same way
    (``CONNECT host:port`` for https, a ``HEAD`` of the full URL for http) and must answer in
    time: a proxy that is up but cannot reach the registry counts as down too.
    Plain sockets, no HTTP client: building one loads a CA bundle, which is time spent before
    the network is even asked. The attempt runs in a thread given up at the deadline, because
    ``socket.getaddrinfo`` has no timeout of its own.
    """
    import socket
    import urllib.request

    seconds = probe_seconds() if seconds is None else seconds
    parts = urlsplit(url)
    https = parts.scheme == "https"
    host, port = parts.hostname or "", parts.port or (443 if https else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        p = urlsplit(proxy if "://" in proxy else "http://" + proxy)
        host, port, https, proxied = p.hostname or "", p.port or 8080, False, True
        auth = ""
        if p.username:  # as the download would send it
            import base64
            from urllib.parse import unquote

            cred = base64.b64encode(f"{unquote(p.username)}:{unquote(p.password or '')}".encode()).decode()
            auth = f"Proxy-Authorization: Basic {cred}\r\n"
    else:
        proxied, auth = False, ""
    result: list[str | None] = []
    deadline = time.monotonic() + seconds

    def attempt():
        try:
            sock = socket.create_connection((host, port), timeout=seconds)
            try:
                if proxied:
                    target = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
                    ask = (f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n" if parts.scheme == "https" else
                           f"HEAD {url} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n")
                    sock.settimeout(max(0.01, deadline - time.monotonic()))
                    sock.sendall(f"{ask}{auth}User-Agent: depthcraft\r\n\r\n".encode())
                    head = sock.recv(64)
                    if not head:
                        raise ConnectionError("the proxy closed without an answer")
                    status = head.split(b" ", 2)[1:2]
                    if parts.scheme == "https" and not (status and status[0].startswith(b"2")):
                        raise ConnectionError(f"the proxy answered {head.splitlines()[0].decode('latin-1')!r}")
                else:
                    if https:
                        import ssl

                        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # no CA bundle: an answer is all we ask
                        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
                        sock = ctx.wrap_socket(sock, server_hostname=host)
                    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
                    sock.settimeout(max(0.01, deadline - time.monotonic()))
                    sock.sendall(f"HEAD {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                                 f"User-Agent: depthcraft\r\nConnection: close\r\n\r\n".encode())
                    if not sock.recv(1):
                        raise ConnectionError("closed without an answer")
            finally:
                sock.close()
            result.append(None)
        except Exception as e:  # noqa: BLE001 - every failure means "not reachable now"
            result.append(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)

    t = threading.Thread(target=attempt, name="depthcraft-probe", daemon=True)
    t.start()
    t.join(seconds)
    if not result:
        return f"no answer within {seconds:.1f} s"
    return result[0]


_failures: dict[tuple, tuple[float, Resolution]] = {}
_lock = threading.Lock()


def _pull_hint(info: M.ModelInfo) -> str:
    return f"`depthcraft models pull {info.name}` gets a trained model ({info.size_text()}, {info.licence})"


def _default_say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def resolve(*, download: bool = True, say: Callable[[str], None] | None = None) -> Resolution:
    """Decide what ``auto`` means now (see the module docstring). Never raises for network trouble.

    ``download`` False (``validate``, ``plan``): never touches the network; without a cached model
    the answer is ``classic`` with reason ``not-downloaded``.
    """
    say = say or _default_say
    cached = best_cached(say, load=download)
    if cached is not None:
        return Resolution(f"onnx:{cached.name}", "cached", cached.name)
    info = M.REGISTRY[AUTO_MODEL]
    where = M.models_dir()
    if is_offline():
        key = ("offline", str(where))
        flag = os.environ.get(OFFLINE_ENV, "").strip() or "1"
        reason, msg = "offline", (f"auto: offline ({OFFLINE_ENV}={flag}) and no depth model in {where}: using "
                                  f"the embedded classic estimator; {_pull_hint(info)}")
    elif not download:
        return Resolution("classic", "not-downloaded", None,
                          f"auto: no depth model in {where} yet; a run downloads {info.title} "
                          f"({info.size_text()}) once, planned here with classic")
    else:
        url = M.resolved_url(info)
        key = ("online", str(where), url)
        with _lock:
            hit = _failures.get(key)
            if hit and time.monotonic() - hit[0] < RETRY_SECONDS:
                return hit[1]
            host = urlsplit(url).netloc or url
            try:
                why = probe(url)
            except ParameterError as e:  # a setting that is not a number: said, not replaced
                res = Resolution("classic", "unreachable", None, f"auto: {e}: using the embedded classic estimator")
                _failures[key] = (time.monotonic(), res)
                say(res.message)
                return res
            if why is None:
                got = _download(info, host, where, say)
                if got.reason == "downloaded":
                    return got
                _failures[key] = (time.monotonic(), got)
                return got
            reason, msg = "unreachable", (f"auto: cannot reach {host} ({why}): using the embedded classic "
                                          f"estimator; {_pull_hint(info)} when online")
            res = Resolution("classic", reason, None, msg)
            _failures[key] = (time.monotonic(), res)
            say(msg)
            return res
    with _lock:
        hit = _failures.get(key)
        if hit and time.monotonic() - hit[0] < RETRY_SECONDS:
            return hit[1]
        res = Resolution("classic", reason, None, msg)
        _failures[key] = (time.monotonic(), res)
    say(msg)
    return res


def _download(info: M.ModelInfo, host: str, where, say: Callable[[str], None]) -> Resolution:
    try:
        rule = StallRule.for_auto()
    except ParameterError as e:  # a setting that is not a number: said once, before any download
        msg = f"auto: {e}: using the embedded classic estimator"
        say(msg)
        return Resolution("classic", "download-failed", None, msg)
    unwritable = _unwritable(where)
    if unwritable:  # said instead of announcing a download that cannot be stored
        msg = (f"auto: cannot write the model cache {where} ({unwritable}): using the embedded classic estimator; "
               f"make it writable or set DEPTHCRAFT_MODELS_DIR, then run `depthcraft models pull {info.name}`")
        say(msg)
        return Resolution("classic", "download-failed", None, msg)
    say(f"auto: downloading {info.title} ({info.size_text()}, {info.licence}, sha256-pinned) from {host} "
        f"into {where}, once: no depth model is in the cache and it is far more accurate than the embedded "
        f"classic estimator ({OFFLINE_ENV}=1 or --offline never downloads)")
    try:
        M.pull(info, progress=sys.stderr.isatty(), timeout=STALL_SECONDS, read_timeout=STALL_SECONDS,
               stall=rule)
    except Exception as e:  # noqa: BLE001 - any failure falls back; the user is told which
        msg = (f"auto: the download of {info.name} failed ({e}): using the embedded classic estimator; "
               f"run `depthcraft models pull {info.name}` to retry")
        say(msg)
        return Resolution("classic", "download-failed", None, msg)
    return Resolution(f"onnx:{info.name}", "downloaded", info.name)


def _unwritable(where) -> str | None:
    """None when the cache folder ``where`` exists (made now if need be) and can be written, else why
    not (a read-only file system, a file or a broken link where the folder should be)."""
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return "it is not a folder" if isinstance(e, (FileExistsError, NotADirectoryError)) else (e.strerror or str(e))
    return None if os.access(where, os.W_OK) else "read-only"


def forget() -> None:
    """Drop remembered failures (tests; a long-lived server after the network came back)."""
    with _lock:
        _failures.clear()
