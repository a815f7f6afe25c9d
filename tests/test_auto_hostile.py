"""``provider: auto`` and the model cache against a hostile world: a file in the cache with a
model's name and other bytes, odd DEPTHCRAFT_OFFLINE values, a registry or proxy that accepts
and never answers, a model cache that cannot be written. Real files, real loopback servers,
real processes."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

pytest.importorskip("onnx")

from conftest import run_cli  # noqa: E402
from test_auto import UPSTREAM_PATH, _pin, cache, registry, timed_resolve  # noqa: E402,F401 - fixtures
from test_models import tiny_model_bytes  # noqa: E402

from depthcraft.tasks.lib import models as M  # noqa: E402
from depthcraft.tasks.providers import DepthRequest, auto  # noqa: E402
from depthcraft.tasks.providers.onnx import OnnxProvider  # noqa: E402

MODEL = auto.AUTO_MODEL


def _silent_listener():
    """A loopback socket that accepts connections and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    return s


def _dead_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _other_graph(tmp_path) -> bytes:
    """A valid ONNX depth graph that is not the registry's model (another padding, another hash)."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, [1, 3, "H", "W"])
    y = helper.make_tensor_value_info("predicted_depth", TensorProto.FLOAT, [1, "H", "W"])
    g = helper.make_graph([helper.make_node("ReduceMax", ["pixel_values"], ["predicted_depth"], axes=[1],
                                            keepdims=0)], "other", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    p = tmp_path / "other.onnx"
    onnx.save(m, str(p))
    return p.read_bytes()


# -- a file in the cache with the model's name and other bytes -----------------------------------
@pytest.mark.parametrize("content", ["garbage", "another-graph"])
def test_a_cached_file_that_fails_its_hash_is_never_used(tmp_path, photos, content):
    """Offline, garbage bytes (a torn copy) or a valid graph that is not the pinned model, under the
    pinned name: auto says so in one line and uses classic; the run succeeds."""
    models = tmp_path / "models"
    models.mkdir()
    bad = models / f"{MODEL}.onnx"
    bad.write_bytes(np.random.default_rng(3).bytes(5000) if content == "garbage" else _other_graph(tmp_path))
    out = tmp_path / "d.npy"
    r = run_cli("estimate", photos["coffee"], "-o", out,
                env={"DEPTHCRAFT_OFFLINE": "1", "DEPTHCRAFT_MODELS_DIR": str(models)})
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    lines = [x for x in r.stderr.splitlines() if x.startswith("auto:")]
    assert len(lines) == 2 and str(bad) in lines[0] and "does not match the sha256" in lines[0]
    assert f"depthcraft models pull {MODEL}" in lines[0] and "offline" in lines[1]
    assert json.loads((tmp_path / "d.npy.json").read_text())["source"].startswith("classic")
    assert bad.exists()  # the user's file is theirs to delete; it is only never used


def test_online_a_corrupt_cached_model_is_downloaded_again(registry, cache):
    srv, info, data = registry
    cache.mkdir(parents=True)
    (cache / f"{MODEL}.onnx").write_bytes(data[: len(data) // 2])  # a torn copy under the right name
    said = []
    r = auto.resolve(say=said.append)
    assert (r.provider, r.reason) == (f"onnx:{MODEL}", "downloaded")
    assert "does not match the sha256" in said[0] and "downloading" in said[1]
    assert (cache / f"{MODEL}.onnx").read_bytes() == data
    assert not list(cache.glob("*.part"))


def test_explicit_onnx_model_refuses_a_cached_file_that_fails_its_hash(registry, cache, tmp_path, monkeypatch):
    srv, info, data = registry
    cache.mkdir(parents=True)
    (cache / f"{MODEL}.onnx").write_bytes(_other_graph(tmp_path))
    monkeypatch.setenv("DEPTHCRAFT_OFFLINE", "1")
    prov = OnnxProvider(MODEL)
    assert prov.identity()["sha256"] == info.sha256  # keyed by the weights it will run, never the stray file's
    with pytest.raises(M.ModelError, match="does not match the sha256") as e:
        prov.estimate(DepthRequest(image=np.zeros((64, 64, 3), np.uint8)))
    assert f"depthcraft models pull {MODEL}" in str(e.value)
    monkeypatch.delenv("DEPTHCRAFT_OFFLINE")  # online: the pinned file is downloaded over it, then run
    dm = prov.estimate(DepthRequest(image=np.zeros((64, 64, 3), np.uint8)))
    assert dm.source == f"onnx:{MODEL}" and (cache / f"{MODEL}.onnx").read_bytes() == data


def test_models_pull_replaces_a_cached_file_that_fails_its_hash(registry, cache):
    srv, info, data = registry
    cache.mkdir(parents=True)
    (cache / f"{MODEL}.onnx").write_bytes(b"not a model")
    from depthcraft.flows import cli_models

    assert cli_models.main(["pull", MODEL, "-q"]) == 0
    assert (cache / f"{MODEL}.onnx").read_bytes() == data and M.verify(MODEL).status == "ok"


# -- DEPTHCRAFT_OFFLINE ------------------------------------------------------------------------------
@pytest.mark.parametrize("value,offline", [("1", True), ("2", True), ("y", True), (" TRUE ", True),
                                           ("offline", True), ("0", False), ("false", False), ("No", False),
                                           ("off", False), ("", False)])
def test_offline_values(cache, monkeypatch, value, offline):
    """Any value but unset/empty/0/false/no/off means offline: never a download the user said no to."""
    port = _dead_port()
    monkeypatch.setenv("DEPTHCRAFT_MODELS_MIRROR", f"http://127.0.0.1:{port}/")
    monkeypatch.setenv("DEPTHCRAFT_OFFLINE", value)
    assert M.is_offline() is offline
    said = []
    r = auto.resolve(say=said.append)
    assert r.provider == "classic" and r.reason == ("offline" if offline else "unreachable")
    if offline:
        assert f"DEPTHCRAFT_OFFLINE={value.strip()}" in said[0]


# -- a network that accepts and never answers ----------------------------------------------------------
class _Loopback:
    """A threaded HTTP server on 127.0.0.1 with the handler ``H`` (quiet): ``base``, ``close()``."""

    def _serve(self, handler) -> None:
        handler.log_message = lambda self, *a: None
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class _HeadOnly(_Loopback):
    """Answers HEAD (so the probe passes), then never answers a GET: a registry that stalls."""

    def __init__(self):
        self.release = threading.Event()
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_HEAD(self):
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):
                outer.release.wait(120)

        self._serve(H)

    def close(self):
        self.release.set()
        super().close()


def test_a_registry_that_stalls_after_the_probe_falls_back_in_seconds(registry, cache, monkeypatch):
    srv, info, data = registry
    stall = _HeadOnly()
    monkeypatch.setenv("DEPTHCRAFT_MODELS_MIRROR", stall.base + "/")
    monkeypatch.setattr(auto, "STALL_SECONDS", 1.0, raising=False)
    r, said, waited = timed_resolve(stall)
    assert waited < 3.0, f"waited {waited:.1f} s for a registry that never answered"
    assert (r.provider, r.reason) == ("classic", "download-failed")
    assert "failed" in said[-1] and f"depthcraft models pull {MODEL}" in said[-1]
    assert not (cache / f"{MODEL}.onnx").exists()


def test_a_proxy_that_accepts_and_never_answers_is_unreachable_within_a_second(cache, monkeypatch):
    """https_proxy pointing at a proxy that is up (it accepts) but never answers: the probe asks the
    proxy itself, so auto falls back within a second rather than after the download's time-outs."""
    for k in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY",
              "DEPTHCRAFT_MODELS_MIRROR", "DEPTHCRAFT_OFFLINE"):
        monkeypatch.delenv(k, raising=False)
    proxy = _silent_listener()
    monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{proxy.getsockname()[1]}")  # all traffic goes there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    r, said, waited = timed_resolve(proxy)
    assert waited < 1.0, f"waited {waited:.2f} s"
    assert (r.provider, r.reason) == ("classic", "unreachable") and len(said) == 1


