"""The model registry and the download path, against a real HTTP server on 127.0.0.1 serving a tiny model."""

from __future__ import annotations

import hashlib
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from depthcraft.flows import cli_models  # noqa: E402
from depthcraft.tasks.lib import models as M  # noqa: E402
from depthcraft.tasks.lib.errors import ParameterError  # noqa: E402
from depthcraft.tasks.providers import DepthRequest  # noqa: E402
from depthcraft.tasks.providers.onnx import OnnxProvider  # noqa: E402

UPSTREAM = "https://models.example.invalid/releases/v1/tiny.onnx"


def tiny_model_bytes(tmp_path) -> bytes:
    """A mean-over-channels depth graph, padded with an unused 256 KB initializer so it streams in chunks."""
    x = helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, [1, 3, "H", "W"])
    y = helper.make_tensor_value_info("predicted_depth", TensorProto.FLOAT, [1, "H", "W"])
    pad = numpy_helper.from_array(np.random.default_rng(1).random(65536).astype(np.float32), "pad")
    g = helper.make_graph([helper.make_node("ReduceMean", ["pixel_values"], ["predicted_depth"], axes=[1],
                                            keepdims=0)], "tiny", [x], [y], initializer=[pad])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    p = tmp_path / "tiny_src.onnx"
    onnx.save(m, str(p))
    return p.read_bytes()


