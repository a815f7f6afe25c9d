"""The model cache as `depthcraft models list` shows it, and what a pull leaves in it: a file is
called verified only when its bytes were hashed and matched (a stamp beside it, tied to its size,
times and inode), a wrong size is called corrupt without hashing, lock files do not outlive the
pull, and a missing or unreadable cache is one line. Real files, a real loopback server, real
processes for the cross-process lock."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("onnx")

from conftest import run_cli  # noqa: E402
from test_auto import MODEL, _pin, cache, registry  # noqa: E402,F401 - fixtures
from test_models import env  # noqa: E402,F401 - fixture
from test_models_stall import Trickle  # noqa: E402

from depthcraft.flows import cli_models  # noqa: E402
from depthcraft.tasks.lib import models as M  # noqa: E402
from depthcraft.tasks.providers import auto  # noqa: E402


def _row(capsys, name: str) -> str:
    """`models list`: the table row of ``name``, and the advice line under the table, if any."""
    assert cli_models.main(["list"]) == 0
    out = capsys.readouterr().out
    rows = [x for x in out.splitlines() if f" {name} " in x]
    assert len(rows) == 1, out
    return rows[0] + " | " + " ".join(x for x in out.splitlines() if x.startswith(f"{name}: "))


# -- what `list` says about a cached file ----------------------------------------------------------
def test_list_says_verified_only_for_bytes_that_were_hashed(env, capsys):
    srv, info, data = env
    path = M.pull(info, progress=False)
    assert "cached (verified)" in _row(capsys, "tiny-test")  # the pull hashed it
    path.write_bytes(data[: len(data) // 2])  # truncated: the size says it, no hashing needed
    assert f"corrupt (size {len(data) // 2}, expected {len(data)})" in _row(capsys, "tiny-test")
    path.write_bytes(data[:-10] + b"0123456789")  # replaced, same size: not known until hashed
    row = _row(capsys, "tiny-test")
    assert "cached, not verified" in row and "run `depthcraft models verify tiny-test`" in row
    assert "(verified)" not in row
    assert cli_models.main(["verify", "tiny-test"]) == 1
    capsys.readouterr()
    assert "corrupt (sha256 mismatch)" in _row(capsys, "tiny-test")  # what verify found is remembered
    path.write_bytes(data)  # put right by hand
    assert "cached, not verified" in _row(capsys, "tiny-test")
    assert cli_models.main(["verify"]) == 0
    capsys.readouterr()
    assert "cached (verified)" in _row(capsys, "tiny-test")


def test_a_stamp_does_not_survive_an_edit_that_restores_the_mtime(env, capsys):
    srv, info, data = env
    path = M.pull(info, progress=False)
    st = path.stat()
    with open(path, "r+b") as f:  # flipped bytes in place, then the old mtime put back
        f.seek(100)
        f.write(b"\xff" * 8)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    assert "cached, not verified" in _row(capsys, "tiny-test")  # the change time moved
    assert not M.cached_ok(info)


def test_auto_never_uses_a_corrupt_file_even_under_a_forged_stamp(registry, cache, tmp_path, monkeypatch):
    """`list` reads the stamp; `auto` hashes the file itself every time, so a stamp written by hand
    (or a bit rotting on disk after the stamp) never makes it run other bytes."""
    srv, info, data = registry
    monkeypatch.setenv("DEPTHCRAFT_OFFLINE", "1")
    cache.mkdir(parents=True)
    bad = cache / f"{MODEL}.onnx"
    bad.write_bytes(b"\0" * len(data))
    st = bad.stat()
    (cache / f"{MODEL}.onnx.verified").write_text(json.dumps(
        {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "ino": st.st_ino,
         "sha256": info.sha256}))
    assert M.cache_state(info).state == "verified"  # list is fooled by a forgery ...
    said = []
    r = auto.resolve(say=said.append)
    assert r.provider == "classic" and "does not match the sha256" in said[0]  # ... auto is not


def test_a_partial_download_is_shown_as_such(env, capsys):
    srv, info, data = env
    srv.cut_after = 5000
    with pytest.raises(M.ModelError):
        M.pull(info, progress=False)
    row = _row(capsys, "tiny-test")
    # 5000 bytes said "partial (0.0 MB)" (nothing, in words) before
    assert "partial (5.0 KB)" in row and "`depthcraft models pull tiny-test` resumes it" in row and "cached" not in row


# -- lock files ---------------------------------------------------------------------------------------
def test_a_pull_leaves_no_lock_file(env):
    srv, info, data = env
    M.pull(info, progress=False)
    srv.files.clear()  # and a failed one neither
    with pytest.raises(M.ModelError):
        M.pull(info, progress=False, force=True)
    left = sorted(p.name for p in M.models_dir().iterdir())
    assert left == ["tiny-test.onnx", "tiny-test.onnx.verified"], left


def test_the_lock_excludes_while_its_file_comes_and_goes():
    """Each holder removes the lock file; a waiter that got the lock on a removed file must lock
    afresh. Eight contenders, each holder counting who else is inside: never two."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        dest = M.Path(d) / "m.onnx"
        inside, worst, errors = [0], [0], []
        guard = threading.Lock()

        def contend():
            try:
                for _ in range(40):
                    with M._lock(dest):
                        with guard:
                            inside[0] += 1
                            worst[0] = max(worst[0], inside[0])
                        time.sleep(0.0005)
                        with guard:
                            inside[0] -= 1
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=contend) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors and worst[0] == 1
        assert os.listdir(d) == []


