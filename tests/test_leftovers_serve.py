"""Leftovers of hostile testing around the server, ``serve`` and output folders, with real
processes: a summary that counts every step that finished after the local server went away,
two ``serve`` processes that never cancel each other's runs, a paused deployment said at
``serve``'s start, and concurrent writers of one output (one-shots, nested recipe folders).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from depthcraft.tasks.lib.store import sha256_file

from conftest import DEPTHCRAFT
from test_server import any_processes, env_for, kill_workspace_servers, run_cli as run_env, wait_for

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
