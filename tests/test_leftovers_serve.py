"""Leftovers of hostile testing around the server, ``serve`` and output folders, with real
processes: a summary that counts every step that finished after the local server went away,
two ``serve`` processes that never cancel each other's runs, a paused deployment said at
``serve``'s start, and concurrent writers of one output (one-shots, nested recipe folders).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import psutil

from depthcraft.tasks.lib.store import sha256_file

from conftest import DEPTHCRAFT
from test_deploy import client, wait_final, write_recipe
from test_server import env_for, kill_workspace_servers, run_cli as run_env, wait_for

VIDEO_RECIPE = """\
version: 1
name: {name}
inputs:
  images: [{image}]
steps:
  - id: depth
    uses: estimate
  - id: video
    uses: parallax
    from: depth
    with: {{duration: 8, fps: 30, size: 1280x720}}
output: out/{{recipe}}/{{image}}/
"""


# -- 1. the server stops while a video step runs ----------------------------------------------------
def test_server_stop_during_a_video_step_counts_and_lists_every_finished_step(tmp_path, photos):
    """Before: the runner waited on Prefect's report of the video step (which never comes without
    a server), so the watchdog printed its own count ("1 step run(s) finished": the cached depth
    was not counted), --json printed nothing, and the manifest did not list the video."""
    ws = tmp_path / "ws"
    env = env_for(ws)
    recipe = tmp_path / "vid.yaml"
    recipe.write_text(VIDEO_RECIPE.format(name="vid", image=json.dumps(str(photos["astronaut"]))))
    try:
        # the depth step cached (and the server started) by a first, short run
        r = run_env("run", recipe, "--out", tmp_path, "--set", "steps.video.with.duration=0.2",
                    "--set", "steps.video.with.size=64x64", env=env)
        assert r.returncode == 0, r.stderr
        run = subprocess.Popen([*DEPTHCRAFT, "run", recipe, "--out", tmp_path, "--json"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def video_running():  # its work folder exists (the depth step is a cache hit: no folder)
            return run.poll() is None and any(p.is_dir() for p in (ws / "tmp").glob("*/*"))

        assert wait_for(video_running, timeout=120, step=0.1), run.communicate()
        time.sleep(1.0)
        stop = run_env("server", "stop", "--force", env=env)
        assert stop.returncode == 0, stop.stderr
        out, err = run.communicate(timeout=180)
    finally:
        kill_workspace_servers(ws)
    assert run.returncode == 75, err
    assert "the local Prefect server stopped during the run" in err and "Traceback" not in err, err
    s = json.loads(out)  # --json: the run's own summary
    assert (s["computed"], s["cached"], s["nodes"], s["failures"]) == (1, 1, 2, []), s
    assert "2 step run(s): 1 computed, 1 cached, 0 failed" in err, err
    man = json.loads(Path(s["manifest"]).read_text())
    assert "partial" not in man
    steps = {n["step"]: n for n in man["steps"]}
    assert (steps["depth"]["status"], steps["video"]["status"]) == ("cached", "computed"), man["steps"]
    for n in man["steps"]:  # every file listed is there, with the bytes listed
        for o in n["outputs"].values():
            assert sha256_file(o["path"]) == o["sha256"], o
    assert Path(steps["video"]["outputs"]["main"]["path"]).name == "video.mp4"


# -- 2. two serve processes ------------------------------------------------------------------------
def _serve_running_a_run(serves, timeout: float = 120.0):
    """The serve whose flow-run process (a child of it) is running now, and the others."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for s in serves:
            try:
                kids = psutil.Process(s.p.pid).children()
                if any("spawn_main" in " ".join(k.cmdline()) for k in kids):
                    return s, [o for o in serves if o is not s]
            except psutil.Error:
                pass
        time.sleep(0.1)
    raise AssertionError("no serve started a flow-run process:\n" + "\n".join(s.log[-2000:] for s in serves))


