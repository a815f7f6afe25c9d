"""The stall rule: a registry that trickles, crawls halfway, drips its headers, or never completes a
connection ends `auto`'s implicit download in seconds (classic, one line with the pull command) and
an explicit `depthcraft models pull` in one clear line; the `.part` is kept and a later pull resumes
it. Real loopback servers; the rule's window is shortened through its environment variable."""

from __future__ import annotations

import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytest.importorskip("onnx")

from conftest import run_cli  # noqa: E402
from test_auto import MODEL, cache, registry  # noqa: E402,F401 - fixtures
from test_models import env  # noqa: E402,F401 - fixture

from depthcraft.tasks.lib import models as M  # noqa: E402
from depthcraft.tasks.lib import stall  # noqa: E402
from depthcraft.tasks.providers import auto  # noqa: E402


class Trickle:
    """A loopback registry that answers HEAD at once (the probe passes), then serves GETs badly:

    ``mode`` "body": headers at once, ``fast`` body bytes at once, then ``step`` bytes every
    ``interval`` s; "headers": the status line and headers one byte every ``interval`` s;
    "steady": ``step`` bytes every ``interval`` s from the start. ``mode`` None serves normally.
    Honours ``Range: bytes=N-``. ``sent``: body bytes written. ``announce``: the file size said in
    the headers (default ``len(data)``; a larger one stands in for a real model's exact size)."""

    def __init__(self, data: bytes, mode: str | None = "body", fast: int = 0, step: int = 1,
                 interval: float = 0.2, announce: int | None = None):
        self.data, self.mode, self.fast, self.step, self.interval = data, mode, fast, step, interval
        self.announce = announce
        self.stop = threading.Event()
        self.sent = 0
        self.ranges: list[str | None] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_HEAD(self):
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):
                rng = self.headers.get("Range")
                outer.ranges.append(rng)
                m = re.fullmatch(r"bytes=(\d+)-", rng or "")
                start = int(m.group(1)) if m else 0
                body = outer.data[start:]
                status = "206 Partial Content" if start else "200 OK"
                size = outer.announce or len(outer.data)
                head = (f"HTTP/1.1 {status}\r\nContent-Length: {size - start}\r\n"
                        + (f"Content-Range: bytes {start}-{size - 1}/{size}\r\n" if start else "")
                        + "Content-Type: application/octet-stream\r\n\r\n").encode()
                try:
                    if outer.mode == "headers":
                        for b in head:
                            if outer.stop.wait(outer.interval):
                                return
                            self.wfile.write(bytes([b]))
                            self.wfile.flush()
                        return
                    self.wfile.write(head)
                    fast = len(body) if outer.mode is None else outer.fast if outer.mode == "body" else 0
                    self.wfile.write(body[:fast])
                    self.wfile.flush()
                    outer.sent += fast
                    i = fast
                    while i < len(body):
                        if outer.stop.wait(outer.interval):
                            return
                        self.wfile.write(body[i:i + outer.step])
                        self.wfile.flush()
                        outer.sent += len(body[i:i + outer.step])
                        i += outer.step
                except OSError:  # the client gave up: what the test wants
                    pass
                finally:
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def _resolve_within(seconds: float, *closing):
    """``auto.resolve()`` in a thread: (resolution or None if still running, lines said, seconds)."""
    said: list[str] = []
    box: list = []
    t0 = time.monotonic()
    th = threading.Thread(target=lambda: box.append(auto.resolve(say=said.append)), daemon=True)
    th.start()
    th.join(seconds)
    waited = time.monotonic() - t0
    for c in closing:  # releases a resolve that is still stuck, so later tests are not
        c.close()
    th.join(30)
    return (box[0] if box and waited < seconds else None), said, waited


@pytest.mark.parametrize("mode,fast", [("body", 0), ("body", "half"), ("headers", 0)],
                         ids=["trickle", "crawl-midway", "header-drip"])
def test_auto_falls_back_from_a_trickling_registry_within_seconds(registry, cache, monkeypatch, mode, fast):
    """A byte every 0.2 s passes any per-read time-out: before the stall rule auto downloaded on for
    days (99 MB at 5 B/s). Now it is over one window (1 s here, 10 s by default) after it began."""
    srv, info, data = registry
    fast = len(data) // 2 if fast == "half" else fast
    trickle = Trickle(data, mode, fast=fast)
    monkeypatch.setenv("DEPTHCRAFT_MODELS_MIRROR", trickle.base + "/")
    monkeypatch.setenv(stall.WINDOW_ENV, "1")
    r, said, waited = _resolve_within(15.0, trickle)
    assert r is not None, f"auto was still downloading from a trickle after {waited:.0f} s"
    assert waited < 4.0, f"{waited:.1f} s"
    assert (r.provider, r.reason) == ("classic", "download-failed")
    last = said[-1]
    assert "\n" not in last and f"depthcraft models pull {MODEL}" in last and "classic" in last
    assert "too slow: 0.0" in last and stall.MIN_KBPS_ENV in last, last
    part = cache / f"{MODEL}.onnx.part"
    if fast:
        assert part.stat().st_size >= fast and "kept in" in last  # the next run resumes it
    assert not (cache / f"{MODEL}.onnx").exists()


