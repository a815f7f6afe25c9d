"""``depthcraft deploy`` and ``depthcraft serve``: recipes as Prefect deployments.

Also :func:`list_runs`, the data behind ``depthcraft runs``: flow runs read from the Prefect
API (state, duration) joined with the output folder that the workspace's ``runs.jsonl`` holds.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

from .workspace import Workspace


def _console():
    from rich.console import Console

    # soft_wrap: a long line (an API URL, a path) is left to the terminal, never broken by rich
    return Console(stderr=True, highlight=False, soft_wrap=True)


def cmd_deploy(a) -> int:
    from .cli_inert import refuse_deploy_options
    from .recipe import load_recipe
    from .server import ensure_api

    refuse_deploy_options(a)  # --work-queue without --work-pool, --dask-address with threads

    load_recipe(a.recipe, overrides=a.set)  # a bad recipe fails before any server starts
    ws = Workspace.default(a.workspace)
    url = ensure_api(ws, watch=True)
    from .deploy import deploy

    info = deploy(a.recipe, name=a.name, overrides=a.set, out_root=a.out, workspace=str(ws.root), cron=a.cron,
                  interval=a.interval, rrule=a.rrule, timezone=a.timezone, work_pool=a.work_pool,
                  work_queue=a.work_queue, task_runner=a.task_runner, dask_address=a.dask_address,
                  paused=True if a.paused else None, replace=a.replace)
    if a.json:
        print(json.dumps(info, default=str, indent=1))
        return 0
    con = _console()
    con.print(f"deployment [bold]{info['full_name']}[/] ({info['id']}) on {url}")
    con.print(f"  schedule: {info['schedule'] or 'none (runs only when triggered)'}"
              + ("  [yellow]paused[/]" if a.paused else ""))
    for r in info["upcoming"]:
        con.print(f"  next: {r['expected_start'].astimezone().strftime('%Y-%m-%d %H:%M %Z')}  ({r['name']})")
    if info["work_pool"]:
        if info["created_pool"]:
            con.print(f"  created process work pool {info['work_pool']!r}")
        con.print(f"  entrypoint {info['entrypoint']}; wrote {info['prefect_yaml']}")
        con.print(f"runs execute on a worker: [bold]prefect worker start --pool {info['work_pool']}[/]")
    else:
        con.print(f"runs execute where the recipe is served: [bold]depthcraft serve {a.recipe}[/] "
                  "(serves this recipe's deployments with their schedules)")
    con.print(f"trigger one now: prefect deployment run '{info['full_name']}'")
    return 0


def cmd_serve(a) -> int:
    from .cli_inert import refuse_runner_options
    from .recipe import load_recipe
    from .server import ensure_api

    refuse_runner_options(a)  # --dask-address with --task-runner threads

    for r in a.recipes:
        load_recipe(r, overrides=a.set)
    ws = Workspace.default(a.workspace)
    ensure_api(ws, watch=True)
    from .deploy import serve

    return serve(a.recipes, overrides=a.set, out_root=a.out, workspace=str(ws.root), limit=a.limit,
                 task_runner=a.task_runner, dask_address=a.dask_address, replace=a.replace)


def cmd_pause(a) -> int:
    """``depthcraft pause|resume FLOW/NAME...``: a deployment's schedules stop (or start again)
    making runs; Prefect 3 has no command for the deployment's own paused state."""
    from .deploy import check_full_names, set_paused
    from .server import ensure_api

    check_full_names(a.deployments)  # (before a server is started for nothing)
    ensure_api(Workspace.default(a.workspace))
    paused = a.command == "pause"
    names = list(dict.fromkeys(a.deployments))  # (a name given twice: said once, not "paused" twice)
    changed = set_paused(names, paused)
    con = _console()
    for name in names:
        was = "" if name in changed else " (it already was)"
        con.print(f"{name}: {'paused: its schedule makes no runs' if paused else 'resumed'}{was}", highlight=False)
    return 0