def test_stopping_one_serve_never_cancels_another_serves_run(prefect_server, tmp_path, photos):
    """Before: a stopping serve set every unfinished run of its deployments to Cancelled, also the
    run another serve of the same deployment (the same recipe twice) was running."""
    from test_deploy_serve import Serve

    ws = tmp_path / "ws"
    recipe = write_recipe(tmp_path, "twoserve", [photos["astronaut"], photos["chelsea"], photos["coffee"]])
    a = Serve("--workspace", ws, "serve", recipe, cwd=tmp_path)
    b = None
    try:
        a.wait_for("serving depthcraft-twoserve/twoserve")
        b = Serve("--workspace", ws, "serve", recipe, cwd=tmp_path)
        b.wait_for("serving depthcraft-twoserve/twoserve")
        with client() as c:
            fr = c.create_flow_run_from_deployment(c.read_deployment_by_name("depthcraft-twoserve/twoserve").id)
        owner, (other,) = _serve_running_a_run([a, b])
        assert other.stop(signal.SIGTERM, group=False) == 143, other.log[-3000:]
        assert "unfinished run" not in other.log, other.log[-3000:]  # it picked up nothing: cancels nothing
        done = wait_final(str(fr.id), timeout=180)
        assert done.state.is_completed(), f"{done.state.name}: {done.state.message}\n{owner.log[-3000:]}"
    finally:
        for s in (a, b):
            if s is not None:
                s.stop(signal.SIGTERM, group=False)
    assert (tmp_path / "out" / "twoserve" / "coffee" / "files.png").exists()


def test_a_stopping_serve_cancels_the_run_it_picked_up(prefect_server, tmp_path, photos):
    """... and still cancels its own, though another serve of the deployment is running."""
    from test_deploy_serve import Serve

    ws = tmp_path / "ws"
    recipe = write_recipe(tmp_path, "ownrun", [photos["astronaut"], photos["chelsea"], photos["coffee"]])
    a = Serve("--workspace", ws, "serve", recipe, cwd=tmp_path)
    b = None
    try:
        a.wait_for("serving depthcraft-ownrun/ownrun")
        b = Serve("--workspace", ws, "serve", recipe, cwd=tmp_path)
        b.wait_for("serving depthcraft-ownrun/ownrun")
        with client() as c:
            fr = c.create_flow_run_from_deployment(c.read_deployment_by_name("depthcraft-ownrun/ownrun").id)
        owner, (other,) = _serve_running_a_run([a, b])
        assert owner.stop(signal.SIGTERM, group=False) == 143, owner.log[-3000:]
        with client() as c:
            state = c.read_flow_run(fr.id).state
        assert state.type.value in ("CANCELLED", "CRASHED"), f"{state}\n{owner.log[-3000:]}"
    finally:
        for s in (a, b):
            if s is not None:
                s.stop(signal.SIGTERM, group=False)


# -- 3. a paused deployment ------------------------------------------------------------------------
def test_serve_keeps_a_paused_deployment_paused_and_says_so_in_one_line(prefect_server, tmp_path, photos):
    """Before: serve kept it paused without a word (only ", paused" in its serving line), and the
    way it named to pause one (`prefect deployment pause`) is no Prefect 3 command."""
    from conftest import run_cli
    from test_deploy_serve import Serve

    ws = tmp_path / "ws"
    recipe = write_recipe(tmp_path, "held", [photos["coffee"]], 'schedule: {interval: 1d}')
    r = run_cli("--workspace", ws, "deploy", recipe, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = run_cli("--workspace", ws, "pause", "depthcraft-held/held", cwd=tmp_path)
    assert r.returncode == 0 and "depthcraft-held/held: paused" in r.stderr, r.stderr
    s = Serve("--workspace", ws, "serve", recipe, cwd=tmp_path)
    try:
        s.wait_for("serving depthcraft-held/held")
        s.wait_for("is paused")
    finally:
        rc = s.stop(signal.SIGTERM, group=False)
    assert rc == 143, s.log[-3000:]
    said = [ln for ln in s.log.splitlines() if "is paused" in ln]
    assert said == ["deployment depthcraft-held/held is paused: its schedule makes no runs; "
                    "resume: depthcraft resume depthcraft-held/held"], s.log
    assert "Traceback" not in s.log, s.log
    with client() as c:
        dep = c.read_deployment_by_name("depthcraft-held/held")
        assert dep.paused  # stays paused: the user's decision
        c.pause_deployment(dep.id)  # (as an older serve left it on stop: the same state)
    r = run_cli("--workspace", ws, "resume", "depthcraft-held/held", cwd=tmp_path)  # the line's own advice
    assert r.returncode == 0 and "depthcraft-held/held: resumed" in r.stderr, r.stderr
    with client() as c:
        assert not c.read_deployment_by_name("depthcraft-held/held").paused
    # a serve of an unpaused deployment says nothing of the kind
    s = Serve("--workspace", ws, "serve", recipe, cwd=tmp_path)
    try:
        s.wait_for("serving depthcraft-held/held")
        time.sleep(1.0)
    finally:
        s.stop(signal.SIGTERM, group=False)
    assert "is paused" not in s.log, s.log
    # a name that is no deployment: one line naming it
    r = run_cli("--workspace", ws, "resume", "depthcraft-held/nope", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "depthcraft-held/nope: no such deployment" in r.stderr, r.stderr