_PULL = """
import sys
from depthcraft.tasks.lib import models as M
M.with_registry_entry(M.ModelInfo(name="tiny-test", title="tiny", url="https://models.example.invalid/tiny.onnx",
    sha256=sys.argv[1], size_bytes=int(sys.argv[2]), licence="MIT", commercial_use=True, description="t"))
M.pull("tiny-test", progress=False)
"""


def test_processes_pulling_at_once_download_once_and_leave_no_lock(env, tmp_path):
    """Four real processes pull one model from a registry that takes ~1.5 s to send it: one
    download, four good files, no lock file left."""
    srv, info, data = env
    slow = Trickle(data, "steady", step=len(data) // 15 + 1, interval=0.1)
    e = {**os.environ, "DEPTHCRAFT_MODELS_MIRROR": slow.base + "/"}
    try:
        procs = [subprocess.Popen([sys.executable, "-c", _PULL, info.sha256, str(len(data))], env=e,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        slow.close()
    assert all(p.returncode == 0 for p in procs), outs
    assert len(slow.ranges) == 1  # one GET in all
    assert M.cached_path(info).read_bytes() == data
    assert sorted(p.name for p in M.models_dir().iterdir()) == ["tiny-test.onnx", "tiny-test.onnx.verified"]


def test_list_and_verify_show_only_models(env, capsys):
    srv, info, data = env
    d = M.models_dir()
    d.mkdir(parents=True)
    for junk in ("tiny-test.onnx.lock", "stray.onnx.lock", "other.onnx.part", "x.onnx.verified"):
        (d / junk).write_bytes(b"")
    assert cli_models.main(["list"]) == 0
    out = capsys.readouterr().out
    assert ".lock" not in out and ".part" not in out and "stray" not in out and "other" not in out
    assert cli_models.main(["verify"]) == 0
    assert "no models in the cache" in capsys.readouterr().out


# -- a cache folder that is missing, empty or unreadable ------------------------------------------------
@pytest.mark.parametrize("state", ["missing", "empty"])
def test_list_on_a_missing_or_empty_cache(tmp_path, state):
    d = tmp_path / "models"
    if state == "empty":
        d.mkdir()
    r = run_cli("models", "list", env={"DEPTHCRAFT_MODELS_DIR": str(d)})
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "depth-anything-v2-small" in r.stdout and "cached (" not in r.stdout
    assert not d.exists() if state == "missing" else d.exists()  # listing creates nothing


@pytest.mark.parametrize("kind", ["a file", "name too long", "no permission"])
def test_list_on_an_unusable_cache_is_one_line(tmp_path, kind):
    if kind == "a file":
        d = tmp_path / "models"
        d.write_text("x")
    elif kind == "name too long":
        d = tmp_path / ("m" * 300)  # stat fails with ENAMETOOLONG: what pathlib does not swallow
    else:
        if os.geteuid() == 0:
            pytest.skip("root reads every folder (the name-too-long case stands in for it)")
        d = tmp_path / "locked" / "models"
        d.mkdir(parents=True)
        d.parent.chmod(0o000)
    r = subprocess.run([sys.executable, "-m", "depthcraft.flows.cli_models", "list"], capture_output=True,
                       text=True, env={**os.environ, "DEPTHCRAFT_MODELS_DIR": str(d)}, timeout=120)
    if kind == "no permission":
        d.parent.chmod(0o755)
    out = (r.stdout + r.stderr).strip()
    assert r.returncode == 1 and "Traceback" not in out, out
    assert len(out.splitlines()) == 1 and "model cache" in out and "DEPTHCRAFT_MODELS_DIR" in out, out


def test_auto_with_an_unreadable_cache_falls_back_in_one_line(registry, cache, tmp_path, monkeypatch):
    srv, info, data = registry
    monkeypatch.setenv("DEPTHCRAFT_MODELS_DIR", str(tmp_path / ("m" * 300)))
    said = []
    r = auto.resolve(say=said.append)
    assert (r.provider, r.reason) == ("classic", "download-failed") and len(said) == 1, said  # no announcement
    assert "model cache" in said[-1] and f"depthcraft models pull {MODEL}" in said[-1]


def test_hash_is_checked_against_the_pin_not_the_stamp(env):
    """cached_ok hashes; the stamp it leaves records that hash."""
    srv, info, data = env
    path = M.pull(info, progress=False)
    stamp = json.loads(path.with_name(path.name + ".verified").read_text())
    assert stamp["sha256"] == hashlib.sha256(data).hexdigest() and stamp["size"] == len(data)


def test_a_pull_killed_mid_download_is_resumed_and_its_lock_file_cleared(env, monkeypatch):
    """kill -9 cannot remove the lock file: the next pull locks that file (the kernel released the
    lock with the process), resumes the part, and removes it."""
    import signal

    srv, info, data = env
    crawl = Trickle(data, "body", fast=len(data) // 3)
    monkeypatch.setenv("DEPTHCRAFT_MODELS_MIRROR", crawl.base + "/")
    e = dict(os.environ)
    part = M.cached_path(info).with_name(info.filename + ".part")
    lock = M.cached_path(info).with_name(info.filename + ".lock")
    try:
        p = subprocess.Popen([sys.executable, "-c", _PULL, info.sha256, str(len(data))], env=e,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.monotonic()
        while not (part.exists() and part.stat().st_size >= len(data) // 3) and time.monotonic() - t0 < 60:
            time.sleep(0.05)
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        assert lock.exists() and part.stat().st_size >= len(data) // 3
        kept = part.stat().st_size
        crawl.mode = None
        assert M.pull(info, progress=False).read_bytes() == data
        assert crawl.ranges[-1] == f"bytes={kept}-"
    finally:
        crawl.close()
    assert not lock.exists() and not part.exists()
    assert M.cache_state(info).state == "verified"