def test_auto_gives_up_at_once_on_a_download_that_cannot_finish_before_its_deadline(registry, cache, monkeypatch):
    """20 KB/s passes the rate floor, but the rest would take ~13 s against a 3 s deadline: auto
    says so after one window instead of downloading until the deadline."""
    srv, info, data = registry
    trickle = Trickle(data, "steady", step=2000, interval=0.1)
    monkeypatch.setenv("DEPTHCRAFT_MODELS_MIRROR", trickle.base + "/")
    monkeypatch.setenv(stall.WINDOW_ENV, "1")
    monkeypatch.setenv(stall.AUTO_DEADLINE_ENV, "3")
    r, said, waited = _resolve_within(20.0, trickle)
    assert r is not None and waited < 2.9, f"{waited:.1f} s"
    assert r.reason == "download-failed" and "would take about" in said[-1] and stall.AUTO_DEADLINE_ENV in said[-1]


def test_auto_does_not_wait_past_its_deadline_for_another_process_download(registry, cache, monkeypatch):
    srv, info, data = registry
    monkeypatch.setenv(stall.AUTO_DEADLINE_ENV, "1")
    cache.mkdir(parents=True)
    holding, release = threading.Event(), threading.Event()

    def hold():  # another download of the same model in progress (flock is per open file, so a thread will do)
        with M._lock(cache / f"{MODEL}.onnx"):
            holding.set()
            release.wait(20)

    th = threading.Thread(target=hold, daemon=True)
    th.start()
    assert holding.wait(5)

    class _Release:
        def close(self):
            release.set()

    r, said, waited = _resolve_within(10.0, _Release())
    th.join(5)
    assert r is not None and waited < 3.0, f"{waited:.1f} s"
    assert r.reason == "download-failed" and "another depthcraft process" in said[-1]


def test_a_stalled_pull_keeps_its_part_and_the_next_pull_resumes(env, monkeypatch):
    srv, info, data = env
    crawl = Trickle(data, "body", fast=len(data) // 2)
    monkeypatch.setenv("DEPTHCRAFT_MODELS_MIRROR", crawl.base + "/")
    monkeypatch.setenv(stall.WINDOW_ENV, "1")
    t0 = time.monotonic()
    try:
        with pytest.raises(M.ModelError, match="too slow") as e:
            M.pull(info, progress=False)
        waited = time.monotonic() - t0
        assert waited < 4.0 and "running it again resumes" in str(e.value)
        part = M.cached_path(info).with_name(info.filename + ".part")
        kept = part.stat().st_size
        assert kept >= len(data) // 2
        crawl.mode = None  # the registry is well again
        assert M.pull(info, progress=False).read_bytes() == data
        assert crawl.ranges[-1] == f"bytes={kept}-"
    finally:
        crawl.close()


def test_a_connection_that_never_completes_ends_with_the_window(env, monkeypatch):
    """A listener whose queue is full drops the SYN: the connect stalls. Before, an explicit pull
    waited its 30 s connect time-out; now one window."""
    srv, info, data = env
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(0)
    filler = socket.create_connection(s.getsockname(), timeout=2)  # fills the accept queue
    monkeypatch.setenv("DEPTHCRAFT_MODELS_MIRROR", f"http://127.0.0.1:{s.getsockname()[1]}/")
    monkeypatch.setenv(stall.WINDOW_ENV, "1")
    t0 = time.monotonic()
    try:
        with pytest.raises(M.ModelError, match="no connection within 1 s"):
            M.pull(info, progress=False)
    finally:
        filler.close()
        s.close()
    assert time.monotonic() - t0 < 4.0


def test_models_pull_on_a_trickle_is_one_clear_line(tmp_path):
    """The command line: exit 1 and one line naming the cause, the setting, and the kept part."""
    trickle = Trickle(b"x" * 50_000, "body", fast=5000, announce=M.REGISTRY[MODEL].size_bytes)
    models = tmp_path / "models"
    t0 = time.monotonic()
    try:
        r = run_cli("models", "pull", MODEL, "-q", timeout=60,
                    env={"DEPTHCRAFT_MODELS_DIR": str(models), "DEPTHCRAFT_OFFLINE": "",
                         "DEPTHCRAFT_MODELS_MIRROR": trickle.base + "/", "NO_PROXY": "127.0.0.1,localhost",
                         stall.WINDOW_ENV: "1"})
    finally:
        trickle.close()
    waited = time.monotonic() - t0
    lines = [x for x in (r.stdout + r.stderr).splitlines() if x.strip()]
    errors = [x for x in lines if x.startswith("error:")]
    assert errors and all(x in r.stderr for x in errors)  # (errors on stderr)
    assert r.returncode == 1 and "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    assert len(errors) == 1 and "too slow" in errors[0] and stall.MIN_KBPS_ENV in errors[0], lines
    assert f"kept in {MODEL}.onnx.part" in errors[0]
    assert (models / f"{MODEL}.onnx.part").stat().st_size >= 5000
    assert waited < 20.0


def test_the_guard_reaches_the_socket_in_this_httpx():
    """Header drips can only be stopped inside the reads: pin that the backend hook is in place."""
    import httpx

    with httpx.Client() as c:
        assert stall.guard_client(c, stall.Guard(stall.StallRule()))


@pytest.mark.parametrize("value,expected", [("", 10.0), (" 25 ", 25.0), ("0", 0.001), ("1e309", 1e7)])
def test_stall_settings_are_always_finite(monkeypatch, value, expected):
    monkeypatch.setenv(stall.MIN_KBPS_ENV, value)
    monkeypatch.setenv(stall.WINDOW_ENV, "inf")
    rule = stall.StallRule.for_auto()
    assert rule.min_kbps == expected and rule.window_s == 3600.0 and rule.deadline_s == stall.AUTO_DEADLINE_S
    assert stall.StallRule.for_pull().deadline_s is None
