"""Junk under an UNPINNED model's name in the model cache (nothing to hash it against): random
bytes, a truncated model, an HTML error page, a graph ONNX Runtime cannot load. ``auto`` passes
it over in one line naming the file and the command that fixes it and falls back (to the next
cached model, else classic); ``onnx:NAME`` and ``onnx:/path`` fail in one line naming the file
(never ONNX Runtime's protobuf message); ``models list``/``verify`` call it corrupt/unloadable;
``models pull --trust-unpinned`` replaces it and never records an error page as the model.
Real files, real CLI processes, a real loopback server."""

from __future__ import annotations

import hashlib
import json

import pytest

pytest.importorskip("onnx")

from conftest import run_cli  # noqa: E402
from test_models import FileServer, env, tiny_model_bytes  # noqa: E402,F401 - fixture

from depthcraft.flows import cli_models  # noqa: E402
from depthcraft.tasks.lib import models as M  # noqa: E402

UNPINNED = "depth-anything-v2-base"  # unpinned in the registry: only its bytes can tell
NEXT = "depth-anything-v2-metric-outdoor-small"  # unpinned too, and after it in auto's preference
HTML = b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>Not Found</body></html>\n"


def _bad_op_graph(tmp_path) -> bytes:
    """A well-formed ModelProto that ONNX Runtime cannot load (an operator that does not exist)."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, [1, 3, "H", "W"])
    y = helper.make_tensor_value_info("predicted_depth", TensorProto.FLOAT, [1, "H", "W"])
    g = helper.make_graph([helper.make_node("NoSuchDepthOp", ["pixel_values"], ["predicted_depth"])], "bad", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    p = tmp_path / "bad-op.onnx"
    onnx.save(m, str(p))
    return p.read_bytes()


def _junk(kind: str, tmp_path) -> bytes:
    import numpy as np

    if kind == "random":
        return np.random.default_rng(7).bytes(2048)
    if kind == "truncated":
        good = tiny_model_bytes(tmp_path)
        return good[: len(good) * 2 // 3]
    if kind == "html":
        return HTML
    return _bad_op_graph(tmp_path)


KINDS = ["random", "truncated", "html", "bad-op"]


@pytest.mark.parametrize("kind", KINDS)
def test_auto_passes_junk_over_in_one_line_and_falls_back_to_classic(tmp_path, photos, kind):
    models = tmp_path / "models"
    models.mkdir()
    bad = models / f"{UNPINNED}.onnx"
    bad.write_bytes(_junk(kind, tmp_path))
    out = tmp_path / "d.npy"
    r = run_cli("estimate", photos["coffee"], "-o", out,
                env={"DEPTHCRAFT_OFFLINE": "1", "DEPTHCRAFT_MODELS_DIR": str(models)})
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "ONNXRuntimeError" not in r.stderr and "Protobuf" not in r.stderr
    lines = [x for x in r.stderr.splitlines() if x.startswith("auto:")]
    assert len(lines) == 2, r.stderr
    assert str(bad) in lines[0] and "not used" in lines[0]
    assert f"depthcraft models pull {UNPINNED} --trust-unpinned" in lines[0]
    assert json.loads((tmp_path / "d.npy.json").read_text())["source"].startswith("classic")
    assert bad.exists()  # the user's file is theirs to delete


def test_auto_falls_back_to_the_next_cached_model(tmp_path, photos):
    models = tmp_path / "models"
    models.mkdir()
    good = tiny_model_bytes(tmp_path)
    (models / f"{UNPINNED}.onnx").write_bytes(_junk("random", tmp_path))
    (models / f"{NEXT}.onnx").write_bytes(good)  # pulled with --trust-unpinned: its hash is on record
    (models / "trusted.json").write_text(json.dumps(
        {NEXT: {"sha256": hashlib.sha256(good).hexdigest(), "url": "test", "recorded": "2026-11-30T00:00:00"}}))
    out = tmp_path / "d.npy"
    r = run_cli("estimate", photos["coffee"], "-o", out,
                env={"DEPTHCRAFT_OFFLINE": "1", "DEPTHCRAFT_MODELS_DIR": str(models)})
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.startswith("auto:")]
    assert len(lines) == 1 and f"{UNPINNED}.onnx" in lines[0], r.stderr
    assert json.loads((tmp_path / "d.npy.json").read_text())["source"] == f"onnx:{NEXT}"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("how", ["name", "path"])
def test_explicit_onnx_with_junk_is_one_line_naming_the_file(tmp_path, photos, kind, how):
    models = tmp_path / "models"
    models.mkdir()
    bad = (models / f"{UNPINNED}.onnx") if how == "name" else (tmp_path / "mine.onnx")
    bad.write_bytes(_junk(kind, tmp_path))
    spec = f"onnx:{UNPINNED}" if how == "name" else f"onnx:{bad}"
    r = run_cli("estimate", photos["coffee"], "-o", tmp_path / "d.png", "--provider", spec,
                env={"DEPTHCRAFT_OFFLINE": "1", "DEPTHCRAFT_MODELS_DIR": str(models)})
    assert r.returncode != 0
    err = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(err) == 1, r.stderr
    assert str(bad) in err[0] and "Traceback" not in r.stderr
    assert "ONNXRuntimeError" not in err[0] and "Protobuf" not in err[0] and "Load model from" not in err[0]
    if how == "name":
        assert f"depthcraft models pull {UNPINNED} --trust-unpinned" in err[0]
    assert not (tmp_path / "d.png").exists()


@pytest.mark.parametrize("kind", ["random", "truncated", "html"])
def test_list_and_verify_call_junk_unloadable(tmp_path, monkeypatch, capsys, kind):
    models = tmp_path / "models"
    models.mkdir()
    bad = models / f"{UNPINNED}.onnx"
    bad.write_bytes(_junk(kind, tmp_path))
    monkeypatch.setenv("DEPTHCRAFT_MODELS_DIR", str(models))
    assert cli_models.main(["list"]) == 0
    out = capsys.readouterr().out
    row = next(x for x in out.splitlines() if f" {UNPINNED} " in x)
    assert "corrupt" in row and "unpinned" not in row
    assert any(x.startswith(f"{UNPINNED}: corrupt") and f"--trust-unpinned" in x for x in out.splitlines())
    assert cli_models.main(["verify"]) == 1
    out = capsys.readouterr().out
    assert "unloadable" in out and UNPINNED in out and "MISMATCH" not in out


def test_the_check_is_cheap_and_knows_what_it_saw(tmp_path):
    from depthcraft.tasks.lib import onnxfile

    good = tiny_model_bytes(tmp_path)
    cases = {"good": good, "html": HTML, "json": b'{"error": "rate limited"}', "empty": b"",
             "truncated": good[:-10], "random": _junk("random", tmp_path)}
    said = {}
    for name, data in cases.items():
        p = tmp_path / f"{name}.onnx"
        p.write_bytes(data)
        said[name] = onnxfile.problem(p)
    assert said["good"] is None
    assert "HTML" in said["html"] and "JSON" in said["json"] and said["empty"] == "is empty"
    assert said["truncated"].startswith("is truncated") and said["random"].startswith("is not an ONNX model")


def test_pull_trust_unpinned_replaces_junk_and_never_records_an_error_page(env, monkeypatch, tmp_path):
    srv, info, data = env
    unpinned = M.ModelInfo(**{**info.__dict__, "sha256": None, "size_bytes": None})
    monkeypatch.setitem(M.REGISTRY, "tiny-test", unpinned)
    dest = M.cached_path(unpinned)
    dest.parent.mkdir(parents=True)
    dest.write_bytes(HTML)  # saved by hand from a browser
    assert not M.cached_ok(unpinned)  # before: "already in the cache" and the page stayed the model
    assert M.pull("tiny-test", progress=False, trust_unpinned=True) == dest
    assert dest.read_bytes() == data
    # a mirror answering an error page with 200: refused, nothing kept, nothing recorded
    page = FileServer({"/releases/v1/tiny.onnx": HTML})
    try:
        monkeypatch.setenv("DEPTHCRAFT_MODELS_MIRROR", page.base + "/")
        with pytest.raises(M.ModelError, match="did not send tiny-test.*HTML") as e:
            M.pull("tiny-test", progress=False, trust_unpinned=True, force=True)
        assert "\n" not in str(e.value)
    finally:
        page.close()
    assert dest.read_bytes() == data and not list(dest.parent.glob("*.part"))
    assert M.trusted_hashes()["tiny-test"]["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_pinned_model_onnx_runtime_refuses_is_passed_over_and_the_runtime_named(tmp_path, monkeypatch):
    """The bytes are the pinned ones, so pulling again changes nothing: the line says to upgrade
    ONNX Runtime instead (in-process: the registry is re-pinned to a graph it cannot load)."""
    from test_auto import _pin

    from depthcraft.tasks.providers import auto

    bad = _bad_op_graph(tmp_path)
    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.setenv("DEPTHCRAFT_MODELS_DIR", str(models))
    monkeypatch.setenv("DEPTHCRAFT_OFFLINE", "1")
    _pin(monkeypatch, "midas-v2.1-small", bad)
    (models / "midas-v2.1-small.onnx").write_bytes(bad)
    auto.forget()
    said = []
    assert auto.resolve(say=said.append).provider == "classic"
    assert "midas-v2.1-small.onnx" in said[0] and "cannot load" in said[0] and "upgrade onnxruntime" in said[0]
    assert auto.resolve(download=False, say=lambda s: None).provider == "onnx:midas-v2.1-small"  # plan: no session
    auto.forget()


def test_verify_loads_what_the_cheap_check_lets_through(tmp_path, monkeypatch, capsys):
    """A well-formed graph ONNX Runtime refuses passes `list`'s cheap check (cached, unpinned);
    `verify`, which reads the whole file anyway, loads it and calls it unloadable."""
    models = tmp_path / "models"
    models.mkdir()
    (models / f"{UNPINNED}.onnx").write_bytes(_bad_op_graph(tmp_path))
    monkeypatch.setenv("DEPTHCRAFT_MODELS_DIR", str(models))
    assert cli_models.main(["verify"]) == 1
    out = capsys.readouterr().out
    assert "unloadable" in out and "cannot load" in out and "NoSuchDepthOp" in out
    (models / f"{UNPINNED}.onnx").write_bytes(tiny_model_bytes(tmp_path))
    assert cli_models.main(["verify"]) == 0
    assert "unpinned" in capsys.readouterr().out