def register(sub) -> None:
    d = sub.add_parser("deploy", help="register a recipe as a Prefect deployment (schedule, work pool)",
                       description="Register a recipe as a Prefect deployment whose parameters are the recipe. "
                       "Without --work-pool, `depthcraft serve RECIPE` runs it; with one, a Prefect worker does.")
    d.add_argument("recipe", help="the recipe YAML file")
    g = d.add_mutually_exclusive_group()
    g.add_argument("--cron", help="cron schedule, e.g. '0 2 * * *' (replaces the recipe's schedule)")
    g.add_argument("--interval", help="interval schedule: seconds or 90s, 15m, 6h, 1d")
    g.add_argument("--rrule", help="RFC 5545 rule, e.g. 'FREQ=WEEKLY;BYDAY=MO;BYHOUR=6'")
    d.add_argument("--timezone", help="IANA timezone of the schedule, e.g. Europe/Paris (default UTC)")
    d.add_argument("--name", help="deployment name (default: the recipe's name)")
    d.add_argument("--work-pool", help="register against this Prefect work pool (a process pool is created if "
                   "missing) and write prefect.yaml next to the recipe")
    d.add_argument("--work-queue", help="work queue within the pool")
    d.add_argument("--paused", action="store_true", help="register the schedule paused")
    d.add_argument("--replace", action="store_true", help="take over a deployment of the same name that runs "
                   "another recipe file (refused otherwise)")
    _common(d)
    d.add_argument("--json", action="store_true", help="print the deployment as JSON on stdout")
    d.set_defaults(func=cmd_deploy)

    s = sub.add_parser("serve", help="serve one or more recipes as Prefect deployments until stopped",
                       description="Serve recipes (prefect.serve): registers their deployments and schedules and "
                       "runs every scheduled or triggered run here, until Ctrl-C.")
    s.add_argument("recipes", nargs="+", metavar="RECIPE", help="recipe YAML files")
    s.add_argument("--limit", type=int, help="at most this many runs at once")
    s.add_argument("--replace", action="store_true", help="take over a deployment of the same name that runs "
                   "another recipe file, or that another serve of this workspace is serving: that serve is "
                   "stopped (SIGTERM) and hands its unfinished runs back (refused otherwise)")
    _common(s)
    s.set_defaults(func=cmd_serve)

    for verb, what in (("pause", "pause deployments: their schedules make no runs until resumed"),
                       ("resume", "resume paused deployments: their schedules make runs again")):
        p = sub.add_parser(verb, help=what, description=what[0].upper() + what[1:] + ".")
        p.add_argument("deployments", nargs="+", metavar="FLOW/NAME",
                       help="full deployment name, as `depthcraft serve` prints it (e.g. depthcraft-nightly/nightly)")
        p.set_defaults(func=cmd_pause)


def _common(p) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value for every run (repeatable)")
    p.add_argument("--out", help="output root of the runs (default: the current folder)")
    p.add_argument("--task-runner", choices=["threads", "dask"], help="override the recipe's task runner")
    p.add_argument("--dask-address", help="tcp://host:port of an existing Dask scheduler")


