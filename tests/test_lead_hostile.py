"""One clear line, not a traceback, for what a hostile tester found around the recipe runner.

Duplicate YAML keys, a 40-step chain in `validate`, a damaged session log, a workspace that
cannot be used, a Prefect API that cannot be reached, and `server stop` under a running command.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import DEPTHCRAFT


def cli(*args, env: dict | None = None, cwd=None, timeout: float = 300) -> subprocess.CompletedProcess:
    e = dict(os.environ, DEPTHCRAFT_OFFLINE="1")
    e.update(env or {})
    return subprocess.run([*DEPTHCRAFT, *map(str, args)], capture_output=True, text=True, env=e, cwd=cwd,
                          timeout=timeout)


@pytest.fixture
def photo_path(photos) -> Path:
    return photos["chelsea"]


def one_line(r: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error")]
    assert len(lines) == 1, r.stderr
    return lines[0]


RECIPE = """\
version: 1
name: dup
inputs:
  images: [{photo}]
steps:
  - id: depth
    uses: estimate
{extra}"""


@pytest.mark.parametrize("extra,line,key", [
    ("    uses: refine\n", 8, "steps.0.uses"),                        # a second `uses`: refine was run
    ("    with: {format: png16, format: npy}\n", 8, "steps.0.with.format"),  # twice on one line
    ("name: other\n", 8, "name"),                                      # the recipe ran under the last name
])
def test_duplicate_keys_are_refused_with_both_lines(tmp_path, photo_path, extra, line, key):
    r = tmp_path / "dup.yaml"
    r.write_text(RECIPE.format(photo=photo_path, extra=extra))
    res = cli("validate", r, env={"DEPTHCRAFT_HOME": str(tmp_path / "ws")})
    assert res.returncode == 2
    msg = one_line(res)
    assert f"dup.yaml:{line}: {key}: duplicate key" in msg, msg
    assert ("twice on this line" if key.endswith("format") else "first on line") in msg


def test_merge_keys_may_override_what_they_merge(tmp_path, photo_path):
    from depthcraft.flows.yamlsafe import load

    _, data = load("base: &b {radius: 2, eps: 1}\nx:\n  <<: *b\n  radius: 3\n")
    assert data["x"] == {"radius": 3, "eps": 1}


def test_validate_shortens_a_long_chain_to_one_readable_line(tmp_path, photo_path):
    steps = ["  - id: s0\n    uses: estimate\n"] + [f"  - id: s{i}\n    uses: refine\n    from: s{i - 1}\n"
                                                     for i in range(1, 300)]
    r = tmp_path / "chain.yaml"
    r.write_text(f"version: 1\nname: chain\ninputs:\n  images: [{photo_path}]\nsteps:\n" + "".join(steps))
    res = cli("validate", r, env={"DEPTHCRAFT_HOME": str(tmp_path / "ws")})
    assert res.returncode == 0, res.stderr
    out = [ln for ln in (res.stdout + res.stderr).splitlines() if ": ok (" in ln][0]  # (the console: stderr)
    assert "300 step(s): s0 -> s1 -> " in out and "... (291 more) -> s297 -> s298 -> s299)" in out
    assert len(out) < 300


def test_a_damaged_byte_in_a_session_log_costs_that_line_only(tmp_path):
    ws = tmp_path / "ws"
    (ws / "sessions").mkdir(parents=True)
    good = {"role": "user", "text": "hello"}
    (ws / "sessions" / "a.jsonl").write_bytes(json.dumps(good).encode() + b"\n\xff\xfe{broken\n"
                                              + json.dumps(good).encode() + b"\n")
    (ws / "sessions" / "b.jsonl").write_text(json.dumps(good) + "\n")
    res = cli("session", "list", env={"DEPTHCRAFT_HOME": str(ws)})
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    assert "a" in res.stdout and "b" in res.stdout
    from depthcraft.flows.session import SessionLog
    from depthcraft.flows.workspace import Workspace

    assert SessionLog(Workspace.default(str(ws)), "a").turns() == [good, good]


@pytest.mark.parametrize("case", ["a file", "under a file", "read-only"])
def test_a_workspace_that_cannot_be_used_is_one_line(tmp_path, photo_path, case):
    if case == "read-only" and os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    home = {"a file": blocker, "under a file": blocker / "sub", "read-only": ro / "ws"}[case]
    r = tmp_path / "r.yaml"
    r.write_text(RECIPE.format(photo=photo_path, extra=""))
    for cmd in (["validate", r], ["run", r], ["session", "list"]):
        res = cli(*cmd, env={"DEPTHCRAFT_HOME": str(home)})
        assert res.returncode == 2, res.stderr
        msg = one_line(res)
        assert str(home) in msg and "DEPTHCRAFT_HOME" in msg, msg


@pytest.mark.parametrize("url,says", [("http://127.0.0.1:9/api", "cannot reach the Prefect API"),
                                      ("not-a-url", "is not an http(s) URL")])
def test_an_unreachable_prefect_api_url_is_one_line(tmp_path, photo_path, url, says):
    r = tmp_path / "r.yaml"
    r.write_text(RECIPE.format(photo=photo_path, extra=""))
    res = cli("run", r, "--out", tmp_path, env={"DEPTHCRAFT_HOME": str(tmp_path / "ws"), "PREFECT_API_URL": url})
    assert res.returncode == 2
    msg = one_line(res)
    assert "PREFECT_API_URL" in msg and says in msg, msg
    assert not (tmp_path / "out").exists()


def test_server_stop_refuses_while_a_command_uses_the_server(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    # a command holding its lease on the server, as every run does (flows/server.py: hold_lease)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from depthcraft.flows.server import hold_lease; "
        "from depthcraft.flows.workspace import Workspace; "
        f"hold_lease(Workspace.default({str(ws)!r})); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        res = cli("server", "stop", env={"DEPTHCRAFT_HOME": str(ws)})
        assert res.returncode != 0
        msg = one_line(res)
        assert "using the local Prefect server" in msg and "--force" in msg
        res = cli("server", "stop", "--force", env={"DEPTHCRAFT_HOME": str(ws)})
        assert res.returncode == 0 and "no server was running" in res.stderr, res.stderr
    finally:
        holder.kill()
        holder.wait()
    res = cli("server", "stop", env={"DEPTHCRAFT_HOME": str(ws)})  # the lease went with the process
    assert res.returncode == 0, res.stderr


PAIR = """\
version: 1
name: ow
inputs:
  images: [{photo}]
