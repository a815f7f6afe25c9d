"""One `depthcraft serve` per deployment in a workspace (flows/servelease.py), with two real serve
processes against the loopback Prefect server. Before: a second serve of the same deployment
started beside the first, `--replace` included, and both picked up its runs."""

from __future__ import annotations

import signal
import time

import psutil

from test_deploy import client, wait_final, write_recipe
from test_deploy_serve import Serve


def _running_child(s: Serve, timeout: float = 120.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if any("spawn_main" in " ".join(k.cmdline()) for k in psutil.Process(s.p.pid).children()):
                return True
        except psutil.Error:
            pass
        time.sleep(0.1)
    return False


def _stop_all(*serves) -> None:
    """Stop the test's serves, a SIGSTOPped one too (SIGCONT first)."""
    import os

    for s in serves:
        if s is not None:
            try:
                os.kill(s.p.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            s.stop(signal.SIGTERM, group=False)


def test_a_second_serve_of_a_deployment_is_refused_in_one_line(prefect_server, tmp_path, photos):
    ws = tmp_path / "ws"
    recipe = write_recipe(tmp_path, "onlyone", [photos["coffee"]])
    a = Serve("--workspace", ws, "serve", recipe, cwd=tmp_path)
    b = None
    try:
        a.wait_for("serving depthcraft-onlyone/onlyone")
        b = Serve("--workspace", ws, "serve", recipe, cwd=tmp_path)
        rc = b.p.wait(timeout=120)
        time.sleep(0.3)
        assert rc == 2 and "Traceback" not in b.log, b.log[-3000:]
        lines = [ln for ln in b.log.splitlines() if ln.strip()]
        assert len(lines) == 1 and "depthcraft-onlyone/onlyone" in lines[0] and f"pid {a.p.pid}" in lines[0], b.log
        assert "--replace" in lines[0] and "serving " not in b.log
        assert a.p.poll() is None  # the first one serves on
    finally:
        for s in (a, b):
            if s is not None:
                s.stop(signal.SIGTERM, group=False)


def test_serve_replace_stops_the_older_serve_and_runs_its_unfinished_run(prefect_server, tmp_path, photos):
    ws = tmp_path / "ws"
    recipe = write_recipe(tmp_path, "takeover", [photos["astronaut"], photos["chelsea"], photos["coffee"]])
    a = Serve("--workspace", ws, "serve", recipe, cwd=tmp_path)
    b = None
    try:
        a.wait_for("serving depthcraft-takeover/takeover")
        with client() as c:
            fr = c.create_flow_run_from_deployment(c.read_deployment_by_name("depthcraft-takeover/takeover").id)
        assert _running_child(a), a.log[-3000:]  # the old serve is running the run
        b = Serve("--workspace", ws, "serve", recipe, "--replace", cwd=tmp_path)
        b.wait_for("serving depthcraft-takeover/takeover", timeout=180)
        assert a.p.wait(timeout=60) == 143, a.log[-3000:]  # stopped by SIGTERM (it let its lease go last)
        time.sleep(0.3)
        assert f"replaced by depthcraft serve {b.p.pid}" in a.log and "handed back" in a.log, a.log[-3000:]
        assert "Traceback" not in a.log + b.log, (a.log + b.log)[-5000:]
        done = wait_final(str(fr.id), timeout=240)  # the new serve runs it again
        assert done.state.is_completed(), f"{done.state.name}: {done.state.message}\n{b.log[-3000:]}"
    finally:
        for s in (a, b):
            if s is not None:
                s.stop(signal.SIGTERM, group=False)
    assert (tmp_path / "out" / "takeover" / "coffee" / "files.png").exists()


def test_a_killed_serve_leaves_no_lease_and_a_stuck_one_is_not_waited_for_forever(prefect_server, tmp_path, photos):
    """kill -9 lets the lease go (the kernel's lock); a serve that does not stop within the wait
    (here stopped with SIGSTOP) makes --replace give up in one line naming its pid."""
    import os

    ws = tmp_path / "ws"
    recipe = write_recipe(tmp_path, "stuck", [photos["coffee"]])
    a = Serve("--workspace", ws, "serve", recipe, cwd=tmp_path)
    b = c = None
    try:
        a.wait_for("serving depthcraft-stuck/stuck")
        os.kill(a.p.pid, signal.SIGKILL)
        a.p.wait(timeout=30)
        b = Serve("--workspace", ws, "serve", recipe, cwd=tmp_path)  # no --replace needed: nobody serves it
        b.wait_for("serving depthcraft-stuck/stuck")
        os.kill(b.p.pid, signal.SIGSTOP)
        os.environ["DEPTHCRAFT_SERVE_REPLACE_WAIT"] = "2"
        try:
            c = Serve("--workspace", ws, "serve", recipe, "--replace", cwd=tmp_path)
        finally:
            del os.environ["DEPTHCRAFT_SERVE_REPLACE_WAIT"]
        assert c.p.wait(timeout=120) == 2, c.log[-3000:]
        time.sleep(0.3)
        err = [ln for ln in c.log.splitlines() if ln.startswith("error")]
        assert len(err) == 1 and f"pid {b.p.pid}" in err[0] and "did not stop within 2 s" in err[0], c.log
        assert f"kill {b.p.pid}" in err[0] and "Traceback" not in c.log and "serving " not in c.log
        os.kill(b.p.pid, signal.SIGCONT)  # its SIGTERM arrives now: an ordinary stop, its runs cancelled
        assert b.p.wait(timeout=90) == 143, b.log[-3000:]
        time.sleep(0.3)
        assert "replaced by" not in b.log, b.log[-3000:]
    finally:
        _stop_all(a, b, c)


def test_a_replacing_serve_killed_while_waiting_is_not_named_as_the_successor(prefect_server, tmp_path, photos):
    """`serve --replace` killed (-9) during the hand-over leaves its hand-over note behind: the
    older serve, stopping on its SIGTERM, said "replaced by depthcraft serve <the dead pid>" and
    handed its runs to nobody instead of an ordinary stop."""
    import os

    ws = tmp_path / "ws"
    recipe = write_recipe(tmp_path, "orphan", [photos["coffee"]])
    a = Serve("--workspace", ws, "serve", recipe, cwd=tmp_path)
    b = None
    try:
        a.wait_for("serving depthcraft-orphan/orphan")
        os.kill(a.p.pid, signal.SIGSTOP)  # (its SIGTERM waits until the replacing serve is gone)
        b = Serve("--workspace", ws, "serve", recipe, "--replace", cwd=tmp_path)
        b.wait_for("replacing depthcraft serve")
        os.kill(b.p.pid, signal.SIGKILL)
        b.p.wait(timeout=30)
        os.kill(a.p.pid, signal.SIGCONT)
        assert a.p.wait(timeout=90) == 143, a.log[-3000:]
        time.sleep(0.3)
        assert "replaced by" not in a.log and "handed back" not in a.log, a.log[-3000:]
        assert "stopped serving" in a.log, a.log[-3000:]
    finally:
        _stop_all(a, b)


def test_a_bad_replace_wait_is_one_line_naming_the_variable(prefect_server, tmp_path, photos):
    """DEPTHCRAFT_SERVE_REPLACE_WAIT=abc was a ValueError traceback of every serve (read at import)."""
    import os

    recipe = write_recipe(tmp_path, "badwait", [photos["coffee"]])
    os.environ["DEPTHCRAFT_SERVE_REPLACE_WAIT"] = "abc"
    try:
        s = Serve("--workspace", tmp_path / "ws", "serve", recipe, "--replace", cwd=tmp_path)
    finally:
        del os.environ["DEPTHCRAFT_SERVE_REPLACE_WAIT"]
    try:
        assert s.p.wait(timeout=120) == 2, s.log[-3000:]
        time.sleep(0.3)
        lines = [ln for ln in s.log.splitlines() if ln.strip()]
        assert len(lines) == 1 and "DEPTHCRAFT_SERVE_REPLACE_WAIT" in lines[0], s.log[-3000:]
        assert "Traceback" not in s.log and "serving " not in s.log
    finally:
        s.stop(signal.SIGTERM, group=False)


def test_a_stale_hand_over_note_whose_pid_was_reused_is_not_a_successor(prefect_server, tmp_path, photos):
    """A hand-over note left by a replacing serve that died names a pid the system may give to
    another process later: the serve then stopping by Ctrl-C said "replaced by" that process
    and handed its runs to nobody. The note names the process by pid and start time."""
    import json
    import os

    from depthcraft.flows.servelease import _stem

    ws = tmp_path / "ws"
    recipe = write_recipe(tmp_path, "reused", [photos["coffee"]])
    a = Serve("--workspace", ws, "serve", recipe, cwd=tmp_path)
    try:
        a.wait_for("serving depthcraft-reused/reused")
        note = ws / "serving" / f"{_stem('depthcraft-reused/reused')}.handover"
        # (this test's own pid stands for the reused one: alive, but started at another time)
        note.write_text(json.dumps({"pid": os.getpid(), "start": 1}))
        assert a.stop(signal.SIGTERM, group=False) == 143, a.log[-3000:]
        assert "replaced by" not in a.log and "stopped serving" in a.log, a.log[-3000:]
    finally:
        a.stop(signal.SIGTERM, group=False)


def test_ctrl_c_during_the_hand_over_says_the_older_serve_stops(prefect_server, tmp_path, photos):
    """Ctrl-C on `serve --replace` while it waits cannot take back the SIGTERM the older serve got:
    it said only "interrupted", and nothing served the deployment afterwards without a word."""
    import os

    ws = tmp_path / "ws"
    recipe = write_recipe(tmp_path, "ctrlc", [photos["coffee"]])
    a = Serve("--workspace", ws, "serve", recipe, cwd=tmp_path)
    b = None
    try:
        a.wait_for("serving depthcraft-ctrlc/ctrlc")
        os.kill(a.p.pid, signal.SIGSTOP)
        b = Serve("--workspace", ws, "serve", recipe, "--replace", cwd=tmp_path)
        b.wait_for("replacing depthcraft serve")
        assert b.stop(signal.SIGINT, group=False) == 130, b.log[-3000:]
        assert "was already asked to stop" in b.log and "nothing serves depthcraft-ctrlc/ctrlc" in b.log, b.log
        assert "Traceback" not in b.log, b.log[-3000:]
        os.kill(a.p.pid, signal.SIGCONT)
        assert a.p.wait(timeout=90) == 143, a.log[-3000:]
        time.sleep(0.3)
        assert "replaced by" not in a.log and "stopped serving" in a.log, a.log[-3000:]
    finally:
        _stop_all(a, b)


def test_a_workspace_where_the_lease_cannot_be_taken_is_one_line(prefect_server, tmp_path, photos):
    """A file where the lease folder belongs (as a read-only workspace would): one line, no traceback."""
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "serving").write_text("not a folder")
    recipe = write_recipe(tmp_path, "nolease", [photos["coffee"]])
    s = Serve("--workspace", ws, "serve", recipe, cwd=tmp_path)
    try:
        rc = s.p.wait(timeout=120)
        time.sleep(0.3)
    finally:
        s.stop(signal.SIGTERM, group=False)
    assert rc != 0 and "Traceback" not in s.log, s.log[-3000:]
    assert "cannot take the serve lease" in s.log and str(ws / "serving") in s.log, s.log[-3000:]


WRAP = '''\
import os, signal, sys
import prefect.runner.runner as R

orig = R.Runner.start


async def start(self, *a, **k):
    # a SIGTERM landing in start()'s first, synchronous part (as a --replace's did in CI, under
    # load): start() has just installed its SIGTERM handler, as Prefect's own code does
    signal.signal(signal.SIGTERM, self.handle_sigterm)
    os.kill(os.getpid(), signal.SIGTERM)
    return await orig(self, *a, **k)


R.Runner.start = start
from depthcraft.flows.cli import main

sys.exit(main())
'''


def test_a_sigterm_while_prefects_runner_starts_stops_the_serve_as_any_stop_does(prefect_server, tmp_path, photos):
    """Prefect's Runner.start() installs its own SIGTERM handler (``sys.exit(0)`` while starting);
    a SIGTERM then was a traceback and exit 0, the serve's own stop never ran."""
    import subprocess
    import sys

    ws = tmp_path / "ws"
    recipe = write_recipe(tmp_path, "early", [photos["coffee"]])
    wrap = tmp_path / "wrap.py"
    wrap.write_text(WRAP)
    p = subprocess.run([sys.executable, str(wrap), "--workspace", str(ws), "serve", str(recipe)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=180)
    log = p.stdout + p.stderr
    assert p.returncode == 143 and "Traceback" not in log, log[-3000:]
    assert "SIGTERM: stopping serve" in log and "stopped serving" in log, log[-3000:]