# -- depthcraft runs -------------------------------------------------------------------------
def _api_url(ws: Workspace) -> str | None:
    """The API to read runs from, without starting anything: PREFECT_API_URL or our running server."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    from .server import status

    st = status(ws)
    return st["url"] if st else None


def _recipe_name(flow_name: str, params: dict) -> str:
    text = params.get("recipe_text") if isinstance(params, dict) else None
    if text:
        try:
            import yaml

            name = (yaml.safe_load(text) or {}).get("name")
            if name:
                return str(name)
        except Exception:  # noqa: BLE001 - fall back to the flow's name
            pass
    return flow_name.removeprefix("depthcraft-")


def _jsonl(ws: Workspace) -> list[dict]:
    p = ws.runs / "runs.jsonl"
    rows = []
    if p.exists():
        for line in p.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass
    return rows


def list_runs(ws: Workspace, recipe: str | None = None, limit: int = 20) -> list[dict]:
    """Recent runs, newest first: {run_id, name, recipe, state, start, duration_s, out_dir,
    computed, cached, failed, deployment}.

    Reads flow runs of the ``depthcraft-*`` flows from the Prefect API (upcoming scheduled runs
    left out) and takes each run's output folder and counts from ``runs.jsonl``. Without a
    reachable API (no server running), the runs.jsonl records alone are listed.
    """
    recorded = _jsonl(ws)
    by_id = {r.get("run_id"): r for r in recorded if r.get("run_id")}
    url = _api_url(ws)
    rows: list[dict] = []
    if url:
        os.environ.setdefault("PREFECT_API_URL", url)
        try:
            rows = _api_runs(recipe, limit, by_id)
        except Exception:  # noqa: BLE001 - API down: the local records still answer
            rows = []
            url = None
    if not url:
        for r in recorded[::-1]:
            if recipe and r.get("recipe") != recipe:
                continue
            rows.append({"run_id": r.get("run_id"), "name": None, "recipe": r.get("recipe"),
                         "state": "Failed" if r.get("failed") else "Completed", "start": r.get("time"),
                         "duration_s": r.get("duration_s"), "out_dir": r.get("out_dir"),
                         "computed": r.get("computed"), "cached": r.get("cached"), "failed": r.get("failed"),
                         "deployment": None})
            if len(rows) >= limit:
                break
    return rows


def _api_runs(recipe: str | None, limit: int, by_id: dict) -> list[dict]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (FlowFilter, FlowFilterId, FlowFilterName, FlowRunFilter, FlowRunFilterState,
                                                FlowRunFilterStateType)
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    now = dt.datetime.now(dt.timezone.utc)
    out: list[dict] = []
    with get_client(sync_client=True) as client:
        flows = {f.id: f.name for f in client.read_flows(flow_filter=FlowFilter(name=FlowFilterName(like_="depthcraft-")))}
        if not flows:
            return []
        deployments: dict = {}
        offset = 0
        while len(out) < limit:
            batch = client.read_flow_runs(
                flow_filter=FlowFilter(id=FlowFilterId(any_=list(flows))),
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                    type=FlowRunFilterStateType(not_any_=[StateType.SCHEDULED]))),
                sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=200, offset=offset)
            if not batch:
                break
            offset += len(batch)
            for fr in batch:
                name = _recipe_name(flows.get(fr.flow_id, ""), fr.parameters)
                if recipe and name != recipe:
                    continue
                rec = by_id.get(str(fr.id), {})
                start = fr.start_time or fr.expected_start_time
                if fr.end_time and fr.start_time:
                    dur = (fr.end_time - fr.start_time).total_seconds()
                elif fr.start_time and fr.state and fr.state.is_running():
                    dur = (now - fr.start_time).total_seconds()
                else:
                    dur = fr.total_run_time.total_seconds() if fr.total_run_time else None
                dep = None
                if fr.deployment_id:
                    if fr.deployment_id not in deployments:
                        try:
                            deployments[fr.deployment_id] = client.read_deployment(fr.deployment_id).name
                        except Exception:  # noqa: BLE001 - a deleted deployment
                            deployments[fr.deployment_id] = None
                    dep = deployments[fr.deployment_id]
                out.append({"run_id": str(fr.id), "name": fr.name, "recipe": name,
                            "state": fr.state.name if fr.state else "?",
                            "start": start.astimezone().strftime("%Y-%m-%dT%H:%M:%S") if start else None,
                            "duration_s": dur, "out_dir": rec.get("out_dir") or (fr.parameters or {}).get("out_root"),
                            "computed": rec.get("computed"), "cached": rec.get("cached"), "failed": rec.get("failed"),
                            "deployment": dep})
                if len(out) >= limit:
                    break
    return out


def print_runs(rows: list[dict], title: str = "recent runs") -> None:
    """The table ``depthcraft runs`` prints."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for c in ("start", "recipe", "run", "deployment", "state", "s", "computed", "cached", "failed", "output"):
        t.add_column(c)
    colors = {"Completed": "green", "Cached": "green", "Failed": "red", "Crashed": "red", "Running": "cyan"}
    for r in rows:
        st = r["state"] or "?"
        dur = f"{r['duration_s']:.1f}" if isinstance(r.get("duration_s"), (int, float)) else "-"
        t.add_row(str(r.get("start") or "-"), str(r.get("recipe")), str(r.get("name") or "-"),
                  str(r.get("deployment") or "-"), f"[{colors.get(st, 'white')}]{st}[/]", dur,
                  *(str(r[k]) if r.get(k) is not None else "-" for k in ("computed", "cached", "failed")),
                  str(r.get("out_dir") or "-"))
    Console().print(t)


def cmd_runs(a) -> int:
    """``depthcraft runs [RECIPE]``: state and duration from the Prefect API, output folders from the workspace."""
    name = a.recipe
    if name and Path(name).exists():
        from .recipe import load_recipe

        name = load_recipe(name)[0].name
    ws = Workspace.default(a.workspace)
    rows = list_runs(ws, name, a.limit)
    if getattr(a, "json", False):
        print(json.dumps(rows, default=str, indent=1))
        return 0
    print_runs(rows, title=f"recent runs of {name}" if name else "recent runs")
    return 0