class FileServer:
    """http.server serving bytes by path, with Range support and scripted failures."""

    def __init__(self, files: dict[str, bytes]):
        self.files = dict(files)
        self.log: list[tuple[str, str | None, int]] = []  # (path, Range header, status)
        self.cut_after: int | None = None  # next response sends this many body bytes, then drops the connection
        self.ignore_range = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # keep test output clean
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                body = outer.files.get(self.path.split("?")[0])
                if body is None:
                    outer.log.append((self.path, rng, 404))
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                total, start = len(body), 0
                m = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if m and not outer.ignore_range:
                    start = int(m.group(1))
                    if start >= total:
                        outer.log.append((self.path, rng, 416))
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{total}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
                    outer.log.append((self.path, rng, 206))
                else:
                    self.send_response(200)
                    outer.log.append((self.path, rng, 200))
                chunk = body[start:]
                self.send_header("Content-Length", str(len(chunk)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if outer.cut_after is not None:
                    n, outer.cut_after = outer.cut_after, None
                    self.wfile.write(chunk[:n])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(chunk)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A models folder in tmp, a server serving the tiny model, and the registry pointed at it."""
    data = tiny_model_bytes(tmp_path)
    srv = FileServer({"/releases/v1/tiny.onnx": data})
    monkeypatch.setenv("DEPTHCRAFT_MODELS_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DEPTHCRAFT_MODELS_MIRROR", srv.base + "/")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("DEPTHCRAFT_OFFLINE", raising=False)  # the suite's default; the loopback server stands in
    info = M.ModelInfo(name="tiny-test", title="Tiny test model", url=UPSTREAM,
                       sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data), licence="CC-BY-NC-4.0",
                       commercial_use=False, description="a test graph", input_size=28)
    monkeypatch.setitem(M.REGISTRY, info.name, info)
    yield srv, info, data
    srv.close()


def test_registry_has_the_required_models_with_complete_data():
    need = {"depth-anything-v2-small", "depth-anything-v2-base", "depth-anything-v2-large",
            "depth-anything-v2-metric-indoor-small", "depth-anything-v2-metric-outdoor-small", "midas-v2.1-small"}
    assert need <= set(M.REGISTRY)
    for info in M.REGISTRY.values():
        assert info.url and info.url.startswith("https://")
        assert info.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", info.sha256)
        assert info.sha256_note and info.licence and info.description and info.source
        assert info.output in M.OUTPUT_KINDS and len(info.mean) == 3 and len(info.std) == 3
        if info.output == "metric":
            assert info.max_depth_m
    R = M.REGISTRY
    assert R["depth-anything-v2-small"].licence == "Apache-2.0" and R["depth-anything-v2-small"].commercial_use
    assert not R["depth-anything-v2-base"].commercial_use and not R["depth-anything-v2-large"].commercial_use
    assert R["depth-anything-v2-metric-indoor-small"].max_depth_m == 20
    assert R["depth-anything-v2-metric-outdoor-small"].max_depth_m == 80
    midas = R["midas-v2.1-small"]
    assert (midas.input_size, midas.keep_aspect, midas.output) == (256, False, "relative_inverse")
    assert R["depth-anything-v2-small"].input_size % 14 == 0


def test_unknown_model_suggests_close_names():
    with pytest.raises(ParameterError, match="did you mean depth-anything-v2-small"):
        M.get_model("depth-anything-v2-smal")


def test_models_dir_and_mirror_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPTHCRAFT_MODELS_DIR", str(tmp_path / "x"))
    assert M.models_dir() == tmp_path / "x"
    monkeypatch.delenv("DEPTHCRAFT_MODELS_DIR")
    assert "depthcraft" in str(M.models_dir())
    info = M.REGISTRY["midas-v2.1-small"]
    monkeypatch.delenv("DEPTHCRAFT_MODELS_MIRROR", raising=False)
    assert M.resolved_url(info) == info.url
    monkeypatch.setenv("DEPTHCRAFT_MODELS_MIRROR", "http://127.0.0.1:8123/")
    assert M.resolved_url(info) == "http://127.0.0.1:8123/isl-org/MiDaS/releases/download/v2_1/model-small.onnx"


def test_pull_downloads_once_verified(env):
    srv, info, data = env
    said = []
    path = M.pull("tiny-test", progress=False, say=said.append)
    assert path.read_bytes() == data
    assert path.parent == M.models_dir()
    assert not list(path.parent.glob("*.part"))
    assert any("NON-COMMERCIAL" in s for s in said)  # the licence is shown at pull time
    assert [s for _, _, s in srv.log] == [200]
    M.pull("tiny-test", progress=False)  # cached: no second request
    assert len(srv.log) == 1
    assert M.verify("tiny-test").status == "ok"


def test_interrupted_download_resumes_with_range(env):
    srv, info, data = env
    cut = len(data) // 3
    srv.cut_after = cut
    with pytest.raises(M.ModelError, match="interrupted") as ei:
        M.pull(info, progress=False)
    assert "running it again resumes" in str(ei.value)
    part = M.cached_path(info).with_name("tiny-test.onnx.part")
    assert part.stat().st_size == cut
    assert not M.is_cached(info)
    path = M.pull(info, progress=True)  # with the rich progress bar this time
    assert path.read_bytes() == data
    assert srv.log[-1][1:] == (f"bytes={cut}-", 206)  # only the rest was asked for
    assert not part.exists()


def test_server_ignoring_range_restarts_cleanly(env):
    srv, info, data = env
    srv.cut_after = 1000
    with pytest.raises(M.ModelError):
        M.pull(info, progress=False)
    srv.ignore_range = True
    assert M.pull(info, progress=False).read_bytes() == data
    assert srv.log[-1][1:] == ("bytes=1000-", 200)


def test_parallel_pulls_of_one_model_download_it_once(env):
    srv, info, data = env
    results, errors = [], []

    def go():
        try:
            results.append(M.pull(info, progress=False))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=go) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and len(results) == 3
    assert all(p.read_bytes() == data for p in results)
    assert len(srv.log) == 1


def test_complete_part_file_is_not_fetched_again(env):
    srv, info, data = env
    part = M.cached_path(info).with_name("tiny-test.onnx.part")
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_bytes(data)  # e.g. killed between the last byte and the rename
    assert M.pull(info, progress=False).read_bytes() == data
    assert srv.log[-1][2] == 416


def test_hash_mismatch_removes_the_file_and_says_how_to_retry(env, monkeypatch):
    srv, info, data = env
    bad = M.ModelInfo(**{**info.__dict__, "sha256": "0" * 64})
    monkeypatch.setitem(M.REGISTRY, "tiny-test", bad)
    with pytest.raises(M.ModelError) as ei:
        M.pull("tiny-test", progress=False)
    msg = str(ei.value)
    assert "expected " + "0" * 64 in msg and hashlib.sha256(data).hexdigest() in msg
    assert "partial file was removed" in msg and "models pull tiny-test" in msg
    assert not M.is_cached(bad) and not list(M.models_dir().glob("*.part"))


def test_offline_error_says_how_to_fix(env, monkeypatch):
    srv, info, data = env
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    monkeypatch.setenv("DEPTHCRAFT_MODELS_MIRROR", f"http://127.0.0.1:{port}")
    with pytest.raises(M.ModelError) as ei:
        M.pull(info, progress=False, timeout=5)
    msg = str(ei.value)
    assert f"could not reach 127.0.0.1:{port}" in msg
    assert "onnx:/path/model.onnx" in msg and "DEPTHCRAFT_MODELS_DIR" in msg
    assert ei.value.retryable


def test_http_404_is_reported(env, monkeypatch):
    srv, info, data = env
    monkeypatch.setitem(M.REGISTRY, "tiny-test", M.ModelInfo(**{**info.__dict__, "url": UPSTREAM + ".gone"}))
    with pytest.raises(M.ModelError, match="HTTP 404"):
        M.pull("tiny-test", progress=False)


def test_unpinned_needs_trust_and_then_records_the_hash(env, monkeypatch):
    srv, info, data = env
    unpinned = M.ModelInfo(**{**info.__dict__, "sha256": None})
    monkeypatch.setitem(M.REGISTRY, "tiny-test", unpinned)
    with pytest.raises(M.ModelError, match="--trust-unpinned"):
        M.pull("tiny-test", progress=False)
    assert srv.log == []  # refused before any byte was fetched
    said = []
    M.pull("tiny-test", progress=False, trust_unpinned=True, say=said.append)
    sha = hashlib.sha256(data).hexdigest()
    assert M.trusted_hashes()["tiny-test"]["sha256"] == sha
    assert any(sha in s for s in said)
    assert M.verify("tiny-test").status == "ok"  # checked against the recorded hash from now on
    assert OnnxProvider("tiny-test").identity()["sha256"] == sha


def test_verify_detects_a_corrupted_cache(env):
    srv, info, data = env
    path = M.pull(info, progress=False)
    assert M.verify(info).status == "ok"
    path.write_bytes(data[:-10] + b"0123456789")
    r = M.verify(info)
    assert r.status == "mismatch" and r.expected == info.sha256 and r.got != info.sha256
    assert M.verify(M.REGISTRY["midas-v2.1-small"]).status == "missing"


def test_provider_downloads_a_pinned_model_on_first_use_and_runs_it(env):
    srv, info, data = env
    prov = OnnxProvider("tiny-test")
    assert prov.identity() == {"provider": "onnx", "model": "tiny-test", "sha256": info.sha256}  # no download
    assert srv.log == []
    photo = np.full((90, 120, 3), 30, np.uint8)
    photo[:30, :40] = 220
    dm = prov.estimate(DepthRequest(image=photo))
    assert dm.shape == (90, 120) and dm.kind == "relative_inverse" and dm.source == "onnx:tiny-test"
    assert dm.data[5, 5] > 0.9 and dm.data[-5, -5] < 0.1
    assert len(srv.log) == 1 and M.is_cached(info)
    assert prov.identity()["sha256"] == hashlib.sha256(data).hexdigest()
    prov.estimate(DepthRequest(image=photo))
    assert len(srv.log) == 1


def test_cli_models_commands(env, capsys):
    srv, info, data = env
    assert cli_models.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "tiny-test" in out and "depth-anything-v2-small" in out and "non-commercial" in out
    assert cli_models.main(["pull", "tiny-test", "-q"]) == 0
    out = capsys.readouterr().out
    assert "CC-BY-NC-4.0" in out and "NON-COMMERCIAL" in out and "verified" in out
    assert cli_models.main(["verify"]) == 0
    assert "ok" in capsys.readouterr().out
    M.cached_path(info).write_bytes(b"corrupt")
    assert cli_models.main(["verify", "tiny-test"]) == 1
    assert "MISMATCH" in capsys.readouterr().out
    assert cli_models.main(["pull", "no-such-model"]) == 2
    assert "unknown model" in capsys.readouterr().err  # (errors on stderr, as every command's)
    assert cli_models.main(["pull", "depth-anything-v2-base"]) == 1  # unpinned, no trust: refused offline
    assert "--trust-unpinned" in capsys.readouterr().err


def test_offline_never_downloads_a_model_on_first_use(env, monkeypatch):
    srv, info, data = env
    monkeypatch.setenv("DEPTHCRAFT_OFFLINE", "1")
    with pytest.raises(M.ModelError) as e:
        OnnxProvider("tiny-test").estimate(DepthRequest(image=np.zeros((30, 40, 3), np.uint8)))
    assert "DEPTHCRAFT_OFFLINE" in str(e.value) and "depthcraft models pull tiny-test" in str(e.value)
    assert srv.log == [] and not M.is_cached(info)


def test_models_pull_downloads_nothing_when_offline(env, monkeypatch, capsys):
    """``DEPTHCRAFT_OFFLINE`` means no download at all: an explicit pull is refused in one line
    that names the setting (it downloaded anyway)."""
    srv, info, data = env
    monkeypatch.setenv("DEPTHCRAFT_OFFLINE", "1")
    assert cli_models.main(["pull", "tiny-test", "-q"]) == 1
    cap = capsys.readouterr()
    out = cap.out + cap.err
    assert "DEPTHCRAFT_OFFLINE=1 forbids downloads" in cap.err and len(out.strip().splitlines()) <= 2
    assert srv.log == [] and not M.is_cached(info)
    monkeypatch.delenv("DEPTHCRAFT_OFFLINE")
    assert cli_models.main(["pull", "tiny-test", "-q"]) == 0 and M.is_cached(info)