steps:
  - id: depth
    uses: estimate
  - id: pair
    uses: stereo
    from: depth
    with: {{divergence: {div}}}
output: out/{{recipe}}/{{image}}/
"""


@pytest.mark.parametrize("obstacle", ["a file where the image's folder goes", "a folder named like an output"])
def test_an_output_path_that_cannot_be_written_is_one_line_that_does_not_blame_the_store(tmp_path, photo_path,
                                                                                          obstacle):
    env = {"DEPTHCRAFT_HOME": str(tmp_path / "ws")}
    r = tmp_path / "ow.yaml"
    r.write_text(PAIR.format(photo=photo_path, div=2.0))
    assert cli("run", r, "--out", tmp_path / "o", env=env).returncode == 0
    folder = tmp_path / "o" / "out" / "ow" / photo_path.stem
    if obstacle.startswith("a file"):
        shutil.rmtree(folder)
        folder.write_text("in the way")
        blocked = folder
    else:
        (folder / "depth.png").unlink()
        (folder / "depth.png").mkdir()
        blocked = folder / "depth.png"
    r.write_text(PAIR.format(photo=photo_path, div=2.5))
    res = cli("run", r, "--out", tmp_path / "o", env=env)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr, res.stderr
    said = [ln for ln in res.stderr.splitlines() if f"cannot write {blocked}" in ln]
    assert said, res.stderr
    assert "run again" not in res.stderr and "corrupt" not in res.stderr


@pytest.mark.parametrize("status,body,ctype", [(500, b"oops", "text/plain"), (200, b"<html>hi</html>", "text/html"),
                                               (404, b"not found", "text/plain")])
def test_a_web_server_that_is_not_a_prefect_api_is_one_line(tmp_path, photo_path, status, body, ctype):
    import http.server
    import threading

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        r = tmp_path / "r.yaml"
        r.write_text(RECIPE.format(photo=photo_path, extra=""))
        url = f"http://127.0.0.1:{srv.server_address[1]}/api"
        res = cli("run", r, "--out", tmp_path, env={"DEPTHCRAFT_HOME": str(tmp_path / "ws"), "PREFECT_API_URL": url})
    finally:
        srv.shutdown()
    assert res.returncode == 2
    msg = one_line(res)
    assert "PREFECT_API_URL" in msg and "not as a Prefect API" in msg and f"HTTP {status}" in msg, msg
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["{radius: 4, radius: 5}", "{a: 1, a: 2}"])
def test_a_duplicate_key_in_a_set_value_is_one_line_naming_the_set(tmp_path, photo_path, value):
    r = tmp_path / "r.yaml"
    r.write_text(RECIPE.format(photo=photo_path, extra=""))
    res = cli("validate", r, "--set", f"steps.depth.with={value}", env={"DEPTHCRAFT_HOME": str(tmp_path / "ws")})
    assert res.returncode == 2
    msg = one_line(res)
    assert "--set" in msg and "duplicate key" in msg, msg