# -- a model cache that cannot be written -------------------------------------------------------------
def test_models_pull_into_a_cache_that_is_a_file_is_one_line(tmp_path):
    not_a_folder = tmp_path / "models"
    not_a_folder.write_text("a file where the model cache should be")
    r = run_cli("models", "pull", MODEL, "-q",
                env={"DEPTHCRAFT_MODELS_DIR": str(not_a_folder), "DEPTHCRAFT_OFFLINE": "",
                     "DEPTHCRAFT_MODELS_MIRROR": f"http://127.0.0.1:{_dead_port()}/"})
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Traceback" not in out, out
    assert f"cannot write the model cache {not_a_folder}" in " ".join(out.split())
    assert "DEPTHCRAFT_MODELS_DIR" in out


def test_auto_with_a_cache_that_is_a_file_falls_back_in_one_line(registry, cache, tmp_path, monkeypatch):
    not_a_folder = tmp_path / "models-file"
    not_a_folder.write_text("x")
    monkeypatch.setenv("DEPTHCRAFT_MODELS_DIR", str(not_a_folder))
    said = []
    r = auto.resolve(say=said.append)
    assert (r.provider, r.reason) == ("classic", "download-failed")
    assert f"cannot write the model cache {not_a_folder}" in said[-1]


# -- settings with typos ------------------------------------------------------------------------------
@pytest.mark.parametrize("mirror", ["127.0.0.1:8123", "ftp://127.0.0.1:8123/", "http://127.0.0.1:99999/",
                                    "http://[::1:8123/", "file:///srv/models/"])
