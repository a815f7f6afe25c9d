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
import sys
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


class OptionError(DepthcraftError):
    """A bad command-line option: ``--timezone: unknown timezone 'Mars/X'``."""

    exit_code = 2

    def __init__(self, option: str, message: str):
        self.option = option
        super().__init__(f"{option}: {message}")


_CRON_MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}


def check_cron(expr: str) -> None:
    """Standard 5-field cron (minute hour day-of-month month day-of-week) or a macro such as
    ``@daily``, which fires at least once: Prefect's croniter would read a 6th field as seconds
    (``0 2 * * * *`` runs 60 times a night) and accepts dates that never come (30 February).
    Raises ValueError with the reason."""
    from prefect._vendor.croniter import CroniterBadDateError, croniter

    text = str(expr).strip()
    fields = text.split()
    if text.lower() in _CRON_MACROS:
        return
    if len(fields) != 5:
        raise ValueError(f"{expr!r} has {len(fields)} field(s); give standard 5-field cron "
                         "'MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK', e.g. '0 2 * * *'")
    if not croniter.is_valid(text):
        raise ValueError(f"{expr!r} is not a valid cron expression (e.g. '0 2 * * *' is 02:00 every day)")
    try:
        croniter(text, dt.datetime.now(dt.timezone.utc), day_or=True).get_next(dt.datetime)
    except CroniterBadDateError:
        raise ValueError(f"{expr!r} never fires (no such date, e.g. 30 February)") from None


def check_timezone(tz: str) -> None:
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {tz!r} (use an IANA name such as Europe/Paris)") from None


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
            check_timezone(self.timezone)
        if self.cron is not None:
            check_cron(self.cron)
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
    recipe file, line and key, or the option (``--timezone: unknown timezone 'Mars/X'``).
    """
    if timezone:
        try:
            check_timezone(timezone)
        except ValueError as e:
            raise OptionError("--timezone", str(e)) from None
    flags = {k: v for k, v in (("cron", cron), ("interval", interval), ("rrule", rrule)) if v is not None}
    if flags:
        tz = timezone
        if not tz and isinstance(recipe.schedule, dict) and recipe.schedule.get("timezone"):
            tz = recipe.schedule["timezone"]  # the recipe's timezone stays: a fault there is the recipe's
            try:
                check_timezone(str(tz))
            except ValueError as e:
                if src is not None:
                    raise src.error(str(e), ("schedule", "timezone")) from None
                raise RecipeError(str(e), key="schedule.timezone") from None
        return _validated({**flags, **({"timezone": tz} if tz else {})}, None, "--" + "/--".join(flags))
    if not recipe.schedule:
        if timezone:
            raise OptionError("--timezone", "needs a schedule: add `schedule:` to the recipe or pass --cron, "
                              "--interval or --rrule")
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
        raise OptionError(flag, msg)
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
        raise OptionError("--name", f"{dep_name!r}: use letters, digits, '.', '_' and '-'")
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


def _drop_auto_scheduled_runs(deployment_id) -> int:
    """Delete the deployment's runs that its schedule made and that have not started.

    Prefect deletes them itself when a deployment's schedules change, but its scheduler service
    may be inserting runs of the old schedule at that very moment: a re-deploy with a new
    ``--cron`` then still listed (and would have started) a run of the old one. They are made
    again from the current schedule right after (:func:`schedule_now`, or the scheduler's next
    loop). Runs someone triggered by hand are kept. Returns how many were deleted; never raises."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (DeploymentFilter, DeploymentFilterId, FlowRunFilter,
                                                FlowRunFilterState, FlowRunFilterStateType)
    from prefect.client.schemas.objects import StateType

    n = 0
    try:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(
                    any_=[StateType.SCHEDULED]))), limit=200)
            for r in runs:
                if getattr(r, "auto_scheduled", False):
                    client.delete_flow_run(r.id)
                    n += 1
    except Exception:  # noqa: BLE001 - the server's own clean-up usually did it; a deploy must not fail here
        return n
    return n


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


