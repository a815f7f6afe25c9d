"""Interruption (issue 10, section 2): real processes stopped with real signals.

``depthcraft run`` / ``reproduce`` / one-shot commands are started as subprocesses against the
real Prefect server of the test session and stopped with ``os.kill`` (SIGINT = Ctrl-C, SIGTERM,
SIGKILL). A remote run talks to the loopback each::sense server (tests/eachsense_server.py),
slowed down so that requests are in flight when the signal lands.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import DEPTHCRAFT, run_cli
from eachsense_server import EachSenseTestServer

KEY = "sk-interrupt-test-1234"

LOCAL = """\
version: 1
name: stoppable
inputs:
  images: {photos}
steps:
  - {{id: depth, uses: estimate}}
  - {{id: edges, uses: refine, from: depth}}
  - {{id: video, uses: parallax, from: edges, with: {{duration: 600, fps: 30, motion: dolly}}}}
output: out/{{recipe}}/{{image}}/
"""

REMOTE = """\
version: 1
name: remote-stoppable
provider: eachsense
inputs:
  images: {photos}
steps:
  - {{id: depth, uses: estimate}}
  - {{id: edges, uses: refine, from: depth, provider: eachsense, with: {{message: "Enhance the edges."}}}}
output: out/{{recipe}}/{{image}}/
"""


class Proc:
    """A depthcraft command in a subprocess, its output in files (a pipe could fill up)."""

    def __init__(self, tmp_path: Path, *args, env: dict | None = None):
        self.out, self.err = tmp_path / f"stdout-{time.monotonic_ns()}", tmp_path / f"stderr-{time.monotonic_ns()}"
        e = dict(os.environ)
        e.update(env or {})
        with open(self.out, "w") as o, open(self.err, "w") as er:
            self.p = subprocess.Popen([*DEPTHCRAFT, *map(str, args)], stdout=o, stderr=er, env=e,
                                      stdin=subprocess.DEVNULL)

    def signal(self, sig) -> float:
        os.kill(self.p.pid, sig)
        return time.monotonic()

    def wait(self, timeout: float) -> int:
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            raise AssertionError(f"did not exit within {timeout} s of the signal; stderr:\n{self.stderr[-3000:]}")

    @property
    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


def wait_for(pred, timeout: float, what: str, proc: Proc | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        if proc is not None and proc.p.poll() is not None:
            raise AssertionError(f"exited ({proc.p.returncode}) before {what}:\n{proc.stderr[-3000:]}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}" + (f":\n{proc.stderr[-3000:]}" if proc else ""))


def work_files(ws: Path, pattern="*") -> list[Path]:
    return [p for p in (ws / "tmp").rglob(pattern) if p.is_file()] if (ws / "tmp").exists() else []


def flow_run(run_id: str):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as c:
        return c.read_flow_run(run_id)


def state_history(run_id: str) -> str:
    """The flow run's states in order, with their messages (what set the last one)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as c:
        states = sorted(c.read_flow_run_states(run_id), key=lambda s: s.timestamp)
    return "; ".join(f"{s.timestamp:%H:%M:%S.%f} {s.name}: {s.message}" for s in states)


def task_runs(run_id: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as c:
        return c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))


def run_id_from(stderr: str) -> str:
    m = re.search(r"flow run ([0-9a-f-]{36}): (\w+)", stderr)
    assert m, stderr
    return m.group(1)


def local_recipe(tmp_path, photos) -> Path:
    r = tmp_path / "stoppable.yaml"
    r.write_text(LOCAL.format(photos=json.dumps([str(photos["astronaut"])])))
    return r


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".")]


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_a_local_run_cancels_the_flow_run_and_the_next_run_resumes(prefect_server, workspace, tmp_path,
                                                                                 photos, sig, code):
    recipe = local_recipe(tmp_path, photos)
    out = tmp_path / "o"
    proc = Proc(tmp_path, "run", recipe, "--out", out)
    try:
        # the video is being rendered (its work folder holds the mp4 being encoded)
        wait_for(lambda: work_files(workspace, "*.mp4"), 240, "the video step to start", proc)
        t = proc.signal(sig)
        rc = proc.wait(timeout=15)
        took = time.monotonic() - t
    finally:
        proc.kill()
    err = proc.stderr
    assert rc == code, err
    assert took < 10, f"{took:.1f} s after the signal"
    assert f"interrupted by {signal.Signals(sig).name}" in err and "2 of 3 step run(s) finished" in err, err
    assert "Traceback" not in err
    rid = run_id_from(err)
    assert flow_run(rid).state.type.value == "CANCELLED", err + "\nstates: " + state_history(rid)
    assert all(tr.state.is_final() for tr in task_runs(rid))  # nothing left Running
    assert work_files(workspace) == []  # work folders cleaned
    folder = out / "out" / "stoppable" / "astronaut"
    assert not (folder / "video.mp4").exists() and no_temp_files(out)  # nothing half-written published
    assert (folder / "depth.png").exists()  # what finished before the signal was published
    # the next run resumes: the finished steps come from the cache
    res = run_cli("run", recipe, "--out", out, "--json", "--set", "steps.video.with.duration=1",
                  "--set", "steps.video.with.fps=4")
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)
    assert s["cached"] == 2 and s["computed"] == 1, s


