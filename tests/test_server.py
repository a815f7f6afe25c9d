"""The local Prefect server under hostile conditions, with real processes.

Two runs at once on a fresh workspace, ``kill -9`` of a run while it starts the server, a pid in
``server.json`` that belongs to an unrelated process, the server killed during a run, a damaged
database, and the idle stop. A server start costs 10 s or more, so the tests that need a live
server share one workspace (``shared_ws``) and run in the order written: the idle stop of the
first leaves the second to restart the server transparently, the kill of the second leaves the
third to start a new one. Each test still holds on its own if run alone.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import DEPTHCRAFT

RECIPE = """\
version: 1
name: {name}
inputs:
  images: {images}
steps:
  - id: depth
    uses: estimate
  - id: edges
    uses: refine
    from: depth
  - id: files
    uses: export
    from: edges
    with: {{formats: [grayscale, npy]}}
output: out/{{recipe}}/{{image}}/
"""


def make_recipe(folder: Path, images, name: str) -> Path:
    p = folder / f"{name}.yaml"
    p.write_text(RECIPE.format(name=name, images=json.dumps([str(i) for i in images])))
    return p


def server_processes(ws: Path) -> list[psutil.Process]:
    """``prefect server start`` processes whose database is in ``ws`` (found the way a user would)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info.get("cmdline") or []
        if "prefect" not in " ".join(cmd) or "server" not in cmd or "start" not in cmd:
            continue
        try:
            if p.environ().get("PREFECT_HOME") == str(ws / "prefect"):
                found.append(p)
        except psutil.Error:
            pass
    return found


def any_processes(ws: Path) -> list[psutil.Process]:
    """Every process (supervisor, server) started for the server of ``ws``."""
    found = []
    for p in psutil.process_iter():
        try:
            env = p.environ()
        except psutil.Error:
            continue
        if env.get("PREFECT_HOME") == str(ws / "prefect") and p.pid != os.getpid():
            found.append(p)
    return found


