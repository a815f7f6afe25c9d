"""Scale-out on Prefect: the Dask task runner and concurrency limits by tag.

depthcraft writes no scheduler and no cluster manager: a recipe's tasks go to
``prefect_dask.DaskTaskRunner`` (a local cluster of worker processes, or an existing Dask
cluster at ``tcp://host:port``), and scarce resources are guarded by Prefect's own
tag-based concurrency limits. Each task run is tagged ``depthcraft``, ``step:<kind>`` and
its provider's name (``classic``, ``onnx``, ``eachsense``), so a recipe's
``concurrency: {eachsense: 4}`` caps the remote API and ``{onnx: 1}`` a single GPU.

Dask workers run :func:`flows.execute.execute_node` and read and write the workspace's
artifact store by path, so every worker must see the workspace (``DEPTHCRAFT_HOME``) and the
output root at the same path, run the same package versions, and reach the Prefect API.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from tasks.errors import RecipeError

from .recipe import DaskSettings

ENV_ADDRESS = "DEPTHCRAFT_DASK_ADDRESS"
ENV_WORKERS = "DEPTHCRAFT_DASK_WORKERS"
ENV_THREADS = "DEPTHCRAFT_DASK_THREADS"
# set in each local worker process before it imports numpy or OpenCV
SINGLE_THREADED = {"OPENCV_FOR_THREADS_NUM": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                   "MKL_NUM_THREADS": "1"}


def dask_settings(recipe: Any = None) -> DaskSettings:
    """The recipe's ``dask:`` settings, else those from the environment, else the defaults."""
    s = getattr(recipe, "dask", None)
    if s is not None:
        return s
    kw: dict[str, Any] = {}
    if os.environ.get(ENV_ADDRESS):
        kw["address"] = os.environ[ENV_ADDRESS]
    if os.environ.get(ENV_WORKERS):
        kw["workers"] = int(os.environ[ENV_WORKERS])
    if os.environ.get(ENV_THREADS):
        kw["threads_per_worker"] = int(os.environ[ENV_THREADS])
    return DaskSettings(**kw)


def dask_runner(recipe: Any = None, address: str | None = None):
    """A ``DaskTaskRunner`` for a recipe: ``address`` (or ``dask.address``) connects to an
    existing scheduler; otherwise a local cluster of ``dask.workers`` worker *processes*
    (``threads_per_worker`` threads each) starts with the flow run and stops with it.

    Processes, not threads: the steps are CPU-bound numpy/OpenCV code, and separate processes
    keep one step's Python work from holding another's GIL. Each worker's libraries run
    single-threaded (OpenCV, OpenMP, BLAS): the worker's task threads are its parallelism, and
    library thread pools on top of them would oversubscribe the cores.
    """
    from prefect_dask import DaskTaskRunner

    s = dask_settings(recipe)
    addr = address or s.address
    if addr:
        return DaskTaskRunner(address=addr)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={"n_workers": s.workers, "threads_per_worker": s.threads_per_worker, "processes": True,
                        "dashboard_address": None, "silence_logs": logging.ERROR, "env": SINGLE_THREADED},
    )


def concurrency_limits(recipe: Any) -> dict[str, int]:
    """The recipe's ``concurrency:`` mapping, checked (a limit must be at least 1)."""
    limits = dict(getattr(recipe, "concurrency", None) or {})
    for tag, n in limits.items():
        if not isinstance(n, int) or n < 1:
            raise RecipeError(f"concurrency limit for tag {tag!r} must be a whole number >= 1 (got {n!r})",
                              key=f"concurrency.{tag}")
    return limits


def apply_concurrency_limits(recipe: Any) -> dict[str, int]:
    """Create or update one Prefect tag concurrency limit per entry of ``recipe.concurrency``.

    Prefect's ``POST /concurrency_limits/`` is an upsert, so this is idempotent; limits not in
    the recipe are left alone (other recipes or users may rely on them). Needs the Prefect API
    (call after :func:`flows.server.ensure_api`). Returns the limits applied.
    """
    limits = concurrency_limits(recipe)
    if not limits:
        return {}
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for tag, n in limits.items():
            client.create_concurrency_limit(tag=tag, concurrency_limit=n)
    return limits


def read_concurrency_limits(tags: list[str]) -> dict[str, int | None]:
    """The current limit of each tag on the Prefect API (None where none is set)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    out: dict[str, int | None] = {}
    with get_client(sync_client=True) as client:
        for tag in tags:
            try:
                out[tag] = client.read_concurrency_limit_by_tag(tag).concurrency_limit
            except ObjectNotFound:
                out[tag] = None
    return out


def limited_tags() -> set[str]:
    """The tags that have a concurrency limit on the Prefect API now (one request per page).

    Every tag on a task run costs it a lease acquire and release on the API before and after it
    runs, limit or not; on a busy 2-core machine that was about 0.45 s per task run
    (bench/bench_scale.py). The runner can tag a task only with the tags that are limited.
    """
    from prefect.client.orchestration import get_client

    out: set[str] = set()
    with get_client(sync_client=True) as client:
        offset = 0
        while True:
            page = client.read_global_concurrency_limits(limit=200, offset=offset)
            out |= {g.name[4:] for g in page if g.name.startswith("tag:") and g.active}
            if len(page) < 200:
                return out
            offset += len(page)


def _env_flow():
    """The recipe flow with a Dask task runner configured from the environment.

    A work-pool deployment names this flow as its entrypoint (``flows.scale.recipe_flow_dask``)
    when the recipe asks for Dask; the worker's job sets ``DEPTHCRAFT_DASK_ADDRESS`` (and/or
    ``_WORKERS``, ``_THREADS``) through the deployment's job variables.
    """
    from .runner import recipe_flow

    return recipe_flow.with_options(task_runner=dask_runner())


def __getattr__(name: str):
    # built on first access so that importing this module does not import Prefect (whose
    # settings are read at import time, before ensure_api has set PREFECT_API_URL)
    if name == "recipe_flow_dask":
        flow = _env_flow()
        globals()[name] = flow
        return flow
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