@pytest.fixture
def slow_service(monkeypatch):
    srv = EachSenseTestServer(keys={KEY: "ok"})
    srv.start()
    for k, v in {"EACHLABS_API_KEY": KEY, "EACHLABS_ORG": "org-test", "EACHSENSE_BASE_URL": srv.base_url,
                 "EACHLABS_STORAGE_URL": srv.base_url, "EACHSENSE_BACKOFF_BASE": "0.01",
                 "EACHSENSE_POLL_INTERVAL": "0.01"}.items():
        monkeypatch.setenv(k, v)
    yield srv
    srv.stop()


def remote_recipe(tmp_path, photos) -> Path:
    r = tmp_path / "remote.yaml"
    r.write_text(REMOTE.format(photos=json.dumps([str(p) for p in photos.values()])))
    return r


def test_sigint_stops_a_remote_run_with_no_new_paid_requests(prefect_server, workspace, tmp_path, photos,
                                                             slow_service):
    slow_service.event_delay = 1.0  # every streamed event takes a second: a chat lasts several seconds
    proc = Proc(tmp_path, "run", remote_recipe(tmp_path, photos), "--out", tmp_path / "o")
    try:
        wait_for(lambda: slow_service.chats(), 240, "the first /chat request", proc)
        t = proc.signal(signal.SIGINT)
        time.sleep(0.5)  # a request sent just before the signal may still be on its way
        at_signal = len(slow_service.chats())
        rc = proc.wait(timeout=15)
        took = time.monotonic() - t
    finally:
        proc.kill()
    time.sleep(2)
    err = proc.stderr
    assert rc == 130, err
    assert took < 8, f"{took:.1f} s after the signal"
    assert len(slow_service.chats()) == at_signal, "new /chat calls were made after Ctrl-C"
    assert at_signal < 6  # 3 photos x 2 turns: the run was really cut short
    rid = run_id_from(err)
    assert flow_run(rid).state.type.value == "CANCELLED", err + "\nstates: " + state_history(rid)
    assert work_files(workspace) == []


def test_second_sigint_exits_at_once(prefect_server, workspace, tmp_path, photos, slow_service):
    slow_service.event_delay = 30.0  # a stream stuck on its next event: the first Ctrl-C waits for it
    proc = Proc(tmp_path, "run", remote_recipe(tmp_path, photos), "--out", tmp_path / "o",
                env={"DEPTHCRAFT_INTERRUPT_GRACE": "60"})
    try:
        wait_for(lambda: slow_service.chats(), 240, "the first /chat request", proc)
        proc.signal(signal.SIGINT)
        wait_for(lambda: "stopping" in proc.stderr, 10, "the first Ctrl-C to be acknowledged", proc)
        t = proc.signal(signal.SIGINT)
        rc = proc.wait(timeout=10)
        took = time.monotonic() - t
    finally:
        proc.kill()
    assert rc == 130, proc.stderr
    assert took < 3, f"{took:.1f} s after the second Ctrl-C"


