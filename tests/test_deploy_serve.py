"""``deploy`` then ``serve``, as a user follows deploy's own instruction, against a real Prefect
server on loopback: serve keeps the deployment deploy made (its name and schedule) and runs it,
stopping serve neither pauses the schedule nor leaves a run Pending, and exits 130 / 143
without a traceback. Also: one deployment name for two recipe files is refused, cron is the
standard 5-field kind that fires, and errors name the option at fault.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import pytest

from conftest import DEPTHCRAFT, run_cli
from test_deploy import NIGHTLY, client, wait_final, write_recipe


class Serve:
    """``depthcraft serve`` in a session of its own (as a terminal runs it), output collected."""

    def __init__(self, *args, cwd):
        env = dict(os.environ, PREFECT_RUNNER_POLL_FREQUENCY="1")
        self.p = subprocess.Popen([*DEPTHCRAFT, *map(str, args)], cwd=cwd, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(self.p.stdout), daemon=True).start()

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 120.0) -> None:
        deadline = time.time() + timeout
        while text not in self.log:
            assert self.p.poll() is None, f"serve exited {self.p.returncode}:\n{self.log[-3000:]}"
            assert time.time() < deadline, f"no {text!r} within {timeout:.0f} s:\n{self.log[-3000:]}"
            time.sleep(0.2)

    def stop(self, sig=signal.SIGINT, group=True, timeout=60) -> int:
        if self.p.poll() is None:
            os.killpg(self.p.pid, sig) if group else self.p.send_signal(sig)
        try:
            rc = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)
            raise
        time.sleep(0.3)  # the reader thread takes the last lines
        return rc


def test_serve_runs_the_deployment_deploy_made_and_keeps_its_schedule(prefect_server, tmp_path, photos):
    ws = tmp_path / "ws"
    recipe = write_recipe(tmp_path, "nb", [photos["coffee"]])
    r = run_cli("--workspace", ws, "deploy", recipe, "--name", "dep1", "--cron", "0 3 * * *", "--out",
                tmp_path / "o", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"depthcraft serve {recipe}" in r.stderr  # deploy's own instruction, followed below
    with client() as c:
        dep = c.read_deployment_by_name("depthcraft-nb/dep1")
        fr = c.create_flow_run_from_deployment(dep.id)

    s = Serve("--workspace", ws, "serve", recipe, cwd=tmp_path)
    try:
        s.wait_for("serving ")
        done = wait_final(str(fr.id), timeout=120)
    finally:
        rc = s.stop(signal.SIGTERM, group=False)
    assert "serving depthcraft-nb/dep1 (cron '0 3 * * *' (UTC))" in s.log, s.log
    assert done.state.is_completed(), f"{done.state.name}\n{s.log[-3000:]}"
    assert (tmp_path / "o" / "out" / "nb" / "coffee" / "files.png").exists()  # deploy's --out kept
    assert rc == 143 and "Traceback" not in s.log, s.log[-3000:]
    assert "schedules stay active" in s.log
    with client() as c:
        after = c.read_deployment(dep.id)
        names = [d.name for d in c.read_deployments() if d.flow_id == after.flow_id]
    assert [x.schedule.cron for x in after.schedules] == ["0 3 * * *"]
    assert not after.paused and names == ["dep1"]  # no second deployment named after the recipe


def _run_process_sigint_blocked(serve_pid: int, timeout: float = 30.0) -> bool:
    """True when serve's flow-run child process (multiprocessing spawn) has SIGINT in its blocked mask."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for st in os.listdir("/proc"):
            if not st.isdigit():
                continue
            try:
                status = open(f"/proc/{st}/status").read()
                cmd = open(f"/proc/{st}/cmdline", "rb").read()
            except OSError:
                continue
            fields = dict(ln.split(":\t", 1) for ln in status.splitlines() if ":\t" in ln)
            if int(fields.get("PPid", "0")) == serve_pid and b"spawn_main" in cmd:
                return bool(int(fields["SigBlk"], 16) & (1 << (signal.SIGINT - 1)))
        time.sleep(0.05)
    raise AssertionError("serve started no flow-run process")


def test_ctrl_c_of_serve_cancels_its_unfinished_run(prefect_server, tmp_path, photos):
    ws = tmp_path / "ws"
    recipe = write_recipe(tmp_path, "cc", [photos["astronaut"], photos["chelsea"], photos["coffee"]])
    s = Serve("--workspace", ws, "serve", recipe, cwd=tmp_path)
    try:
        s.wait_for("serving depthcraft-cc/cc (no schedule)")
        with client() as c:
            fr = c.create_flow_run_from_deployment(c.read_deployment_by_name("depthcraft-cc/cc").id)
            deadline = time.time() + 60
            while c.read_flow_run(fr.id).state.is_scheduled():  # picked up: Pending, its process starting
                assert time.time() < deadline, s.log[-3000:]
                time.sleep(0.1)
        # the run's interpreter starts with SIGINT blocked: the group's Ctrl-C cannot interrupt its
        # imports (a traceback of its own); serve stops it
        blocked = _run_process_sigint_blocked(s.p.pid)
    finally:
        rc = s.stop(signal.SIGINT)  # the terminal's Ctrl-C: the whole process group
    assert blocked, s.log[-3000:]
    assert rc == 130, s.log[-3000:]
    assert "Traceback" not in s.log and "CancelledError" not in s.log, s.log[-5000:]
    with client() as c:
        state = c.read_flow_run(fr.id).state
        dep = c.read_deployment_by_name("depthcraft-cc/cc")
    assert state.type.value in ("CANCELLED", "CRASHED"), state  # never left Pending / Running
    assert not dep.paused


