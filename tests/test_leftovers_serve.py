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
        # (another workspace, as another machine: one workspace serves a deployment once, servelease.py)
        b = Serve("--workspace", tmp_path / "ws-b", "serve", recipe, cwd=tmp_path)
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
        b = Serve("--workspace", tmp_path / "ws-b", "serve", recipe, cwd=tmp_path)  # (see above)
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
        time.sleep(1.5)  # (serving: a signal in its first second is another test's subject)
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


# -- 4. concurrent writers of one output -----------------------------------------------------------
def test_two_one_shots_writing_one_output_at_once_leave_one_complete_set(tmp_path, photos):
    """Each file is replaced atomically (temp file + rename), so neither is ever torn; the set of
    files (d.npy and its d.npy.json sidecar) is one command's, never a mix of the two."""
    import numpy as np

    refs = {}
    cmds = {"estimate": ["estimate", photos["coffee"], "--provider", "classic"]}
    r = subprocess.run([*DEPTHCRAFT, *map(str, cmds["estimate"]), "-o", tmp_path / "ref-estimate.npy"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # another command writing the same name: the same map as a disparity (its sidecar differs)
    cmds["export"] = ["export", photos["coffee"], "--depth", tmp_path / "ref-estimate.npy", "--depth-kind",
                      "disparity", "--set", "formats=[npy]"]
    r = subprocess.run([*DEPTHCRAFT, *map(str, cmds["export"]), "-o", tmp_path / "ref-export.npy"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for k in cmds:
        refs[k] = ((tmp_path / f"ref-{k}.npy").read_bytes(), (tmp_path / f"ref-{k}.npy.json").read_bytes())
    assert refs["estimate"][1] != refs["export"][1]
    out = tmp_path / "same" / "d.npy"
    for _ in range(3):
        procs = [subprocess.Popen([*DEPTHCRAFT, *map(str, c), "-o", out], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for c in cmds.values()]
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
        got = (out.read_bytes(), out.with_name("d.npy.json").read_bytes())
        assert got in refs.values(), "a mixed or torn set of files"
        assert np.load(out).shape == np.load(tmp_path / "ref-estimate.npy").shape
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp file left


def test_a_one_shot_waits_while_another_writes_its_output(tmp_path, photos):
    """The write phase of a one-shot is held against another writer of the same -o (here the
    test holds it, as a one-shot in the middle of its copies would)."""
    from depthcraft.flows.outlock import oneshot_writing

    out = tmp_path / "d.png"
    with oneshot_writing(out):  # held by this (another) process
        p = subprocess.Popen([*DEPTHCRAFT, "estimate", photos["coffee"], "--provider", "classic", "-o", out],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(6.0)
        assert p.poll() is None and not out.exists()  # waiting, nothing written
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert f"waiting for another command writing {out}" in err and out.exists(), err


NESTED_RECIPE = """\
version: 1
name: vid
inputs:
  images: [{image}]
steps:
  - id: depth
    uses: estimate
  - id: video
    uses: parallax
    from: depth
    with: {{duration: 16, fps: 30, size: 1280x720}}
output: {output}
"""


def test_a_run_in_a_folder_inside_or_around_a_running_runs_is_refused(prefect_server, tmp_path, photos):
    """Before: the folder lock held one folder only; a run inside (or around) a running run's
    folder wrote there at once (an image named as the inner folder: the same files, mixed)."""
    from conftest import run_cli

    ws = tmp_path / "ws"
    image = json.dumps(str(photos["astronaut"]))
    a = tmp_path / "a.yaml"
    a.write_text(NESTED_RECIPE.format(image=image, output="out/{recipe}/{image}/"))
    held = tmp_path / "o" / "out" / "vid" / "astronaut"
    run = subprocess.Popen([*DEPTHCRAFT, "--workspace", ws, "run", a, "--refresh", "--out", tmp_path / "o"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: run.poll() is None and any(p.is_dir() for p in (ws / "tmp").glob("*/*")),
                        timeout=120, step=0.1), run.communicate()
        b = tmp_path / "b.yaml"
        b.write_text(NESTED_RECIPE.format(image=image, output="out/{recipe}/"))
        tries = [subprocess.Popen([*DEPTHCRAFT, "--workspace", ws, "run", r, "--out", o], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, cwd=tmp_path)
                 for r, o in ((a, held), (b, tmp_path / "o"))]
        inner, outer = [subprocess.CompletedProcess(t.args, t.wait(120), *t.communicate()) for t in tries]
        assert run.poll() is None, "the first run ended before the others were tried: make it longer"
    finally:
        _, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    for r, where in ((inner, "inside"), (outer, "around")):
        assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
        line = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
        assert len(line) == 1 and f"it is {where} {held}, the output folder of a running run" in line[0], r.stderr
    assert not (held / "out").exists()  # the inner run wrote nothing
    assert not (tmp_path / "o" / "out" / "vid" / "manifest.json").exists()
    # once it has finished, the same runs are fine
    assert run_cli("--workspace", ws, "run", a, "--out", held, cwd=tmp_path).returncode == 0


def test_a_killed_runs_folder_record_does_not_refuse_the_next(tmp_path):
    import sys

    from depthcraft.flows.outlock import FolderInUse, claim_folder, unclaim

    folder = tmp_path / "o"
    code = ("import sys, time; from depthcraft.flows.outlock import claim_folder; "
            f"claim_folder(__import__('pathlib').Path({str(folder)!r}), 'killed'); print('held', flush=True); "
            "time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        try:
            claim_folder(folder / "inner", "me")
            raise AssertionError("not refused while the holder lives")
        except FolderInUse as e:
            assert str(folder) in str(e) and "killed" in str(e)
    finally:
        p.kill()  # kill -9: no clean-up of its own
        p.wait()
    fd = claim_folder(folder / "inner", "me")  # its record is stale now: removed, not refused
    unclaim(fd)