def existing_deployment(full_name: str):
    """The registered deployment ``flow/name``, or None."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            return client.read_deployment_by_name(full_name)
        except ObjectNotFound:
            return None


def refuse_other_recipe(full_name: str, recipe_file: str, option: str = "--replace") -> None:
    """Two recipe files with one ``name:`` give one deployment name: deploying the second would
    silently replace the first (same id, the other recipe). Refused unless ``--replace``;
    deploying the same file again is an update."""
    dep = existing_deployment(full_name)
    other = (dep.parameters or {}).get("recipe_file") if dep is not None else None
    if other and other != recipe_file:
        raise OptionError("--name", f"deployment {full_name} already exists for {other}; give this one "
                          f"another --name, or pass {option} to make it run {recipe_file} instead")


def deploy(recipe_path: str | Path, *, write_yaml: bool = True, replace: bool = False, **kw) -> dict:
    """Register a recipe's deployment on the Prefect API (which must be set up: ``ensure_api``).

    Applies the recipe's concurrency limits, creates the work pool when named and missing,
    writes ``prefect.yaml`` for work-pool deployments, and has the server schedule the next
    runs at once. Returns {id, name, full_name, schedule, work_pool, prefect_yaml, upcoming}.
    """
    from .limits import apply_concurrency_limits

    dep, recipe, spec = build_deployment(recipe_path, **kw)
    if not replace:
        refuse_other_recipe(f"{dep.flow_name}/{dep.name}", dep.parameters["recipe_file"])
    apply_concurrency_limits(recipe)
    pool = kw.get("work_pool")
    created_pool = ensure_work_pool(pool) if pool else False
    dep_id = dep.apply()
    yaml_path = write_prefect_yaml(dep, Path(recipe_path).resolve().parent) if (pool and write_yaml) else None
    upcoming: list[dict] = []
    _drop_auto_scheduled_runs(dep_id)  # (a run of the schedule this deploy replaced: see the function)
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
def deployments_of(recipe_file: str, flow_name: str) -> list:
    """The served (no work pool) deployments of ``flow_name`` registered for this recipe file,
    e.g. by ``depthcraft deploy RECIPE --name NAME --cron ...``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        deps = client.read_deployments(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])))
    return sorted((d for d in deps if (d.parameters or {}).get("recipe_file") == recipe_file and not d.work_pool_name),
                  key=lambda d: d.name)


def paused_notice(full_name: str) -> str:
    """The line ``serve`` says at its start for a paused deployment. It stays paused: a pause
    made by hand (``depthcraft pause``, the Prefect UI) is the user's decision, and one left by an
    older depthcraft ``serve`` (which paused on stop) cannot be told apart from it."""
    return (f"deployment {full_name} is paused: its schedule makes no runs; "
            f"resume: depthcraft resume {full_name}")


def check_full_names(full_names: list[str]) -> None:
    """Refuse (:class:`InputError`, naming it) a name that is not ``FLOW/NAME``: no ``/``, an empty
    side (``a/``, ``''``), or more than one ``/`` (Prefect's lookup raised a ValueError: a traceback).
    Checked before a server is asked (or started)."""
    from depthcraft.tasks.lib.errors import InputError

    for name in full_names:
        flow, _, dep = name.partition("/")
        if not name.strip():
            raise InputError("an empty deployment name (an unset shell variable?): give the full name FLOW/NAME, "
                             "as `depthcraft serve` prints it", path=repr(name))
        if not flow.strip() or not dep.strip() or "/" in dep:
            bare = name.strip("/").rsplit("/", 1)[-1].removeprefix("depthcraft-") or "NAME"
            raise InputError(f"give the deployment's full name FLOW/NAME (one '/'), e.g. depthcraft-{bare}/{bare}",
                             path=name)


def set_paused(full_names: list[str], paused: bool) -> list[str]:
    """Pause (or resume) deployments by full name ``flow/deployment``: a paused deployment's
    schedules make no runs (runs triggered by hand still run where it is served). Returns the
    names whose state changed. A name that is no deployment: one line naming it and the
    deployments there are, before any is changed."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from depthcraft.tasks.lib.errors import InputError

    check_full_names(full_names)
    with get_client(sync_client=True) as client:
        found = []
        for name in full_names:
            try:
                found.append((name, client.read_deployment_by_name(name)))
            except ObjectNotFound:
                known = sorted(f"{d.flow_name}/{d.name}" if getattr(d, "flow_name", None) else d.name
                               for d in client.read_deployments(limit=20))
                raise InputError("no such deployment" + (f" (there are: {', '.join(known)})" if known else ""),
                                 path=name) from None
        changed = []
        for name, dep in found:
            if bool(dep.paused) != paused:
                (client.pause_deployment if paused else client.resume_deployment)(dep.id)
                changed.append(name)
    return changed


def describe_schedules(schedules) -> str:
    """One line for a deployment's registered schedules (``DeploymentSchedule`` objects)."""
    parts = []
    for x in schedules or []:
        sch = x.schedule
        tz = f" ({getattr(sch, 'timezone', None) or 'UTC'})"
        if getattr(sch, "cron", None):
            text = f"cron '{sch.cron}'{tz}"
        elif getattr(sch, "rrule", None):
            text = f"rrule '{sch.rrule}'{tz}"
        else:
            text = f"every {sch.interval}"
        parts.append(text + ("" if x.active else " inactive"))
    return ", ".join(parts) or "no schedule"