def test_one_name_for_two_recipe_files_is_refused(prefect_server, tmp_path, photos):
    a = write_recipe(tmp_path / "a", "twin", [photos["coffee"]])
    b = write_recipe(tmp_path / "b", "twin", [photos["coffee"]])
    r = run_cli("deploy", a, "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    first = json.loads(r.stdout)
    r = run_cli("deploy", b, cwd=tmp_path)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1 and str(a.resolve()) in line and "--replace" in line, line
    with client() as c:
        assert c.read_deployment(first["id"]).parameters["recipe_file"] == str(a.resolve())
    # serve of the other file is refused the same way
    r = run_cli("serve", b, cwd=tmp_path, timeout=120)
    assert r.returncode != 0 and str(a.resolve()) in r.stderr and "Traceback" not in r.stderr
    # the same file again is an update; --replace takes the name over
    assert run_cli("deploy", a, cwd=tmp_path).returncode == 0
    r = run_cli("deploy", b, "--replace", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["id"] == first["id"]
    with client() as c:
        assert c.read_deployment(first["id"]).parameters["recipe_file"] == str(b.resolve())


@pytest.mark.parametrize("args, expected", [
    (["--cron", "0 2 * * *", "--timezone", "Mars/X"], "error: --timezone: unknown timezone 'Mars/X'"),
    (["--cron", "0 2 * * * *"], "error: --cron: '0 2 * * * *' has 6 field(s)"),
    (["--cron", "0 2 30 2 *"], "error: --cron: '0 2 30 2 *' never fires"),
    (["--cron", "every night"], "error: --cron: 'every night' has 2 field(s)"),
    (["--interval", "soon"], "error: --interval: interval 'soon' is not a duration"),
    (["--rrule", "FREQ=SOMETIMES"], "error: --rrule: "),
    (["--timezone", "UTC"], "error: --timezone: needs a schedule"),
    (["--name", "a b"], "error: --name: 'a b'"),
])
def test_schedule_errors_name_the_option(prefect_server, tmp_path, photos, args, expected):
    recipe = write_recipe(tmp_path, "opt", [photos["coffee"]])
    r = run_cli("deploy", recipe, *args, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith(expected), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "<recipe>" not in r.stderr
    option = expected.split()[1].rstrip(":")
    assert r.stderr.count(option) == 1  # the option once, not "--cron: --cron:"


def test_recipe_cron_errors_name_the_recipe_line(tmp_path):
    from depthcraft.flows.deploy import schedule_spec
    from depthcraft.flows.recipe import load_recipe
    from depthcraft.tasks.lib.errors import RecipeError

    (tmp_path / "photos").mkdir()
    r = tmp_path / "r.yaml"
    for cron, why in (("0 2 * * * *", "6 field"), ("0 2 30 2 *", "never fires")):
        r.write_text(NIGHTLY.format(name="s", schedule=f"schedule:\n  cron: '{cron}'"))
        with pytest.raises(RecipeError) as e:
            schedule_spec(*load_recipe(r))
        assert "r.yaml:9" in str(e.value) and why in str(e.value)
    # the recipe's timezone is the recipe's fault even when --cron replaces its cron
    r.write_text(NIGHTLY.format(name="s", schedule="schedule:\n  cron: '0 2 * * *'\n  timezone: Mars/X"))
    with pytest.raises(RecipeError) as e:
        schedule_spec(*load_recipe(r), cron="0 4 * * *")
    assert "r.yaml:11" in str(e.value) and "Mars/X" in str(e.value)
    r.write_text(NIGHTLY.format(name="s", schedule="schedule:\n  cron: '@daily'"))
    assert schedule_spec(*load_recipe(r)).to_prefect().cron == "@daily"


def test_deploy_output_does_not_break_the_api_url(prefect_server, tmp_path, photos):
    recipe = write_recipe(tmp_path, "wrap", [photos["coffee"]])
    r = run_cli("deploy", recipe, env={"COLUMNS": "40"}, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    first = r.stderr.splitlines()[0]
    assert first.startswith("deployment depthcraft-wrap/wrap (") and first.endswith(f" on {prefect_server}"), r.stderr
