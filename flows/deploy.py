"""Prefect deployments from recipes: schedules, served deployments and work pools.

A deployment runs :func:`depthcraft.flows.runner.recipe_flow` with the recipe as its parameters
(``recipe_text``, ``recipe_file``, ``overrides``, ``out_root``, ``workspace``). The recipe's
inputs are resolved when each run starts, so a nightly run over ``photos/*.jpg`` sees the
photos added since the last one, and the content-addressed cache makes unchanged photos free.

Two ways to execute the runs, both Prefect's own:

* ``depthcraft serve RECIPE...`` (``prefect.serve``): the serving process polls the API and
  runs each flow run in a subprocess of its own, until stopped.
* ``depthcraft deploy RECIPE --work-pool NAME``: a deployment bound to a work pool, run by
  ``prefect worker start --pool NAME``. Its entrypoint is a module path
  (``depthcraft.flows.runner.recipe_flow``; ``depthcraft.flows.runner.recipe_flow_dask`` for Dask recipes), which
  works wherever depthcraft is installed; the same deployment is written to ``prefect.yaml``
  next to the recipe for ``prefect deploy``.

Scheduling needs a real Prefect server (``depthcraft.flows.server.ensure_api``): depthcraft's local one,
or the user's own server / Prefect Cloud through ``PREFECT_API_URL``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from depthcraft.tasks.lib.errors import DepthcraftError, RecipeError

from .recipe import Recipe, RecipeSource, load_recipe
from .workspace import Workspace

_DURATION_RE = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)d)?\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*"
                          r"(?:(\d+(?:\.\d+)?)s)?\s*$")


class ScheduleSpec(BaseModel):
    """A recipe's ``schedule:``: exactly one of cron, interval or rrule, and a timezone."""

    model_config = ConfigDict(extra="forbid")

    cron: str | None = Field(None, description="cron expression, e.g. '0 2 * * *' (02:00 every day)")
    interval: float | str | None = Field(None, description="seconds, or a duration such as 90s, 15m, 6h, 1d")
    rrule: str | None = Field(None, description="RFC 5545 rule, e.g. 'FREQ=WEEKLY;BYDAY=MO,FR;BYHOUR=6'")
    timezone: str | None = Field(None, description="IANA timezone of the schedule, e.g. Europe/Paris (default UTC)")
    anchor_date: dt.datetime | None = Field(None, description="interval schedules count from this date")
    active: bool = Field(True, description="false registers the schedule paused")

    @model_validator(mode="after")
    def _one_kind(self):
        kinds = [k for k in ("cron", "interval", "rrule") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("a schedule needs exactly one of cron, interval or rrule"
                             + (f" (got {', '.join(kinds)})" if kinds else ""))
        return self

    def interval_seconds(self) -> float:
        return parse_duration(self.interval)

    def to_prefect(self):
        """The ``prefect.schedules.Schedule`` (raises ValueError on a bad cron/rrule/timezone)."""
        from prefect.schedules import Cron, Interval, RRule

        if self.timezone:
            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown timezone {self.timezone!r} (use an IANA name such as Europe/Paris)") from None
        if self.cron is not None:
            return Cron(self.cron, timezone=self.timezone, active=self.active)
        if self.rrule is not None:
            rule = self.rrule if self.rrule.upper().startswith(("RRULE:", "DTSTART")) else f"RRULE:{self.rrule}"
            return RRule(rule, timezone=self.timezone, active=self.active)
        return Interval(dt.timedelta(seconds=self.interval_seconds()), anchor_date=self.anchor_date,
                        timezone=self.timezone, active=self.active)

    def describe(self) -> str:
        tz = f" ({self.timezone})" if self.timezone else " (UTC)"
        if self.cron is not None:
            return f"cron '{self.cron}'{tz}"
        if self.rrule is not None:
            return f"rrule '{self.rrule}'{tz}"
        return f"every {dt.timedelta(seconds=self.interval_seconds())}"


def parse_duration(v: float | str | None) -> float:
    """Seconds from a number or a duration such as ``90s``, ``15m``, ``6h``, ``1d``, ``1h30m``."""
    if isinstance(v, (int, float)):
        seconds = float(v)
    else:
        m = _DURATION_RE.match(str(v or ""))
        if not m or not any(m.groups()):
            raise ValueError(f"interval {v!r} is not a duration: give seconds or e.g. 90s, 15m, 6h, 1d")
        d, h, mi, s = (float(g) if g else 0.0 for g in m.groups())
        seconds = ((d * 24 + h) * 60 + mi) * 60 + s
    if seconds <= 0:
        raise ValueError(f"interval must be positive (got {v!r})")
    return seconds


def schedule_spec(recipe: Recipe, src: RecipeSource | None = None, *, cron: str | None = None,
                  interval: str | None = None, rrule: str | None = None, timezone: str | None = None
                  ) -> ScheduleSpec | None:
    """The schedule to deploy: command-line flags replace the recipe's ``schedule:``.

    ``--timezone`` alone keeps the recipe's schedule in another timezone. Errors name the
    recipe file, line and key (or the flag).
    """
    flags = {k: v for k, v in (("cron", cron), ("interval", interval), ("rrule", rrule)) if v is not None}
    if flags:
        tz = timezone or ((recipe.schedule or {}).get("timezone") if isinstance(recipe.schedule, dict) else None)
        return _validated({**flags, **({"timezone": tz} if tz else {})}, None, "--" + "/--".join(flags))
    if not recipe.schedule:
        if timezone:
            raise RecipeError("--timezone needs a schedule: add `schedule:` to the recipe or pass --cron, "
                              "--interval or --rrule", key="schedule")
        return None
    data = dict(recipe.schedule)
    if timezone:
        data["timezone"] = timezone
    return _validated(data, src, None)


def _validated(data: dict, src: RecipeSource | None, flag: str | None) -> ScheduleSpec:
    try:
        spec = ScheduleSpec.model_validate(data)
        spec.to_prefect()  # cron, rrule, timezone and interval syntax
        return spec
    except ValidationError as e:
        err = e.errors()[0]
        loc = ("schedule",) + tuple(str(p) for p in err["loc"])
        msg = f"unknown key {loc[-1]!r} (schedule takes: cron, interval, rrule, timezone, anchor_date, active)" \
            if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
    except ValueError as e:
        loc, msg = ("schedule",), str(e)
    if flag:
        raise RecipeError(f"{flag}: {msg}", key=flag)
    if src is not None:
        raise src.error(msg, loc)
    raise RecipeError(msg, key=".".join(loc))


# -- deployments -----------------------------------------------------------------------------
def deployment_parameters(recipe_path: str | Path, *, overrides: list[str] | None = None,
                          out_root: str | None = None, workspace: str | None = None) -> dict:
    """The flow parameters of a recipe's deployment: the recipe text (frozen at deploy time),
    its absolute path (globs resolve next to it, at run time), overrides, output root and workspace."""
    p = Path(recipe_path).resolve()
    return {
        "recipe_text": p.read_text(encoding="utf-8"),
        "recipe_file": str(p),
        "overrides": list(overrides or []),
        "out_root": str(Path(out_root or os.getcwd()).resolve()),
        "workspace": str(Workspace.default(workspace).root),
        "refresh": False,
    }


def flow_run_name() -> str:
    """``<recipe>-YYYYmmdd-HHMMSS``, computed when the run starts (a callable, so every run of
    a deployment gets its own name rather than the one of the moment it was deployed)."""
    from prefect.runtime import flow_run

    return f"{(flow_run.flow_name or 'depthcraft').removeprefix('depthcraft-')}-{time.strftime('%Y%m%d-%H%M%S')}"


def _check_steps(recipe: Recipe, src: RecipeSource) -> None:
    """Step kinds, parameters and the DAG, checked now; inputs are only resolved at run time."""
    from .compile import order_steps, validate_params

    order_steps(recipe, src)
    validate_params(recipe, src)


def _task_runner_kind(recipe: Recipe, task_runner: str | None, dask_address: str | None) -> str:
    return "dask" if dask_address else (task_runner or recipe.task_runner)


@dataclass
class Prepared:
    """A recipe made ready for Prefect: the flow object and the deployment's settings."""

    flow: Any
    name: str
    options: dict
    recipe: Recipe
    spec: ScheduleSpec | None
    entrypoint: str

    def to_deployment(self):
        """A ``RunnerDeployment`` (not yet registered)."""
        from prefect.deployments.runner import EntrypointType

        dep = self.flow.to_deployment(self.name, entrypoint_type=EntrypointType.MODULE_PATH, **self.options)
        dep.entrypoint = self.entrypoint  # the module path of the flow object, not of its function
        return dep


def prepare(recipe_path: str | Path, *, name: str | None = None, overrides: list[str] | None = None,
            out_root: str | None = None, workspace: str | None = None, cron: str | None = None,
            interval: str | None = None, rrule: str | None = None, timezone: str | None = None,
            work_pool: str | None = None, work_queue: str | None = None, task_runner: str | None = None,
            dask_address: str | None = None, paused: bool | None = None) -> Prepared:
    """Check a recipe and make its flow and deployment settings (nothing is registered yet)."""
    recipe, src = load_recipe(recipe_path, overrides=overrides or [])
    _check_steps(recipe, src)
    spec = schedule_spec(recipe, src, cron=cron, interval=interval, rrule=rrule, timezone=timezone)
    params = deployment_parameters(recipe_path, overrides=overrides, out_root=out_root, workspace=workspace)
    dep_name = name or recipe.name
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", dep_name):
        raise RecipeError(f"--name {dep_name!r}: use letters, digits, '.', '_' and '-'", key="--name")
    kind = _task_runner_kind(recipe, task_runner, dask_address)
    options: dict[str, Any] = dict(
        schedule=spec.to_prefect() if spec else None, parameters=params, paused=paused,
        tags=["depthcraft", f"recipe:{recipe.name}"],
        description=recipe.description or f"depthcraft recipe {recipe.name} ({params['recipe_file']})")
    from .runner import flow_for, recipe_flow

    if work_pool:
        # a worker imports the flow by module path (depthcraft is installed where workers run);
        # the Dask settings reach depthcraft.flows.runner.recipe_flow_dask through the job's environment
        flow = recipe_flow.with_options(name=f"depthcraft-{recipe.name}", flow_run_name=flow_run_name)
        options.update(work_pool_name=work_pool, work_queue_name=work_queue,
                       job_variables=_job_variables(recipe, kind, dask_address))
        entry = "depthcraft.flows.runner.recipe_flow_dask" if kind == "dask" else "depthcraft.flows.runner.recipe_flow"
    else:
        # served: the serving process runs this very flow object (task runner included)
        runner = None
        if kind == "dask":
            from .scale import dask_runner

            runner = dask_runner(recipe, address=dask_address)
        flow = flow_for(recipe, task_runner=runner).with_options(flow_run_name=flow_run_name)
        entry = "depthcraft.flows.runner.recipe_flow"
    return Prepared(flow=flow, name=dep_name, options=options, recipe=recipe, spec=spec, entrypoint=entry)


def build_deployment(recipe_path: str | Path, **kw):
    """A ``RunnerDeployment`` for a recipe (not yet registered). Returns (deployment, recipe, schedule)."""
    p = prepare(recipe_path, **kw)
    return p.to_deployment(), p.recipe, p.spec


def _job_variables(recipe: Recipe, kind: str, dask_address: str | None) -> dict:
    """Environment for a pool's job: where Dask is (read by ``depthcraft.flows.runner.recipe_flow_dask``)."""
    if kind != "dask":
        return {}
    from .scale import ENV_ADDRESS, ENV_THREADS, ENV_WORKERS, dask_settings

    s = dask_settings(recipe)
    env = {ENV_WORKERS: str(s.workers), ENV_THREADS: str(s.threads_per_worker)}
    if dask_address or s.address:
        env[ENV_ADDRESS] = dask_address or s.address
    return {"env": env}


def ensure_work_pool(name: str) -> bool:
    """Create a *process* work pool named ``name`` if there is none. Returns whether it was created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
            return False
        except ObjectNotFound:
            pass
        from prefect.workers.process import ProcessWorker

        client.create_work_pool(WorkPoolCreate(name=name, type="process",
                                               base_job_template=ProcessWorker.get_default_base_job_template()))
        return True


def schedule_now(deployment_id, runs: int = 3) -> None:
    """Ask the server to create the next scheduled runs now rather than at its next scheduler loop."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        r = client.request("POST", "/deployments/{id}/schedule", path_params={"id": deployment_id},
                           json={"min_runs": runs})
        r.raise_for_status()