def test_a_malformed_mirror_is_one_line_naming_the_variable(tmp_path, photos, mirror):
    """A typo in DEPTHCRAFT_MODELS_MIRROR is not a network failure: refused in one line (it was a
    traceback for a bad port or IPv6 address, and 'cannot reach 127.0.0.1:8123/onnx-community/...'
    for a missing scheme)."""
    r = run_cli("estimate", photos["coffee"], "-o", tmp_path / "d.npy",
                env={"DEPTHCRAFT_OFFLINE": "", "DEPTHCRAFT_MODELS_DIR": str(tmp_path / "m"),
                     "DEPTHCRAFT_MODELS_MIRROR": mirror})
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "DEPTHCRAFT_MODELS_MIRROR" in r.stderr
    assert not (tmp_path / "d.npy").exists()


@pytest.mark.parametrize("value,seconds", [("inf", 60.0), ("0", 0.05), ("", auto.PROBE_SECONDS), ("2", 2.0)])
def test_probe_seconds_is_always_a_finite_deadline(monkeypatch, value, seconds):
    monkeypatch.setenv("DEPTHCRAFT_PROBE_SECONDS", value)  # "inf" was a traceback from Thread.join
    assert auto.probe_seconds() == seconds


@pytest.mark.parametrize("value", ["abc", "nan", "-1", "0.5s"])
def test_a_probe_setting_that_is_not_a_number_is_said_in_one_line(monkeypatch, value, cache):
    """As the download's settings: a typo is said (it was silently replaced by the default), and
    auto falls back to classic without probing or downloading."""
    monkeypatch.setenv("DEPTHCRAFT_PROBE_SECONDS", value)
    monkeypatch.delenv("DEPTHCRAFT_OFFLINE", raising=False)
    told = []
    res = auto.resolve(say=told.append)
    assert res.provider == "classic" and len(told) == 1
    assert "DEPTHCRAFT_PROBE_SECONDS" in told[0] and repr(value) in told[0] and "seconds" in told[0], told


# -- a partial download left by a killed run ----------------------------------------------------------
def test_a_damaged_partial_download_is_fetched_again_from_zero_in_the_same_run(registry, cache):
    """A .part whose bytes are not the model's start (another file's, a damaged disk): the resumed
    file fails its hash, so the same run downloads from zero once, instead of failing this run."""
    srv, info, data = registry
    cache.mkdir(parents=True)
    (cache / f"{MODEL}.onnx.part").write_bytes(np.random.default_rng(5).bytes(len(data) // 3))
    r = auto.resolve(say=lambda s: None)
    assert (r.provider, r.reason) == (f"onnx:{MODEL}", "downloaded")
    assert (cache / f"{MODEL}.onnx").read_bytes() == data and not list(cache.glob("*.part"))
    assert [x[1] is not None for x in srv.log if x[2] in (200, 206)] == [True, False]  # a resume, then from zero


class _Endless(_Loopback):
    """Answers every GET with 200 and an endless body (a broken mirror, a wrong URL streaming a log)."""

    def __init__(self, announce: int | None = None):
        outer = self
        self.sent = 0

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_HEAD(self):
                self.send_response(200)
                self.end_headers()

            def do_GET(self):
                self.send_response(200)
                if announce is not None:
                    self.send_header("Content-Length", str(announce))
                self.end_headers()
                block = b"x" * 65536
                try:
                    while outer.sent < 64 << 20:  # 64 MB at most, then the test has failed anyway
                        self.wfile.write(block)
                        outer.sent += len(block)
                except OSError:
                    pass

        self._serve(H)


@pytest.mark.parametrize("announce", [None, 1 << 40])
def test_a_mirror_sending_more_than_the_model_never_fills_the_disk(registry, cache, monkeypatch, announce):
    """A pinned model's size is exact: a body past it (endless, or announced as 1 TB) is cut off
    at once and nothing is kept, rather than written to the cache until the disk is full."""
    srv, info, data = registry
    endless = _Endless(announce)
    monkeypatch.setenv("DEPTHCRAFT_MODELS_MIRROR", endless.base + "/")
    said = []
    try:
        r = auto.resolve(say=said.append)
    finally:
        endless.close()
    assert (r.provider, r.reason) == ("classic", "download-failed")
    assert f"is not sending {MODEL} ({len(data)} bytes)" in said[-1]
    assert not list(cache.glob("*.onnx*.part")) and not (cache / f"{MODEL}.onnx").exists()
    assert endless.sent < 16 << 20
