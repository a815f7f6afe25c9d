"""Recipes as Prefect deployments, against a real Prefect server on loopback.

A cron schedule with a timezone shows the right upcoming runs; a run triggered through the API
is picked up by ``depthcraft serve`` and writes its outputs (with inputs resolved when the run
starts, so a photo added after deploying is processed); a work-pool deployment runs on a real
Prefect process worker; ``depthcraft runs`` reads them back with state and output folder.
Prefect-facing code runs in subprocesses (the real command line) or after the
``prefect_server`` fixture has pointed this process at the server.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from conftest import DEPTHCRAFT, run_cli

NIGHTLY = """\
version: 1
name: {name}
inputs:
  images: ["photos/*.png"]
steps:
  - {{id: depth, uses: estimate}}
  - {{id: files, uses: export, from: depth, with: {{formats: [grayscale]}}}}
output: out/{{recipe}}/{{image}}/
{schedule}
"""


def write_recipe(folder: Path, name: str, photos: list[Path], schedule: str = "") -> Path:
    (folder / "photos").mkdir(parents=True, exist_ok=True)
    for p in photos:
        shutil.copy(p, folder / "photos" / p.name)
    r = folder / f"{name}.yaml"
    r.write_text(NIGHTLY.format(name=name, schedule=schedule))
    return r


def client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def wait_final(run_id: str, timeout: float = 240.0):
    deadline = time.time() + timeout
    with client() as c:
        while time.time() < deadline:
            fr = c.read_flow_run(run_id)
            if fr.state and fr.state.is_final():
                return fr
            time.sleep(1.0)
    raise AssertionError(f"flow run {run_id} did not finish within {timeout:.0f} s (state {fr.state.name})")


# -- schedules (no server) -------------------------------------------------------------------
def test_schedule_from_recipe_and_flags(tmp_path):
    from depthcraft.flows.deploy import parse_duration, schedule_spec
    from depthcraft.flows.recipe import load_recipe
    from depthcraft.tasks.lib.errors import RecipeError

    assert parse_duration("1h30m") == 5400 and parse_duration("1d") == 86400 and parse_duration(90) == 90
    r = tmp_path / "r.yaml"
    r.write_text(NIGHTLY.format(name="s", schedule='schedule: {cron: "0 2 * * *", timezone: Europe/Paris}'))
    (tmp_path / "photos").mkdir()
    recipe, src = load_recipe(r)
    spec = schedule_spec(recipe, src)
    s = spec.to_prefect()
    assert (s.cron, s.timezone) == ("0 2 * * *", "Europe/Paris")
    # flags replace the recipe's schedule; the recipe's timezone stays unless --timezone is given
    assert schedule_spec(recipe, src, interval="15m").to_prefect().interval == dt.timedelta(minutes=15)
    assert schedule_spec(recipe, src, cron="5 4 * * 1").to_prefect().timezone == "Europe/Paris"
    assert schedule_spec(recipe, src, timezone="Asia/Tokyo").to_prefect().timezone == "Asia/Tokyo"

    # errors name the recipe file, its line and the key
    r.write_text(NIGHTLY.format(name="s", schedule="schedule:\n  cron: 0 2 * *\n  timezone: Mars/Olympus"))
    with pytest.raises(RecipeError) as e:
        schedule_spec(*load_recipe(r))
    assert "r.yaml:9" in str(e.value) and "Mars/Olympus" in str(e.value)
    r.write_text(NIGHTLY.format(name="s", schedule="schedule:\n  cron: '0 2 * * *'\n  interval: 1h"))
    with pytest.raises(RecipeError, match="exactly one of cron, interval or rrule"):
        schedule_spec(*load_recipe(r))
    r.write_text(NIGHTLY.format(name="s", schedule="schedule:\n  cron: '61 2 * * *'"))
    with pytest.raises(RecipeError) as e:
        schedule_spec(*load_recipe(r))
    assert "r.yaml:9" in str(e.value) and "schedule" in str(e.value)
    from depthcraft.flows.deploy import OptionError

    with pytest.raises(OptionError, match="^--interval: "):
        schedule_spec(*load_recipe(r), interval="soon")


# -- deployments on a real server ------------------------------------------------------------
def test_deploy_cron_shows_the_right_upcoming_runs(prefect_server, tmp_path, photos):
    recipe = write_recipe(tmp_path, "nightly", [photos["astronaut"]],
                          'schedule: {cron: "30 3 * * *", timezone: America/New_York}')
    r = run_cli("deploy", recipe, "--set", "steps.files.with.formats=[npy]", "--out", tmp_path / "o", "--json",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["full_name"] == "depthcraft-nightly/nightly" and info["schedule"].startswith("cron '30 3 * * *'")

    with client() as c:
        dep = c.read_deployment(info["id"])
    sched = dep.schedules[0].schedule
    assert (sched.cron, sched.timezone) == ("30 3 * * *", "America/New_York")
    # the deployment's parameters are the recipe (text and path), the overrides and the roots
    assert dep.parameters["recipe_text"] == recipe.read_text()
    assert dep.parameters["recipe_file"] == str(recipe.resolve())
    assert dep.parameters["overrides"] == ["steps.files.with.formats=[npy]"]
    assert dep.parameters["out_root"] == str((tmp_path / "o").resolve())

    from depthcraft.flows.deploy import upcoming_runs

    runs = upcoming_runs(info["id"], limit=10)
    assert len(runs) >= 3
    ny = ZoneInfo("America/New_York")
    now = dt.datetime.now(ny)
    nxt = now.replace(hour=3, minute=30, second=0, microsecond=0)
    if nxt <= now:
        nxt += dt.timedelta(days=1)
    expected = []
    for _ in range(len(runs)):  # 03:30 New York time on consecutive days (wall clock, across DST)
        expected.append(nxt)
        nxt = (nxt + dt.timedelta(days=1)).replace(hour=3, minute=30)
    got = [x["expected_start"].astimezone(ny) for x in runs]
    assert [g.replace(tzinfo=None) for g in got] == [e.replace(tzinfo=None) for e in expected]

    # deploying again updates the same deployment; --cron replaces the schedule
    r = run_cli("deploy", recipe, "--cron", "0 6 * * 1", "--timezone", "UTC", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    again = json.loads(r.stdout)
    assert again["id"] == info["id"]
    starts = [x["expected_start"] for x in upcoming_runs(info["id"])]
    assert starts and all(s.weekday() == 0 and (s.hour, s.minute) == (6, 0) for s in starts)

    # a bad schedule is refused with the recipe line, before anything is registered
    bad = tmp_path / "bad.yaml"
    bad.write_text(NIGHTLY.format(name="bad", schedule="schedule: {cron: 'every night'}"))
    r = run_cli("deploy", bad, cwd=tmp_path)
    assert r.returncode != 0 and "bad.yaml:" in r.stderr and "cron" in r.stderr


def test_triggered_run_is_served_and_sees_new_photos(prefect_server, tmp_path, photos):
    ws = tmp_path / "ws"
    recipe = write_recipe(tmp_path, "served", [photos["astronaut"]], 'schedule: {interval: 1d}')
    r = run_cli("--workspace", ws, "deploy", recipe, "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    # a photo that arrives after deploying: inputs are resolved when the run starts
    shutil.copy(photos["chelsea"], tmp_path / "photos" / "chelsea.png")
    with client() as c:
        fr = c.create_flow_run_from_deployment(info["id"])

    env = dict(os.environ, PREFECT_RUNNER_POLL_FREQUENCY="2")
    serve = subprocess.Popen([*DEPTHCRAFT, "--workspace", str(ws), "serve", str(recipe)], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        done = wait_final(str(fr.id))
    finally:
        os.killpg(serve.pid, signal.SIGINT)
        try:
            log = serve.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            log = serve.communicate()[0]
    assert done.state.is_completed(), f"{done.state.name}: {done.state.message}\n{log[-3000:]}"
    out = tmp_path / "out" / "served"
    assert (out / "astronaut" / "files.png").stat().st_size > 0
    assert (out / "chelsea" / "files.png").stat().st_size > 0
    assert done.name.startswith("served-")  # named when it ran, not when it was deployed

    from depthcraft.flows.cli_deploy import list_runs
    from depthcraft.flows.workspace import Workspace

    rows = list_runs(Workspace.default(ws), "served")
    row = next(x for x in rows if x["run_id"] == str(fr.id))
    assert row["state"] == "Completed" and row["deployment"] == "served" and row["computed"] == 4
    assert row["duration_s"] > 0 and Path(row["out_dir"]).is_relative_to(out)
    r = run_cli("--workspace", ws, "runs", "served")  # the command line prints it
    assert r.returncode == 0 and "served" in r.stdout


def test_work_pool_deployment_runs_on_a_process_worker(prefect_server, tmp_path, photos):
    ws = tmp_path / "ws"
    recipe = write_recipe(tmp_path, "pooled", [photos["coffee"]])
    pool = f"pool-{os.getpid()}"
    r = run_cli("--workspace", ws, "deploy", recipe, "--work-pool", pool, "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["created_pool"] and info["entrypoint"] == "depthcraft.flows.runner.recipe_flow" and info["upcoming"] == []
    import yaml

    doc = yaml.safe_load(Path(info["prefect_yaml"]).read_text())
    entry = next(d for d in doc["deployments"] if d["name"] == "pooled")
    assert entry["work_pool"]["name"] == pool and entry["entrypoint"] == "depthcraft.flows.runner.recipe_flow"
    assert entry["parameters"]["recipe_file"] == str(recipe.resolve())
    # deploying again with a schedule updates its entry in prefect.yaml, keeping one
    r = run_cli("--workspace", ws, "deploy", recipe, "--work-pool", pool, "--cron", "0 1 * * *", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = yaml.safe_load(Path(info["prefect_yaml"]).read_text())
    assert [d["name"] for d in doc["deployments"]] == ["pooled"]
    assert doc["deployments"][0]["schedules"][0]["cron"] == "0 1 * * *"

    with client() as c:
        fr = c.create_flow_run_from_deployment(info["id"])
    # `python -m prefect`: a venv need not have the `prefect` script beside its python
    worker = subprocess.run([DEPTHCRAFT[0], "-m", "prefect", "worker", "start", "--pool", pool,
                             "--run-once"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    done = wait_final(str(fr.id), timeout=60)
    assert done.state.is_completed(), worker.stdout[-3000:] + worker.stderr[-3000:]
    assert (tmp_path / "out" / "pooled" / "coffee" / "files.png").exists()