_PICKED_UP: set[str] = set()  # ids of the flow runs this process's Runner claimed (set them Pending)


def _record_picked_up_runs() -> None:
    """Note the id of every flow run this process's Runner claims: the Runner moves a run from
    Scheduled to Pending before it starts its process, and the server accepts that move from
    one runner only. At its stop, ``serve`` cancels those runs and no other: another ``serve``
    of the same deployment (the same recipe twice, or after ``--replace``) keeps its own.
    (Prefect's runner internals differ between 3.x releases: both known places are wrapped.)"""
    targets = []
    try:
        from prefect.runner._state_proposer import StateProposer

        targets.append((StateProposer, "propose_pending"))
    except ImportError:
        pass
    from prefect.runner import Runner

    targets.append((Runner, "_propose_pending_state"))
    for cls, name in targets:
        fn = getattr(cls, name, None)
        if fn is None or getattr(fn, "depthcraft_records", False):
            continue

        async def propose(self, flow_run, *a, _fn=fn, **kw):
            ok = await _fn(self, flow_run, *a, **kw)
            if ok:
                _PICKED_UP.add(str(flow_run.id))
            return ok

        propose.depthcraft_records = True
        setattr(cls, name, propose)


def _cancel_unfinished(dep_ids: list, since: float, why: str, only: set[str] | None = None) -> int:
    """Set the runs of these deployments that this serve left Pending or Running (state entered
    after it started; with ``only``, those of its ids alone) to Cancelled; returns how many."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (DeploymentFilter, DeploymentFilterId, FlowRunFilter,
                                                FlowRunFilterState, FlowRunFilterStateType)
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelled

    n = 0
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=dep_ids)),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(
                any_=[StateType.PENDING, StateType.RUNNING, StateType.CANCELLING]))))
        for fr in runs:
            if fr.state is None or fr.state.timestamp.timestamp() < since - 1:
                continue
            if only is not None and str(fr.id) not in only:  # another serve's run
                continue
            client.set_flow_run_state(fr.id, Cancelled(message=why), force=True)
            n += 1
    return n


def _restore_finished(only: set[str]) -> int:
    """Runs of this serve that had finished (Completed, Failed) when its stop came, and that
    Prefect's Runner set to Cancelled anyway because their process was still exiting (its
    "Runner is shutting down."): their final state is put back. Returns how many."""
    from prefect.client.orchestration import get_client
    from prefect.states import State

    n = 0
    with get_client(sync_client=True) as client:
        for rid in only:
            states = sorted(client.read_flow_run_states(rid), key=lambda st: st.timestamp)
            if len(states) < 2:
                continue
            last, before = states[-1], states[-2]
            if last.is_cancelled() and before.is_final() and not before.is_cancelled():
                client.set_flow_run_state(rid, State(type=before.type, name=before.name, message=before.message),
                                          force=True)
                n += 1
    return n


def _hand_back(only: set[str], since: float, successor: int) -> int:
    """Runs of this serve left unfinished by its stop (Pending, Running, or Cancelled or Crashed
    since ``since``: its process killed by the stop) set back to Scheduled, now, for the serve that replaces it
    (pid ``successor``) to run again. Returns how many."""
    from prefect.client.orchestration import get_client
    from prefect.states import Scheduled

    n = 0
    with get_client(sync_client=True) as client:
        for rid in only:
            st = client.read_flow_run(rid).state
            if st is None or st.is_completed() or st.is_failed() or st.is_scheduled():
                continue
            if (st.is_cancelled() or st.is_crashed()) and st.timestamp.timestamp() < since - 1:
                continue  # (cancelled by a user, or crashed, before the stop: not the stop's doing)
            client.set_flow_run_state(rid, Scheduled(message=f"handed back by depthcraft serve {os.getpid()} to "
                                                             f"depthcraft serve {successor} (--replace)"), force=True)
            n += 1
    return n


def _spawn_runs_with_ctrl_c_blocked() -> None:
    """Flow-run processes that ``serve`` starts begin with SIGINT blocked (the signal mask is
    inherited through fork and exec). A terminal's Ctrl-C goes to the whole process group: a run
    interpreter still importing would otherwise print its own KeyboardInterrupt traceback. ``serve``
    answers Ctrl-C itself by stopping its runs (SIGTERM, then their state set to Cancelled)."""
    import signal

    import prefect.runner._starter_direct as starter

    spawn = starter.run_flow_in_subprocess
    if getattr(spawn, "depthcraft_blocks_sigint", False):
        return

    def run_flow_in_subprocess(*args, **kwargs):
        # the spawn's resource tracker first: starting it unblocks SIGINT in this thread (bpo-33613)
        from multiprocessing import resource_tracker

        resource_tracker.ensure_running()
        # per thread: only this thread's mask, for the one spawn (a Ctrl-C meanwhile waits, is not lost)
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            return spawn(*args, **kwargs)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    run_flow_in_subprocess.depthcraft_blocks_sigint = True
    starter.run_flow_in_subprocess = run_flow_in_subprocess


def serve(recipe_paths: list[str | Path], *, overrides: list[str] | None = None, out_root: str | None = None,
          workspace: str | None = None, limit: int | None = None, task_runner: str | None = None,
          dask_address: str | None = None, replace: bool = False) -> int:
    """Serve one or more recipes until SIGINT / SIGTERM (Prefect's ``Runner``, as ``flow.serve``
    uses it); every scheduled or triggered run executes in a subprocess of this one with the
    recipe's own flow object (task runner included).

    A recipe that ``depthcraft deploy`` registered is served as deployed: every served deployment
    of that recipe file, with its name, schedules, paused state and (unless ``--set``/``--out``
    are given here) its overrides and output root. Otherwise one deployment named after the
    recipe is registered with the recipe's ``schedule:``. Stopping does not pause the schedules
    (Prefect's default would): the runs they make wait as Scheduled until served again. Runs this
    serve picked up and left Pending or Running are set to Cancelled (never another serve's). Returns the exit code: 128 + the signal.
    """
    import asyncio
    import signal

    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.runner import Runner

    from .limits import apply_concurrency_limits

    prepared: list[tuple[Prepared, str]] = []
    seen: dict[str, str] = {}
    common = dict(workspace=workspace, task_runner=task_runner, dask_address=dask_address)
    for path in recipe_paths:
        recipe, _ = load_recipe(path, overrides=overrides or [])
        rfile = str(Path(path).resolve())
        found = deployments_of(rfile, f"depthcraft-{recipe.name}")
        batch = []
        for d in found:
            params = d.parameters or {}
            p = prepare(path, name=d.name, overrides=overrides or params.get("overrides") or [],
                        out_root=out_root or params.get("out_root"), paused=d.paused, **common)
            p.options.pop("schedule", None)
            p.options["schedules"] = [DeploymentScheduleCreate(schedule=x.schedule, active=x.active)
                                      for x in d.schedules or []]
            batch.append((p, describe_schedules(d.schedules) + (", paused" if d.paused else "")))
        if not found:
            p = prepare(path, overrides=overrides, out_root=out_root, **common)
            if not replace:
                refuse_other_recipe(f"{p.flow.name}/{p.name}", rfile)
            batch.append((p, p.spec.describe() if p.spec else "no schedule"))
        for p, sched in batch:
            key = f"{p.flow.name}/{p.name}"
            if key in seen:
                raise RecipeError(f"two recipes give the same deployment {key} ({seen[key]} and {path})",
                                  file=str(path))
            seen[key] = str(path)
            prepared.append((p, sched))
    from . import servelease

    full_names = [f"{p.flow.name}/{p.name}" for p, _ in prepared]
    if workspace:  # one serve per deployment in a workspace (flows/servelease.py); --replace takes over
        servelease.take(workspace, full_names, [str(Path(x).resolve()) for x in recipe_paths], replace=replace,
                        option_error=OptionError)
    got: list[int] = []
    for s in (signal.SIGINT, signal.SIGTERM):  # from here a serve --replace may stop this one: a signal
        # before the loop's handlers below (seconds of imports and registration) was the generic
        # "interrupted" exit, never "stopped serving"; noted, it stops the serve at once instead
        signal.signal(s, lambda signum, _f: got.append(int(signum)) if not got else os._exit(128 + signum))
    _spawn_runs_with_ctrl_c_blocked()
    _record_picked_up_runs()
    runner = Runner(name=f"depthcraft-serve-{os.getpid()}", pause_on_shutdown=False, limit=limit)
    from prefect.deployments.runner import EntrypointType

    dep_ids = []
    for p, sched in prepared:
        apply_concurrency_limits(p.recipe)
        # add_flow (not add_deployment) so that the runner runs this flow object, not a fresh import
        dep_ids.append(runner.add_flow(p.flow, name=p.name, entrypoint_type=EntrypointType.MODULE_PATH, **p.options))
        print(f"serving {p.flow.name}/{p.name} ({sched}); "
              f"trigger a run: prefect deployment run '{p.flow.name}/{p.name}'", flush=True)
        if p.options.get("paused"):  # (kept paused, and said: see paused_notice)
            print(paused_notice(f"{p.flow.name}/{p.name}"), flush=True)
    started = time.time()
    stopping: list[float] = []

    import prefect.runner.server  # noqa: F401 - imported by start(): not seconds of it with no handler of ours

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def ours() -> None:  # (a signal while start() begins: noted, never raised inside its task)
            for s in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(s, lambda s=s: (got.append(int(s)), stop.set()))

        ours()

        def noted(signum=signal.SIGTERM, _frame=None) -> None:
            if got:  # a second signal exits at once
                os._exit(128 + int(signum))
            got.append(int(signum))
            loop.call_soon_threadsafe(stop.set)

        # start() installs its own SIGTERM handler (sys.exit(0) while it is still starting: a
        # traceback and exit 0 for a serve stopped then, e.g. by a --replace) and runs seconds of
        # synchronous set-up before ours below replace it: its handler is ours from the start
        runner.handle_sigterm = noted
        task = asyncio.ensure_future(runner.start())
        await asyncio.sleep(0)  # start() installs Prefect's SIGTERM handler first; ours replace it
        ours()
        if got:  # (a signal before the handlers: see above)
            stop.set()
        waiter = asyncio.ensure_future(stop.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            waiter.cancel()
            task.result()
            return
        for s in (signal.SIGINT, signal.SIGTERM):  # a second signal exits at once
            loop.add_signal_handler(s, lambda s=s: (os.write(2, b"\nexiting now\n"), os._exit(128 + int(s))))
        stopping.append(time.time())
        successor = servelease.replaced_by(full_names, workspace) if workspace else None
        print(f"{signal.Signals(got[0]).name}: stopping serve (its running flow runs are "
              + (f"handed back to depthcraft serve {successor}, which replaces it)..." if successor else "cancelled)..."),
              file=sys.stderr, flush=True)
        try:  # kills the runs' processes and cancels their runs
            await asyncio.wait_for(runner.astop(), 30)
        except (Exception, asyncio.CancelledError):  # noqa: BLE001 - the runs are cancelled below anyway
            pass
        try:
            await asyncio.wait_for(task, 15)
        except (Exception, asyncio.CancelledError):  # noqa: BLE001
            pass

    asyncio.run(main())
    signum = got[0] if got else signal.SIGINT
    why = f"depthcraft serve stopped by {signal.Signals(signum).name}"
    successor = servelease.replaced_by(full_names, workspace) if workspace else None
    handed = 0
    try:
        if successor:  # --replace: the runs go back to the schedule, for the new serve to run
            _restore_finished(set(_PICKED_UP))
            n, handed = 0, _hand_back(set(_PICKED_UP), stopping[0] if stopping else started, successor)
        else:
            n = _cancel_unfinished(dep_ids, started, why, only=set(_PICKED_UP))
            _restore_finished(set(_PICKED_UP))  # (a run that had finished is not cancelled by the stop)
    except Exception:  # noqa: BLE001 - the API is gone: nothing more to mark
        n = 0
    servelease.release()  # (after the runs' states: the new serve takes over only then)
    if successor:
        print(f"stopped serving: replaced by depthcraft serve {successor}"
              + (f"; {handed} unfinished run(s) handed back to it" if handed else ""), file=sys.stderr, flush=True)
        return 128 + int(signum)
    names = " ".join(str(x) for x in recipe_paths)
    print(f"stopped serving{f'; {n} unfinished run(s) set to Cancelled' if n else ''}; schedules stay active and "
          f"their runs wait as Scheduled until `depthcraft serve {names}` runs again "
          f"(pause one: depthcraft pause FLOW/NAME)", file=sys.stderr, flush=True)
    return 128 + int(signum)
