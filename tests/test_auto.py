"""``provider: auto``: a cached model, else one pull from the registry (a loopback server here),
else ``classic`` within a second; what it resolved to keys the cache and is recorded."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")

from conftest import run_cli  # noqa: E402
from test_models import FileServer, tiny_model_bytes  # noqa: E402

from depthcraft.tasks.lib import models as M  # noqa: E402
from depthcraft.tasks.providers import auto  # noqa: E402

MODEL = auto.AUTO_MODEL
UPSTREAM_PATH = "/onnx-community/depth-anything-v2-small/resolve/pinned/onnx/model.onnx"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty model cache; failures remembered by earlier tests forgotten."""
    d = tmp_path / "models"
    monkeypatch.setenv("DEPTHCRAFT_MODELS_DIR", str(d))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    auto.forget()
    yield d
    auto.forget()


@pytest.fixture
def registry(tmp_path, monkeypatch, cache):
    """The auto model's registry entry served by a loopback server: the tiny graph, pinned by its sha256."""
    data = tiny_model_bytes(tmp_path)
    srv = FileServer({UPSTREAM_PATH: data})
    real = M.REGISTRY[MODEL]
    info = M.ModelInfo(**{**real.__dict__, "url": "https://huggingface.co" + UPSTREAM_PATH,
                          "sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)})
    monkeypatch.setitem(M.REGISTRY, MODEL, info)
    monkeypatch.setenv("DEPTHCRAFT_MODELS_MIRROR", srv.base + "/")
    monkeypatch.delenv("DEPTHCRAFT_OFFLINE", raising=False)
    yield srv, info, data
    srv.close()


def _pin(monkeypatch, name: str, data: bytes) -> None:
    """Pin registry model ``name`` to ``data`` (the tiny graph stands in for its real weights)."""
    monkeypatch.setitem(M.REGISTRY, name, M.ModelInfo(**{**M.REGISTRY[name].__dict__,  # a pinned size is exact too
                                                         "sha256": hashlib.sha256(data).hexdigest(),
                                                         "size_bytes": len(data)}))


# A model pulled into the cache, for tests that run depthcraft in another process (where the
# registry cannot be re-pinned): an unpinned registry model with the hash record that
# `depthcraft models pull --trust-unpinned` leaves beside it. (A file under a pinned name with
# other bytes is never used: tests/test_auto_hostile.py.)
CACHED = "depth-anything-v2-base"


def _install(models: Path, tmp_path, name: str = CACHED) -> None:
    data = tiny_model_bytes(tmp_path)
    models.mkdir(parents=True, exist_ok=True)
    (models / f"{name}.onnx").write_bytes(data)
    record = {name: {"sha256": hashlib.sha256(data).hexdigest(), "url": "test", "recorded": "2026-11-30T00:00:00"}}
    (models / "trusted.json").write_text(json.dumps(record))


def timed_resolve(*closing) -> tuple:
    """``auto.resolve()`` timed: (resolution, the lines it said, seconds). ``closing``: what to
    close after it (stand-in servers), whatever happens."""
    said: list[str] = []
    try:
        t0 = time.monotonic()
        r = auto.resolve(say=said.append)
        return r, said, time.monotonic() - t0
    finally:
        for c in closing:
            c.close()


def _silent_port():
    """A loopback socket that accepts connections and never answers (a stalled network)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    return s


def test_offline_falls_back_to_classic_within_a_second_and_says_how_to_get_a_model(cache, monkeypatch):
    monkeypatch.setenv("DEPTHCRAFT_OFFLINE", "1")
    said = []
    t0 = time.monotonic()
    r = auto.resolve(say=said.append)
    assert time.monotonic() - t0 < 1.0
    assert (r.provider, r.reason) == ("classic", "offline")
    assert len(said) == 1 and f"depthcraft models pull {MODEL}" in said[0] and "classic" in said[0]
    assert auto.resolve(say=said.append).provider == "classic" and len(said) == 1  # told once per process


@pytest.mark.parametrize("server", ["refused", "stalled"])
def test_unreachable_registry_falls_back_within_a_second(cache, monkeypatch, server):
    monkeypatch.delenv("DEPTHCRAFT_OFFLINE", raising=False)
    held = _silent_port()
    port = held.getsockname()[1]
    if server == "refused":
        held.close()  # nothing listens there any more: the connection is refused at once
    monkeypatch.setenv("DEPTHCRAFT_MODELS_MIRROR", f"http://127.0.0.1:{port}/")
    r, said, waited = timed_resolve(held)
    assert waited < 1.0, f"waited {waited:.2f} s for the network"
    assert (r.provider, r.reason) == ("classic", "unreachable")
    assert len(said) == 1 and f"127.0.0.1:{port}" in said[0] and f"depthcraft models pull {MODEL}" in said[0]
    assert not any(cache.glob("*.onnx"))


def test_pulls_the_pinned_model_once_with_one_line_then_uses_the_cache(registry, cache):
    srv, info, data = registry
    said = []
    r = auto.resolve(say=said.append)
    assert (r.provider, r.reason) == (f"onnx:{MODEL}", "downloaded")
    assert len(said) == 1
    line = said[0]
    assert info.title in line and info.size_text() in line and "Apache-2.0" in line and "once" in line
    assert (cache / f"{MODEL}.onnx").read_bytes() == data
    gets = [x for x in srv.log if x[2] in (200, 206)]
    assert len(gets) == 1
    r2 = auto.resolve(say=said.append)
    assert (r2.provider, r2.reason) == (f"onnx:{MODEL}", "cached")
    assert len(said) == 1 and srv.log == gets  # no second download, no network at all


def test_a_failed_download_falls_back_and_says_how_to_retry(registry, cache, monkeypatch):
    srv, info, data = registry
    monkeypatch.setitem(M.REGISTRY, MODEL, M.ModelInfo(**{**info.__dict__, "sha256": "0" * 64}))
    said = []
    r = auto.resolve(say=said.append)
    assert (r.provider, r.reason) == ("classic", "download-failed")
    assert len(said) == 2 and "sha256 mismatch" in said[1] and f"depthcraft models pull {MODEL}" in said[1]
    assert not (cache / f"{MODEL}.onnx").exists()


def test_best_cached_model_wins_and_offline_still_uses_it(cache, monkeypatch, tmp_path):
    monkeypatch.setenv("DEPTHCRAFT_OFFLINE", "1")
    cache.mkdir(parents=True)
    data = tiny_model_bytes(tmp_path)
    _pin(monkeypatch, "midas-v2.1-small", data)
    _pin(monkeypatch, MODEL, data)
    (cache / "midas-v2.1-small.onnx").write_bytes(data)
    assert auto.resolve(say=lambda s: None).provider == "onnx:midas-v2.1-small"
    (cache / f"{MODEL}.onnx").write_bytes(data)
    assert auto.resolve(say=lambda s: None).provider == f"onnx:{MODEL}"  # Depth Anything before MiDaS


def _recipe(tmp_path, photo, provider="auto"):
    p = tmp_path / f"r-{provider.replace(':', '_')}.yaml"
    p.write_text(f"""\
version: 1
name: autotest
provider: {provider}
inputs:
  images: [{json.dumps(str(photo))}]
steps:
  - id: depth
    uses: estimate
output: out/{{image}}/
""")
    return p


def test_cache_keys_follow_what_auto_resolved_to(cache, monkeypatch, tmp_path, photos):
    from depthcraft.flows.compile import compile_plan
    from depthcraft.flows.recipe import load_recipe
    from depthcraft.flows.workspace import Workspace

    monkeypatch.setenv("DEPTHCRAFT_OFFLINE", "1")
    ws = Workspace.default(tmp_path / "ws")

    def plan(provider="auto"):
        auto.forget()
        recipe, src = load_recipe(_recipe(tmp_path, photos["chelsea"], provider))
        p = compile_plan(recipe, src, ws, out_root=tmp_path)
        return p, p.nodes[("depth", "chelsea")]

    p_classic, n_classic = plan()
    assert n_classic.provider == "classic" and n_classic.requested_provider == "auto"
    assert p_classic.resolved["auto"]["reason"] == "offline"
    assert plan("classic")[1].key == n_classic.key  # the same computation: shared, not recomputed
    cache.mkdir(parents=True)
    data = tiny_model_bytes(tmp_path)
    _pin(monkeypatch, MODEL, data)
    (cache / f"{MODEL}.onnx").write_bytes(data)
    p_model, n_model = plan()
    assert n_model.provider == f"onnx:{MODEL}" and p_model.resolved["auto"]["reason"] == "cached"
    assert n_model.key != n_classic.key


def test_run_records_the_resolution_and_never_serves_classic_for_a_model(prefect_server, tmp_path, photos):
    ws, models = tmp_path / "ws", tmp_path / "models"
    recipe = _recipe(tmp_path, photos["chelsea"])
    env = {"DEPTHCRAFT_MODELS_DIR": str(models), "DEPTHCRAFT_OFFLINE": "1"}

    def run():
        r = run_cli("--workspace", ws, "run", recipe, "--out", tmp_path / "o", "--json", env=env)
        assert r.returncode == 0, r.stderr
        s = json.loads(r.stdout)
        return s, json.loads(Path(s["manifest"]).read_text()), r.stderr

    s1, m1, err1 = run()
    assert m1["provider"]["resolved"]["auto"]["provider"] == "classic"
    assert "classic" in m1["provider"]["identities"] and err1.count("auto: offline") == 1
    _install(models, tmp_path)
    s2, m2, err2 = run()
    assert m2["provider"]["resolved"]["auto"] == {"provider": f"onnx:{CACHED}", "reason": "cached", "model": CACHED}
    assert s2["computed"] == 1 and s2["cached"] == 0  # the classic result is not served for the model
    step = m2["steps"][0]
    assert step["provider"] == f"onnx:{CACHED}" and step["provider_requested"]["name"] == "auto"
    turns = [json.loads(x) for x in (ws / "sessions" / f"{s2['session_id']}.jsonl").read_text().splitlines()]
    assert [t["provider"] for t in turns] == ["classic", f"onnx:{CACHED}"]
    assert turns[1]["provider_requested"]["reason"] == "cached" and "auto:" not in err2
    s3, _, _ = run()
    assert s3["cached"] == 1  # and the model result is reused as such


def test_oneshot_offline_flag_uses_classic_and_says_so(tmp_path, photos, monkeypatch):
    out = tmp_path / "d.npy"
    r = run_cli("estimate", photos["coffee"], "-o", out, "--offline",
                env={"DEPTHCRAFT_OFFLINE": "", "DEPTHCRAFT_MODELS_DIR": str(tmp_path / "none")})
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.startswith("auto:")]
    assert len(lines) == 1 and "offline" in lines[0] and f"depthcraft models pull {MODEL}" in lines[0]
    from depthcraft.tasks.lib.images import read_image
    from depthcraft.tasks.providers.classic import estimate_classic

    assert np.allclose(np.load(out), estimate_classic(read_image(photos["coffee"]).rgb), atol=1e-6)


def test_reproduce_uses_what_auto_resolved_to_then(prefect_server, tmp_path, photos):
    ws, models = tmp_path / "ws", tmp_path / "models"
    recipe = _recipe(tmp_path, photos["coffee"])
    env = {"DEPTHCRAFT_MODELS_DIR": str(models), "DEPTHCRAFT_OFFLINE": "1"}
    r = run_cli("--workspace", ws, "run", recipe, "--out", tmp_path / "o", "--json", env=env)
    assert r.returncode == 0, r.stderr
    manifest = json.loads(r.stdout)["manifest"]
    _install(models, tmp_path)  # a model arrives later: auto would now resolve to it, the manifest said classic
    r = run_cli("--workspace", ws, "reproduce", manifest, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "reproduced" in r.stdout + r.stderr and "each has the recorded sha256" in r.stderr


def test_a_run_that_downloads_the_model_says_so_in_its_manifest(prefect_server, tmp_path, photos):
    """`depthcraft run` resolves auto twice (the command line's plan, to fail before any server
    starts, then the flow's): the first downloaded the model, the second found it in the cache,
    and the manifest and the session said `cached` for the run that downloaded it. Both now see
    the run's one resolution. Real download from a loopback registry; the auto model's pin is
    set to the tiny graph in the child process (the only stand-in here)."""
    import subprocess
    import sys

    data = tiny_model_bytes(tmp_path)
    srv = FileServer({UPSTREAM_PATH: data})
    ws, models = tmp_path / "ws", tmp_path / "models"
    recipe = _recipe(tmp_path, photos["chelsea"])
    pin = (f"from depthcraft.tasks.lib import models as M; r = M.REGISTRY[{MODEL!r}]; "
           f"M.REGISTRY[{MODEL!r}] = M.ModelInfo(**{{**r.__dict__, 'sha256': {hashlib.sha256(data).hexdigest()!r}, "
           f"'size_bytes': {len(data)}, 'url': 'https://huggingface.co{UPSTREAM_PATH}'}}); "
           "import sys; from depthcraft.flows.cli import main; sys.exit(main(sys.argv[1:]))")
    env = {**__import__("os").environ, "DEPTHCRAFT_MODELS_DIR": str(models), "DEPTHCRAFT_MODELS_MIRROR": srv.base + "/",
           "NO_PROXY": "127.0.0.1,localhost"}
    env.pop("DEPTHCRAFT_OFFLINE", None)
    try:
        r = subprocess.run([sys.executable, "-c", pin, "--workspace", str(ws), "run", str(recipe), "--out",
                            str(tmp_path / "o"), "--json"], capture_output=True, text=True, env=env, timeout=300)
    finally:
        srv.close()
    assert r.returncode == 0, r.stderr[-2000:]
    assert len([x for x in srv.log if x[2] in (200, 206)]) == 1  # one download
    s = json.loads(r.stdout)
    m = json.loads(Path(s["manifest"]).read_text())
    assert m["provider"]["resolved"]["auto"] == {"provider": f"onnx:{MODEL}", "reason": "downloaded", "model": MODEL}
    assert m["steps"][0]["provider"] == f"onnx:{MODEL}"
    turns = [json.loads(x) for x in (ws / "sessions" / f"{s['session_id']}.jsonl").read_text().splitlines()]
    assert turns[-1]["provider_requested"]["reason"] == "downloaded"
    assert r.stderr.count("auto: downloading") == 1


def test_a_model_this_runtime_loaded_before_is_not_loaded_again_to_plan(cache, monkeypatch, tmp_path):
    """A fully cached re-run with a model in the cache paid one ONNX Runtime session to plan;
    the stamp beside the model now records that this runtime loaded these bytes."""
    from depthcraft.tasks.providers import onnx as onnx_provider

    monkeypatch.setenv("DEPTHCRAFT_OFFLINE", "1")
    cache.mkdir(parents=True)
    data = tiny_model_bytes(tmp_path)
    _pin(monkeypatch, MODEL, data)
    model = cache / f"{MODEL}.onnx"
    model.write_bytes(data)
    monkeypatch.setattr(onnx_provider, "_SESSIONS", {})
    monkeypatch.setattr(auto, "_unloadable", {})
    assert auto.resolve(say=lambda s: None).provider == f"onnx:{MODEL}"
    assert len(onnx_provider._SESSIONS) == 1  # the first time: loaded to be sure it loads
    stamp = json.loads((cache / f"{MODEL}.onnx.verified").read_text())
    assert stamp["loads_with"] == M.runtime_marker() and stamp["sha256"] == hashlib.sha256(data).hexdigest()

    onnx_provider._SESSIONS.clear()  # a new process
    assert auto.resolve(say=lambda s: None).provider == f"onnx:{MODEL}"
    assert onnx_provider._SESSIONS == {}  # not loaded again
    # another runtime (here: other execution providers asked for) tries again
    monkeypatch.setenv("DEPTHCRAFT_ORT_PROVIDERS", "cpu")
    assert auto.resolve(say=lambda s: None).provider == f"onnx:{MODEL}"
    assert len(onnx_provider._SESSIONS) == 1
    # a model replaced by other bytes that ONNX Runtime refuses is still passed over
    monkeypatch.delenv("DEPTHCRAFT_ORT_PROVIDERS")
    onnx_provider._SESSIONS.clear()
    from test_models_junk import _bad_op_graph

    bad = _bad_op_graph(tmp_path)
    _pin(monkeypatch, MODEL, bad)
    model.write_bytes(bad)
    assert auto.resolve(say=lambda s: None).provider == "classic"