def test_after_sigkill_the_next_run_marks_the_flow_run_crashed_and_cleans_work_folders(prefect_server, workspace,
                                                                                        tmp_path, photos):
    recipe = local_recipe(tmp_path, photos)
    out = tmp_path / "o"
    proc = Proc(tmp_path, "run", recipe, "--out", out)
    try:
        wait_for(lambda: work_files(workspace, "*.mp4"), 240, "the video step to start", proc)
        proc.signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()
    (active,) = list((workspace / "runs" / "active").glob("*.json"))
    rid = json.loads(active.read_text())["flow_run_id"]
    assert flow_run(rid).state.type.value == "RUNNING"  # what a killed process leaves behind
    assert work_files(workspace)

    res = run_cli("run", recipe, "--out", out, "--json", "--set", "steps.video.with.duration=1",
                  "--set", "steps.video.with.fps=4")
    assert res.returncode == 0, res.stderr
    assert f"flow run {rid}" in res.stderr and "marked Crashed" in res.stderr, res.stderr
    assert flow_run(rid).state.type.value == "CRASHED"
    assert all(tr.state.is_final() for tr in task_runs(rid))
    assert work_files(workspace) == [] and not active.exists()
    assert json.loads(res.stdout)["cached"] == 2


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_a_one_shot_command_and_leaves_nothing(tmp_path, photos, sig, code):
    systmp = tmp_path / "systmp"
    systmp.mkdir()
    out = tmp_path / "clip.mp4"
    proc = Proc(tmp_path, "parallax", photos["astronaut"], "-o", out, "--duration", "600", "--fps", "30",
                env={"TMPDIR": str(systmp)})
    try:
        wait_for(lambda: [p for p in systmp.rglob("*.mp4")], 120, "the video to be encoded", proc)
        t = proc.signal(sig)
        rc = proc.wait(timeout=15)
        took = time.monotonic() - t
    finally:
        proc.kill()
    assert rc == code, proc.stderr
    assert took < 8
    assert "Traceback" not in proc.stderr
    assert not out.exists() and list(systmp.iterdir()) == [] and no_temp_files(tmp_path / "systmp")


def test_sigterm_stops_reproduce(prefect_server, workspace, tmp_path, photos):
    recipe = local_recipe(tmp_path, photos)
    res = run_cli("run", recipe, "--out", tmp_path / "a", "--json", "--set", "steps.video.with.duration=1",
                  "--set", "steps.video.with.fps=4")
    assert res.returncode == 0, res.stderr
    man = json.loads(Path(json.loads(res.stdout)["manifest"]).read_text())
    man["recipe"]["overrides"] = []  # reproduce the 600 s video: long enough to be stopped
    m = tmp_path / "m" / "manifest.json"
    m.parent.mkdir()
    m.write_text(json.dumps(man))
    proc = Proc(tmp_path, "reproduce", m, "--out", tmp_path / "b")
    try:
        wait_for(lambda: work_files(workspace, "*.mp4"), 240, "the video step to start", proc)
        t = proc.signal(signal.SIGTERM)
        rc = proc.wait(timeout=15)
        took = time.monotonic() - t
    finally:
        proc.kill()
    assert rc == 143 and took < 10, proc.stderr
    rid = run_id_from(proc.stderr)
    assert flow_run(rid).state.type.value == "CANCELLED", proc.stderr + "\nstates: " + state_history(rid)
    assert work_files(workspace) == []


def test_a_killed_one_shot_leaves_no_partial_video_for_good(tmp_path):
    """A one-shot command keeps its partial video in a temporary folder named after its
    process; killed with kill -9, that folder is removed by the next one-shot command."""
    import skimage.data as sd

    from depthcraft.tasks.lib.images import write_image

    tmpdir = tmp_path / "systmp"
    tmpdir.mkdir()
    env = {**os.environ, "TMPDIR": str(tmpdir), "DEPTHCRAFT_OFFLINE": "1"}
    photo = write_image(tmp_path / "photo.png", sd.coffee()[::4, ::4].copy())
    proc = subprocess.Popen(DEPTHCRAFT + ["--workspace", str(tmp_path / "ws"), "parallax", str(photo), "-o",
                                          str(tmp_path / "long.mp4"), "--duration", "600", "--provider", "classic"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 120
        partial = []
        while not partial and time.monotonic() < end and proc.poll() is None:
            partial = [p for p in tmpdir.glob("depthcraft-*/**/*.mp4") if p.stat().st_size > 0]
            time.sleep(0.2)
        assert partial, "the one-shot never wrote its video"
    finally:
        proc.kill()
        proc.wait(30)
    assert any(tmpdir.glob("depthcraft-*"))  # what kill -9 left
    r = subprocess.run(DEPTHCRAFT + ["--workspace", str(tmp_path / "ws"), "estimate", str(photo), "-o",
                                     str(tmp_path / "d.png"), "--provider", "classic"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert not list(tmpdir.glob("depthcraft-*")), list(tmpdir.rglob("*"))