def upcoming_runs(deployment_id, limit: int = 5) -> list[dict]:
    """The deployment's scheduled runs, soonest first: [{name, expected_start (aware datetime)}]."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (DeploymentFilter, DeploymentFilterId, FlowRunFilter,
                                                FlowRunFilterState, FlowRunFilterStateType)
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=limit)
    # plain aware datetimes (Prefect hands out pendulum ones)
    return [{"id": str(r.id), "name": r.name,
             "expected_start": dt.datetime.fromtimestamp(r.expected_start_time.timestamp(), dt.timezone.utc)}
            for r in runs]


def deploy(recipe_path: str | Path, *, write_yaml: bool = True, **kw) -> dict:
    """Register a recipe's deployment on the Prefect API (which must be set up: ``ensure_api``).

    Applies the recipe's concurrency limits, creates the work pool when named and missing,
    writes ``prefect.yaml`` for work-pool deployments, and has the server schedule the next
    runs at once. Returns {id, name, full_name, schedule, work_pool, prefect_yaml, upcoming}.
    """
    from .limits import apply_concurrency_limits

    dep, recipe, spec = build_deployment(recipe_path, **kw)
    apply_concurrency_limits(recipe)
    pool = kw.get("work_pool")
    created_pool = ensure_work_pool(pool) if pool else False
    dep_id = dep.apply()
    yaml_path = write_prefect_yaml(dep, Path(recipe_path).resolve().parent) if (pool and write_yaml) else None
    upcoming: list[dict] = []
    if spec is not None and spec.active and not kw.get("paused"):
        try:
            schedule_now(dep_id)
        except Exception:  # noqa: BLE001 - the server's scheduler loop makes them within a minute anyway
            pass
        upcoming = upcoming_runs(dep_id)
    return {"id": str(dep_id), "name": dep.name, "full_name": f"{dep.flow_name}/{dep.name}", "recipe": recipe.name,
            "schedule": spec.describe() if spec else None, "work_pool": pool, "created_pool": created_pool,
            "prefect_yaml": str(yaml_path) if yaml_path else None, "upcoming": upcoming,
            "entrypoint": dep.entrypoint}


# -- prefect.yaml ----------------------------------------------------------------------------
def write_prefect_yaml(dep, folder: Path) -> Path:
    """Write or update this deployment's entry in ``folder/prefect.yaml`` (Prefect's project file,
    read by ``prefect deploy``); other entries and keys are kept."""
    import yaml

    from depthcraft.tasks.lib.store import atomic_write_bytes

    path = folder / "prefect.yaml"
    doc: dict[str, Any] = {}
    if path.exists():
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise DepthcraftError(f"cannot update {path}: malformed YAML ({e})") from None
        if not isinstance(doc, dict):
            raise DepthcraftError(f"cannot update {path}: not a mapping")
    doc.setdefault("name", folder.name or "depthcraft")
    doc.setdefault("prefect-version", _prefect_version())
    entry: dict[str, Any] = {
        "name": dep.name,
        "description": dep.description,
        "entrypoint": dep.entrypoint,
        "tags": list(dep.tags),
        "parameters": dict(dep.parameters),
        "work_pool": {"name": dep.work_pool_name, "work_queue_name": dep.work_queue_name,
                      "job_variables": dict(dep.job_variables or {})},
        "schedules": [_schedule_yaml(s) for s in (dep.schedules or [])],
    }
    deps = [d for d in (doc.get("deployments") or []) if not (isinstance(d, dict) and d.get("name") == dep.name)]
    doc["deployments"] = deps + [entry]
    atomic_write_bytes(path, yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100).encode())
    return path


def _schedule_yaml(s) -> dict:
    sch = s.schedule
    out: dict[str, Any] = {}
    for k in ("cron", "rrule", "timezone", "day_or"):
        v = getattr(sch, k, None)
        if v is not None:
            out[k] = v
    if getattr(sch, "interval", None) is not None:
        out["interval"] = sch.interval.total_seconds()
        if getattr(sch, "anchor_date", None) is not None:
            out["anchor_date"] = sch.anchor_date.isoformat()
    out["active"] = bool(getattr(s, "active", True))
    return out


def _prefect_version() -> str:
    import prefect

    return prefect.__version__


# -- serving ---------------------------------------------------------------------------------
def serve(recipe_paths: list[str | Path], *, overrides: list[str] | None = None, out_root: str | None = None,
          workspace: str | None = None, limit: int | None = None, task_runner: str | None = None,
          dask_address: str | None = None, pause_on_shutdown: bool = True) -> None:
    """Serve one or more recipes until stopped (Prefect's ``Runner``, as ``flow.serve`` uses it):
    each deployment and schedule is registered, and every scheduled or triggered run executes
    in a subprocess of this one with the recipe's own flow object (task runner included)."""
    import asyncio

    from prefect.exceptions import TerminationSignal
    from prefect.runner import Runner

    from .limits import apply_concurrency_limits

    prepared: list[Prepared] = []
    seen: dict[str, str] = {}
    for path in recipe_paths:
        p = prepare(path, overrides=overrides, out_root=out_root, workspace=workspace, task_runner=task_runner,
                    dask_address=dask_address)
        key = f"{p.flow.name}/{p.name}"
        if key in seen:
            raise RecipeError(f"two recipes give the same deployment {key} ({seen[key]} and {path})", file=str(path))
        seen[key] = str(path)
        prepared.append(p)
    runner = Runner(name=f"depthcraft-serve-{os.getpid()}", pause_on_shutdown=pause_on_shutdown, limit=limit)
    from prefect.deployments.runner import EntrypointType

    for p in prepared:
        apply_concurrency_limits(p.recipe)
        # add_flow (not add_deployment) so that the runner runs this flow object, not a fresh import
        runner.add_flow(p.flow, name=p.name, entrypoint_type=EntrypointType.MODULE_PATH, **p.options)
        sched = p.spec.describe() if p.spec else "no schedule"
        print(f"serving {p.flow.name}/{p.name} ({sched}); "
              f"trigger a run: prefect deployment run '{p.flow.name}/{p.name}'", flush=True)
    try:
        asyncio.run(runner.start())
    except (KeyboardInterrupt, TerminationSignal):
        pass
