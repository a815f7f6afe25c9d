"""Scale-out on Prefect: the Dask task runner (concurrency limits by tag: :mod:`.limits`).

depthcraft writes no scheduler and no cluster manager: a recipe's tasks go to
``prefect_dask.DaskTaskRunner`` (a local cluster of worker processes, or an existing Dask
cluster at ``tcp://host:port``), and scarce resources are guarded by Prefect's own
tag-based concurrency limits. Each task run is tagged ``depthcraft``, ``step:<kind>`` and
its provider's name (``classic``, ``onnx``, ``eachsense``), so a recipe's
``concurrency: {eachsense: 4}`` caps the remote API and ``{onnx: 1}`` a single GPU.

Dask workers run :func:`depthcraft.flows.execute.execute_node` and read and write the workspace's
artifact store by path, so every worker must see the workspace (``DEPTHCRAFT_HOME``) and the
output root at the same path, run the same package versions, and reach the Prefect API.
"""

from __future__ import annotations

import logging
import os
from typing import Any

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


def dask_runner(recipe: Any = None, address: str | None = None, *, prestart: bool = False):
    """A ``DaskTaskRunner`` for a recipe: ``address`` (or ``dask.address``) connects to an
    existing scheduler; otherwise a local cluster of ``dask.workers`` worker *processes*
    (``threads_per_worker`` threads each) starts with the flow run and stops with it.

    Processes, not threads: the steps are CPU-bound numpy/OpenCV code, and separate processes
    keep one step's Python work from holding another's GIL. Each worker's libraries run
    single-threaded (OpenCV, OpenMP, BLAS): the worker's task threads are its parallelism, and
    library thread pools on top of them would oversubscribe the cores.

    The local cluster starts in the background when the flow run enters the runner, with
    ``prestart`` already now, and its workers import the task code while the recipe compiles
    (:mod:`.daskwarm`).
    """
    from prefect_dask import DaskTaskRunner

    from .daskwarm import WarmDaskTaskRunner

    s = dask_settings(recipe)
    addr = address or s.address
    if addr:
        return DaskTaskRunner(address=addr)
    return WarmDaskTaskRunner(prestart=prestart,
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={"n_workers": s.workers, "threads_per_worker": s.threads_per_worker, "processes": True,
                        "dashboard_address": None, "silence_logs": logging.ERROR, "env": SINGLE_THREADED},
    )
