"""A hostile user against what the one-shot commands and ``depthcraft models verify`` are given
besides the download rule: ``DEPTHCRAFT_THREADS`` (the view synthesis's and the depth map's worker
threads), a model cache (``DEPTHCRAFT_MODELS_DIR``) that is not a folder, and a folder given as the
photo. Real subprocesses and real files."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import run_cli, save_photo
from depthcraft.tasks.lib.errors import ParameterError
from depthcraft.tasks.lib.viewsynth import common


@pytest.mark.parametrize("raw", ["abc", "-1", "1.5", "1e9"])
def test_threads_that_are_not_a_whole_number_are_said(monkeypatch, raw):
    """Before: 'abc', '1.5' and '1e9' silently became every core, '-1' one thread."""
    monkeypatch.setenv("DEPTHCRAFT_THREADS", raw)
    with pytest.raises(ParameterError, match="DEPTHCRAFT_THREADS") as e:
        common.threads()
    assert repr(raw) in str(e.value)


@pytest.mark.parametrize("raw,want", [("", None), (" ", None), ("0", None), ("1", 1), (" 3 ", 3), ("64", 64)])
def test_threads_that_are_whole_numbers_are_taken(monkeypatch, raw, want):
    import os

    monkeypatch.setenv("DEPTHCRAFT_THREADS", raw)
    assert common.threads() == (want or os.cpu_count() or 1)


def test_stereo_with_threads_abc_is_one_line_naming_the_variable(tmp_path):
    rng = np.random.default_rng(0)
    photo = save_photo(tmp_path / "p.png", rng.integers(0, 256, (64, 96, 3), dtype=np.uint8))
    np.save(tmp_path / "d.npy", rng.random((64, 96)).astype(np.float32))
    r = run_cli("stereo", photo, "--depth", tmp_path / "d.npy", "-o", tmp_path / "out.png", timeout=120,
                env={"DEPTHCRAFT_THREADS": "abc"})
    out = r.stdout + r.stderr
    errors = [x for x in out.splitlines() if x.startswith("error:")]
    assert r.returncode == 2 and "Traceback" not in out, out
    assert len(errors) == 1 and "DEPTHCRAFT_THREADS" in errors[0] and "'abc'" in errors[0], out
    assert not any(tmp_path.glob("out*"))


@pytest.mark.parametrize("name", [[], ["depth-anything-v2-small"]])
def test_models_verify_on_a_cache_that_is_a_file_is_one_line(tmp_path, name):
    """Before: exit 0 and "no models in the cache" (``models list`` already said it is not a folder)."""
    f = tmp_path / "models"
    f.write_text("not a folder")
    r = run_cli("models", "verify", *name, timeout=60, env={"DEPTHCRAFT_MODELS_DIR": str(f)})
    out = r.stdout + r.stderr
    errors = [x for x in out.splitlines() if x.startswith("error:")]
    assert r.returncode == 1 and "Traceback" not in out, out
    assert len(errors) == 1 and str(f) in errors[0] and "not a folder" in errors[0], out


@pytest.mark.parametrize("name", ["photos", "photo.png", "still.gif"])
def test_a_one_shot_on_a_folder_is_one_line(tmp_path, name):
    """Before: a traceback (IsADirectoryError from hashing the "photo")."""
    (tmp_path / name).mkdir()
    r = run_cli("stereo", tmp_path / name, "-o", tmp_path / "out.png", timeout=120, env={"DEPTHCRAFT_OFFLINE": "1"})
    out = r.stdout + r.stderr
    errors = [x for x in out.splitlines() if x.startswith("error:")]
    assert r.returncode == 2 and "Traceback" not in out, out
    assert len(errors) == 1 and str(tmp_path / name) in errors[0] and "folder" in errors[0], out


def test_an_empty_unpinned_model_is_never_used_and_said_empty(tmp_path, monkeypatch):
    """An unpinned model has no hash to check, but an empty file is never a model. Before: auto
    chose a 0-byte depth-anything-v2-base.onnx as "the best cached model" and the run failed on
    ONNX Runtime's "No graph was found"; `models verify` said "unpinned" with exit 0 and `models
    list` "cached, unpinned"."""
    from depthcraft.tasks.lib import models as M
    from depthcraft.tasks.providers import auto

    name = "depth-anything-v2-base"
    assert not M.REGISTRY[name].pinned
    cache = tmp_path / "models"
    cache.mkdir()
    (cache / M.REGISTRY[name].filename).write_bytes(b"")
    monkeypatch.setenv("DEPTHCRAFT_MODELS_DIR", str(cache))
    monkeypatch.setenv("DEPTHCRAFT_OFFLINE", "1")
    auto.forget()
    said: list[str] = []
    try:
        r = auto.resolve(say=said.append)
    finally:
        auto.forget()
    assert r.provider == "classic", r
    assert any("is empty" in s and name in s for s in said), said
    env = {"DEPTHCRAFT_MODELS_DIR": str(cache)}
    v = run_cli("models", "verify", timeout=60, env=env)
    assert v.returncode == 1 and "empty" in v.stdout and "Traceback" not in v.stdout + v.stderr, v.stdout + v.stderr
    listed = run_cli("models", "list", timeout=60, env=env)
    assert listed.returncode == 0 and "corrupt (empty file)" in listed.stdout, listed.stdout + listed.stderr
    photo = save_photo(tmp_path / "p.png", np.full((64, 96, 3), 128, np.uint8))
    e = run_cli("estimate", photo, "-o", tmp_path / "d.png", "--provider", f"onnx:{name}",
                timeout=120, env={**env, "DEPTHCRAFT_OFFLINE": "1"})
    out = e.stdout + e.stderr
    assert e.returncode != 0 and "Traceback" not in out and "is empty, so it is not used" in out, out


@pytest.mark.parametrize("kind", ["metric", "depth", "relative", None])
def test_stereo_scale_without_a_disparity_map_is_one_line(tmp_path, kind):
    """``scale`` (exact mode) needs a disparity map. Before: with depth, metric or relative
    values (or estimated depth) it was silently ignored and the relative mode rendered instead."""
    rng = np.random.default_rng(1)
    photo = save_photo(tmp_path / "p.png", rng.integers(0, 256, (64, 96, 3), dtype=np.uint8))
    np.save(tmp_path / "d.npy", rng.random((64, 96)).astype(np.float32) + 1)
    given = [] if kind is None else ["--depth", tmp_path / "d.npy", "--depth-kind", kind]
    r = run_cli("stereo", photo, *given, "--scale", "5", "-o", tmp_path / "out.png", timeout=120,
                env={"DEPTHCRAFT_OFFLINE": "1"})
    out = r.stdout + r.stderr
    errors = [x for x in out.splitlines() if x.startswith("error:")]
    assert r.returncode == 2 and "Traceback" not in out, out
    assert len(errors) == 1 and "scale" in errors[0] and "disparity" in errors[0], out
    assert not any(tmp_path.glob("out*"))
    ok = run_cli("stereo", photo, "--depth", tmp_path / "d.npy", "--depth-kind", "disparity", "--scale", "5",
                 "-o", tmp_path / "out.png", timeout=120, env={"DEPTHCRAFT_OFFLINE": "1"})
    assert ok.returncode == 0 and (tmp_path / "out.png").is_file(), ok.stdout + ok.stderr


@pytest.mark.parametrize("where", ["too-long", "proc"])
def test_an_output_that_cannot_be_written_is_one_line(tmp_path, where):
    """Before: a traceback (OSError "File name too long" from the folder check; FileNotFoundError
    from the temporary file of the atomic write in a folder that takes no new files)."""
    import os

    if where == "proc" and not os.path.isdir("/proc/self"):
        pytest.skip("no /proc here")
    rng = np.random.default_rng(2)
    photo = save_photo(tmp_path / "p.png", rng.integers(0, 256, (64, 96, 3), dtype=np.uint8))
    np.save(tmp_path / "d.npy", rng.random((64, 96)).astype(np.float32))
    out = tmp_path / ("a" * 300 + ".png") if where == "too-long" else "/proc/depthcraft-x.png"
    r = run_cli("stereo", photo, "--depth", tmp_path / "d.npy", "-o", out, timeout=120, env={"DEPTHCRAFT_OFFLINE": "1"})
    text = r.stdout + r.stderr
    errors = [x for x in text.splitlines() if x.startswith("error:")]
    assert r.returncode == 2 and "Traceback" not in text, text
    assert len(errors) == 1 and "'-o'" in errors[0], text


@pytest.mark.parametrize("where", ["too-long", "proc", "proc-folder"])
def test_a_clip_output_that_cannot_be_written_is_one_line_before_any_work(tmp_path, where):
    """Before: a traceback, for /proc only after every frame was rendered (at the video's write)."""
    import os

    from conftest import REPO

    if where.startswith("proc") and not os.path.isdir("/proc/self"):
        pytest.skip("no /proc here")
    clip = REPO / "recipes" / "clips" / "sample.mp4"
    out = {"too-long": str(tmp_path / ("a" * 300 + ".mp4")), "proc": "/proc/depthcraft-x.mp4",
           "proc-folder": "/proc/depthcraft-x/"}[where]
    r = run_cli("stereo", clip, "-o", out, timeout=120, env={"DEPTHCRAFT_OFFLINE": "1"})
    text = r.stdout + r.stderr
    errors = [x for x in text.splitlines() if x.startswith("error:")]
    assert r.returncode == 2 and "Traceback" not in text, text
    assert len(errors) == 1 and "'-o'" in errors[0], text
    assert "frames" not in text  # refused before any frame


@pytest.mark.parametrize("where", ["file", "too-long", "proc"])
def test_a_run_output_root_that_cannot_be_written_is_one_line_before_any_work(tmp_path, where):
    """``depthcraft run --out``. Before: a traceback from inside the flow (NotADirectoryError,
    "File name too long", FileNotFoundError from mkdir in /proc)."""
    import os

    if where == "proc" and not os.path.isdir("/proc/self"):
        pytest.skip("no /proc here")
    save_photo(tmp_path / "a.png", np.full((64, 96, 3), 100, np.uint8))
    (tmp_path / "r.yaml").write_text("version: 1\nname: w\nprovider: classic\ninputs:\n  images: [a.png]\n"
                                     "steps:\n  - {id: depth, uses: estimate}\n")
    out = {"file": str(tmp_path / "a.png"), "too-long": str(tmp_path / ("a" * 300)), "proc": "/proc/depthcraft-x"}[where]
    r = run_cli("run", tmp_path / "r.yaml", "--out", out, timeout=120, cwd=tmp_path)
    text = r.stdout + r.stderr
    errors = [x for x in text.splitlines() if x.startswith("error:")]
    assert r.returncode == 2 and "Traceback" not in text, text
    assert len(errors) == 1 and "'--out'" in errors[0], text


def test_reproduce_into_an_output_root_that_is_a_file_is_one_line(prefect_server, workspace, tmp_path):
    """``depthcraft reproduce MANIFEST --out FILE``. Before: NotADirectoryError from inside the flow."""
    import json

    save_photo(tmp_path / "a.png", np.full((64, 96, 3), 100, np.uint8))
    (tmp_path / "r.yaml").write_text("version: 1\nname: w\nprovider: classic\ninputs:\n  images: [a.png]\n"
                                     "steps:\n  - {id: depth, uses: estimate}\n")
    first = run_cli("run", tmp_path / "r.yaml", "--out", tmp_path / "o", "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    man = json.loads(first.stdout)["manifest"]
    r = run_cli("reproduce", man, "--out", tmp_path / "a.png", timeout=120)
    text = r.stdout + r.stderr
    errors = [x for x in text.splitlines() if x.startswith("error:")]
    assert r.returncode == 2 and "Traceback" not in text, text
    assert len(errors) == 1 and "'--out'" in errors[0] and "not a folder" in errors[0], text


@pytest.mark.parametrize("value", ["divergence=[1", "layout={", 'divergence="'])
def test_a_one_shot_set_value_that_is_not_yaml_is_one_line(tmp_path, value):
    """Before: a yaml.scanner / yaml.parser traceback."""
    rng = np.random.default_rng(3)
    photo = save_photo(tmp_path / "p.png", rng.integers(0, 256, (64, 96, 3), dtype=np.uint8))
    np.save(tmp_path / "d.npy", rng.random((64, 96)).astype(np.float32))
    r = run_cli("stereo", photo, "--depth", tmp_path / "d.npy", "-o", tmp_path / "out.png", "--set", value,
                timeout=120, env={"DEPTHCRAFT_OFFLINE": "1"})
    text = r.stdout + r.stderr
    errors = [x for x in text.splitlines() if x.startswith("error:")]
    assert r.returncode == 2 and "Traceback" not in text, text
    assert len(errors) == 1 and "--set" in errors[0] and value in errors[0], text


@pytest.mark.parametrize("how", [("--max-pixels", "0"), ("--max-pixels", "-5"), ("env", "abc"), ("env", "-1"), ("env", "1e9")])
def test_a_pixel_limit_that_is_not_a_whole_number_of_pixels_is_one_line(tmp_path, how):
    """Before: --max-pixels 0 was the default limit, -5 "over the limit of -0 MP";
    DEPTHCRAFT_MAX_PIXELS=abc or 1e9 silently the default 50 MP."""
    rng = np.random.default_rng(4)
    photo = save_photo(tmp_path / "p.png", rng.integers(0, 256, (64, 96, 3), dtype=np.uint8))
    np.save(tmp_path / "d.npy", rng.random((64, 96)).astype(np.float32))
    flag, value = how
    extra, env = ([flag, value], {}) if flag != "env" else ([], {"DEPTHCRAFT_MAX_PIXELS": value})
    r = run_cli("stereo", photo, "--depth", tmp_path / "d.npy", "-o", tmp_path / "out.png", *extra, timeout=120,
                env={"DEPTHCRAFT_OFFLINE": "1", **env})
    text = r.stdout + r.stderr
    errors = [x for x in text.splitlines() if x.startswith("error:")]
    name = "DEPTHCRAFT_MAX_PIXELS" if flag == "env" else "--max-pixels"
    assert r.returncode == 2 and "Traceback" not in text, text
    assert len(errors) == 1 and name in errors[0] and value in errors[0] and "pixels >= 1" in errors[0], text


@pytest.mark.parametrize("value", ["0", "-5"])
def test_a_pixel_limit_below_one_is_one_line_for_clips_and_focus_stacks_too(tmp_path, value):
    """The one-shot check reached photos only: a clip (an animated GIF here) and focus-stack took
    --max-pixels 0 as the default limit and rendered."""
    from PIL import Image

    rng = np.random.default_rng(5)
    frames = [Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)) for _ in range(3)]
    clip = tmp_path / "c.gif"
    frames[0].save(clip, save_all=True, append_images=frames[1:], duration=100, loop=0)
    photo = save_photo(tmp_path / "p.png", rng.integers(0, 256, (64, 96, 3), dtype=np.uint8))
    for args in (("stereo", clip, "-o", tmp_path / "s.mp4"), ("focus-stack", photo, photo, "-o", tmp_path / "f.png")):
        r = run_cli(*args, "--max-pixels", value, timeout=180, env={"DEPTHCRAFT_OFFLINE": "1"})
        text = r.stdout + r.stderr
        errors = [x for x in text.splitlines() if x.startswith("error:")]
        assert r.returncode == 2 and "Traceback" not in text, (args[0], text)
        assert len(errors) == 1 and "--max-pixels" in errors[0] and value in errors[0], (args[0], text)
        assert not any(p.exists() for p in (tmp_path / "s.mp4", tmp_path / "f.png"))