def wait_for(pred, timeout: float, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def cli(*args, **kw):
    return subprocess.Popen([*DEPTHCRAFT, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)


def run_cli(*args, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    """The real command line with exactly ``env`` (conftest's helper would bring back the
    session server's PREFECT_API_URL, and with it no local server at all)."""
    return subprocess.run([*DEPTHCRAFT, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout)


def env_for(ws: Path, **extra) -> dict:
    e = dict(os.environ)
    e.pop("PREFECT_API_URL", None)  # the conftest server is not ours here: each test uses its workspace's own
    e.update({"DEPTHCRAFT_HOME": str(ws), **extra})
    return e


def kill_workspace_servers(ws: Path) -> None:
    for p in any_processes(ws):
        try:
            p.kill()
        except psutil.Error:
            pass


@pytest.fixture(scope="module")
def shared_ws(tmp_path_factory):
    ws = tmp_path_factory.mktemp("server-ws") / "ws"
    yield ws
    subprocess.run([*DEPTHCRAFT, "server", "stop"], env=env_for(ws), capture_output=True, timeout=120)
    kill_workspace_servers(ws)


# -- two runs at once; idle stop -----------------------------------------------------------------
def test_two_runs_at_once_start_one_server_which_stops_when_idle(shared_ws, tmp_path, photos):
    """Today one of the two fails with a SQLAlchemy traceback; both must succeed on one server."""
    recipe = make_recipe(tmp_path, [photos["astronaut"]], "twin")
    env = env_for(shared_ws, DEPTHCRAFT_SERVER_IDLE_MINUTES="0.1")  # 6 s
    runs = [cli("run", recipe, "--out", tmp_path / f"o{i}", env=env) for i in range(2)]
    seen = set()
    while any(r.poll() is None for r in runs):
        seen |= {p.pid for p in server_processes(shared_ws)}
        time.sleep(1.0)
    outs = [r.communicate() for r in runs]
    for r, (_, err) in zip(runs, outs):
        assert r.returncode == 0, err
        assert "Traceback" not in err
    assert len(seen) == 1, f"server processes seen: {seen}"
    for i in range(2):
        assert list((tmp_path / f"o{i}").rglob("manifest.json"))

    # both runs are gone: after 6 s without use the server stops by itself and says why
    assert wait_for(lambda: not any_processes(shared_ws), timeout=90), "the idle server is still running"
    assert not (shared_ws / "server.json").exists()
    assert "without use" in (shared_ws / "server.log").read_text()


def test_idle_setting_is_checked(tmp_path):
    ws = tmp_path / "ws"
    try:
        r = run_cli("server", "start", env=env_for(ws, DEPTHCRAFT_SERVER_IDLE_MINUTES="soon"))
        assert r.returncode != 0 and "DEPTHCRAFT_SERVER_IDLE_MINUTES" in r.stderr and "Traceback" not in r.stderr
    finally:
        kill_workspace_servers(ws)


# -- the server dies during a run ----------------------------------------------------------------
def test_server_killed_during_a_run_ends_it_within_seconds(shared_ws, tmp_path, photos):
    """Today: ~220 s of EventsWorker errors, an httpx traceback and no summary."""
    recipe = make_recipe(tmp_path, [photos["astronaut"], photos["chelsea"], photos["coffee"]], "dies")
    env = env_for(shared_ws)
    run = cli("run", recipe, "--out", tmp_path, env=env)
    objects = shared_ws / "store" / "objects"
    before = set(objects.rglob("*")) if objects.exists() else set()

    def first_step_done():  # the flow is running: a step has stored a new output
        return run.poll() is None and objects.exists() and bool(set(objects.rglob("*")) - before)

    assert wait_for(first_step_done, timeout=300), run.communicate()
    servers = server_processes(shared_ws)
    assert len(servers) == 1
    servers[0].kill()
    t0 = time.monotonic()
    try:
        _, err = run.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        run.kill()
        pytest.fail(f"run still going 120 s after the server died: {run.communicate()[1][-2000:]}")
    took = time.monotonic() - t0
    assert run.returncode == 75, err
    assert "the local Prefect server stopped during the run" in err
    assert "step run(s)" in err  # the summary of what finished
    assert "Traceback" not in err and "EventsWorker" not in err
    assert took < 60, f"took {took:.0f} s to end"

    # the next run starts a new server and reuses every finished step
    r = run_cli("run", recipe, "--out", tmp_path, "--json", env=env)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["cached"] >= 1 and not s["failures"]
    # ... and the run the server's death ended is Crashed, not Running for ever (the new server
    # is on another port but has the same database)
    r = run_cli("runs", "dies", "--json", env=env)
    assert r.returncode == 0, r.stderr
    states = [row["state"] for row in json.loads(r.stdout)]
    assert len(states) == 2 and "Running" not in states and "Crashed" in states, states


# -- a damaged database --------------------------------------------------------------------------
def test_damaged_database_is_named_and_reset_is_the_way_out(shared_ws, tmp_path, photos):
    """Today: the server's raw traceback. Wanted: the file named and `depthcraft server reset`."""
    env = env_for(shared_ws)
    assert run_cli("server", "stop", env=env).returncode == 0
    db = shared_ws / "prefect" / "prefect.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    db.write_bytes(os.urandom(64 * 1024))  # garbage over the whole file
    store_before = sorted(p.name for p in (shared_ws / "store").rglob("*")) if (shared_ws / "store").exists() else []
    recipe = make_recipe(tmp_path, [photos["chelsea"]], "afterreset")
    r = run_cli("run", recipe, "--out", tmp_path, env=env)
    assert r.returncode != 0
    assert str(db) in r.stderr and "depthcraft server reset" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) <= 3, r.stderr

    r = run_cli("server", "reset", env=env)
    assert r.returncode == 0, r.stderr
    assert not db.exists() and list(db.parent.glob("prefect.db.broken-*"))
    now = sorted(p.name for p in (shared_ws / "store").rglob("*")) if (shared_ws / "store").exists() else []
    assert now == store_before  # the artifact store is untouched

    r = run_cli("run", recipe, "--out", tmp_path, env=env)
    assert r.returncode == 0, r.stderr


def test_database_damaged_inside_is_caught_before_the_server_starts(tmp_path):
    """A valid header over broken pages (a torn write): named before any server starts."""
    ws = tmp_path / "ws"
    db = ws / "prefect" / "prefect.db"
    db.parent.mkdir(parents=True)
    con = sqlite3.connect(db)
    con.execute("create table t (x text)")
    con.executemany("insert into t values (?)", [("x" * 500,)] * 2000)
    con.commit()
    con.close()
    raw = bytearray(db.read_bytes())
    raw[4096 * 2: 4096 * 6] = os.urandom(4096 * 4)  # pages in the middle, header intact
    db.write_bytes(bytes(raw))
    t0 = time.monotonic()
    r = run_cli("server", "start", env=env_for(ws))
    assert r.returncode != 0 and str(db) in r.stderr and "server reset" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert time.monotonic() - t0 < 30
    assert not server_processes(ws)


# -- kill -9 of a run while it starts the server ---------------------------------------------------
def test_kill_9_while_starting_leaves_no_unknown_server(tmp_path, photos):
    """Today the orphan is unknown to server.json: `server stop` cannot reach it."""
    ws = tmp_path / "ws"
    env = env_for(ws)
    recipe = make_recipe(tmp_path, [photos["coffee"]], "orphan")
    run = cli("run", recipe, "--out", tmp_path, env=env)
    try:
        assert wait_for(lambda: server_processes(ws), timeout=120, step=0.05), "no server process appeared"
    finally:
        run.kill()
        run.communicate()
    try:
        _check_orphan_is_known_and_stopped(ws, env)
    finally:
        kill_workspace_servers(ws)


def _check_orphan_is_known_and_stopped(ws: Path, env: dict) -> None:
    orphans = any_processes(ws)
    assert orphans
    st = json.loads((ws / "server.json").read_text())  # the server is known although its starter died
    assert st["pid"] in {p.pid for p in orphans}
    r = run_cli("server", "status", env=env)
    assert f"pid {st['pid']}" in r.stdout + r.stderr
    r = run_cli("server", "stop", env=env)
    assert r.returncode == 0 and "stopped" in r.stderr
    assert wait_for(lambda: not any_processes(ws), timeout=20), [p.cmdline() for p in any_processes(ws)]


def test_server_stop_finds_servers_that_server_json_does_not_name(tmp_path):
    """An orphan whose record was lost: `server status` shows it, `server stop` stops it."""
    ws = tmp_path / "ws"
    ws.mkdir()
    env = env_for(ws)
    from depthcraft.flows import server
    from depthcraft.flows.workspace import Workspace

    # a stand-in with the server's environment (a real server costs 10 s or more to start)
    fake = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"],
                            env=server.server_env(Workspace(ws)), start_new_session=True)
    try:
        r = run_cli("server", "status", env=env)
        assert r.returncode == 3 and str(fake.pid) in r.stderr, r.stderr
        r = run_cli("server", "stop", env=env)
        assert r.returncode == 0 and "stopped" in r.stderr
        assert fake.wait(timeout=20) is not None
    finally:
        if fake.poll() is None:
            fake.kill()


# -- a stale record naming an unrelated process --------------------------------------------------
@pytest.mark.parametrize("shape", ["old", "recorded", "other-workspace"])
def test_stale_record_never_signals_an_unrelated_process(tmp_path, shape):
    """Today `server stop` kills the process group of whatever now has the recorded pid."""
    ws = tmp_path / "ws"
    ws.mkdir()
    env = env_for(ws)
    victim_cmd = ["sleep", "300"]
    if shape == "other-workspace":  # a record copied along with another workspace: a live process, not ours
        victim_cmd = [sys.executable, "-c", "import time; time.sleep(300)", "--workspace", str(tmp_path / "other")]
    victim = subprocess.Popen(victim_cmd, start_new_session=True)
    try:
        rec = {"url": "http://127.0.0.1:9/api", "pid": victim.pid, "port": 9, "log": str(ws / "server.log"),
               "started": time.time()}
        if shape == "recorded":  # the pid was ours once: same pid, but another start time and command
            rec.update(create_time=time.time() - 3600,
                       cmdline=[sys.executable, "-m", "depthcraft.flows.serverd", "--workspace", str(ws)])
        if shape == "other-workspace":
            time.sleep(0.5)  # exec'd
            p = psutil.Process(victim.pid)
            rec.update(create_time=p.create_time(), cmdline=p.cmdline())
        (ws / "server.json").write_text(json.dumps(rec))
        r = run_cli("server", "status", env=env)
        assert r.returncode == 3 and "not running" in r.stderr, r.stderr
        (ws / "server.json").write_text(json.dumps(rec))
        r = run_cli("server", "stop", env=env)
        assert r.returncode == 0 and "no server was running" in r.stderr, r.stderr
        time.sleep(0.5)
        assert victim.poll() is None, "the unrelated process was signalled"
        assert not (ws / "server.json").exists()
    finally:
        victim.kill()
        victim.wait()
