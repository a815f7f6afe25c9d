"""A Dask task runner whose local cluster starts early and whose workers are warm.

``prefect_dask.DaskTaskRunner`` starts its local cluster on the first task submitted, that is
after the flow run has been created and the recipe compiled, and each worker process then pays
its imports (OpenCV, scikit-image, the step catalog, Prefect's task engine) inside its first task
run. Those are fixed, serial costs of every Dask run (measured in ``bench/bench_video.py --only
scale``, docs/video.md "Scale-out"). :class:`WarmDaskTaskRunner` starts the cluster in a
background thread as soon as the runner is entered (or, with ``prestart=True``, as soon as it is
built) and has every worker import the code its tasks will run, while the flow run is created
and the recipe compiles; the first submit waits for that start instead of starting the cluster
itself. Results are the same: the same cluster, the same worker environment, the same tasks.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import ExitStack

from prefect_dask import DaskTaskRunner

log = logging.getLogger(__name__)

LOCAL = "distributed.LocalCluster"
LAST: dict[str, float] = {}  # time.time() of the last start's events (bench/bench_video.py prints them)


# What each worker imports before its first task: Prefect's task engine and the modules holding
# the task functions (step_task, segment_task, assemble_task) with what they import (OpenCV, the
# clip engine, the step catalog). Names, like Dask's own "preload" setting: loaded in the worker.
WARM_MODULES = ("prefect.task_engine", "depthcraft.flows.runner", "depthcraft.flows.segment_runs")


def warm_worker(modules: tuple[str, ...] = WARM_MODULES) -> float:
    """Run once in each worker process: import what its first task run would import anyway,
    earlier. Returns seconds."""
    import importlib

    t0 = time.perf_counter()
    for name in modules:
        importlib.import_module(name)
    return time.perf_counter() - t0


def _in_worker() -> bool:
    """True inside a Dask worker (a daemonic process, whose tasks must not start clusters)."""
    import multiprocessing

    if multiprocessing.current_process().daemon:
        return True
    try:
        from distributed import get_worker

        get_worker()
        return True
    except (ImportError, ValueError):
        return False


class _Start:
    """A local cluster being started (and its workers warmed) in a background thread."""

    def __init__(self, cluster_kwargs: dict):
        LAST.clear()
        LAST["begin"] = time.time()
        self.cluster = None
        self.error: BaseException | None = None
        self.seconds: dict[str, float] = {}
        self.ready = threading.Event()  # the cluster is up (or failed): tasks may go
        self.thread = threading.Thread(target=self._run, args=(dict(cluster_kwargs),), name="depthcraft-dask-start",
                                       daemon=True)
        self.thread.start()

    def _run(self, kw: dict) -> None:
        from distributed import Client, LocalCluster

        t0 = time.perf_counter()
        try:
            self.cluster = LocalCluster(**kw)
        except BaseException as e:  # noqa: BLE001 - the first submit starts it again and reports the error
            self.error = e
            return
        finally:
            self.ready.set()
        self.seconds["cluster"] = time.perf_counter() - t0
        LAST["cluster_ready"] = time.time()
        # warming goes on while the first tasks are submitted: a worker runs them once its
        # imports are done, and a slow worker does not hold up the other
        try:
            with Client(self.cluster, set_as_default=False) as c:
                self.seconds["warm"] = max(c.run(warm_worker).values(), default=0.0)
            LAST["workers_warm"] = time.time()
        except Exception as e:  # noqa: BLE001 - a cold worker is slower, not wrong
            log.debug("workers not warmed: %s", e)

    def take(self):
        """The cluster, once it is up (None if it could not start)."""
        self.ready.wait()
        return self.cluster


class WarmDaskTaskRunner(DaskTaskRunner):
    """``DaskTaskRunner`` with an early, warm local cluster (see the module docstring). With an
    ``address`` (an existing cluster) it is the plain runner."""

    def __init__(self, *args, prestart: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self._start: _Start | None = None
        self._background_close = prestart  # a command-line run: its process outlives the flow
        if prestart:
            self._begin()

    def _local(self) -> bool:
        return not self.address and self.cluster_class in (LOCAL, None) and self._cluster is None

    def _begin(self) -> None:
        if self._start is None and self._local():
            self._start = _Start({**self.cluster_kwargs})

    def duplicate(self):
        # Prefect enters a duplicate of the flow's runner: the cluster being started goes with it
        new = super().duplicate()
        new._start, self._start = self._start, None
        new._background_close = self._background_close
        return new

    def __enter__(self):
        super().__enter__()
        if not _in_worker():  # Prefect enters a duplicate in every worker, around each task run
            self._begin()
        return self

    @property
    def client(self):
        if self._client is None and self._start is not None:
            start, self._start = self._start, None
            LAST["first_submit"] = time.time()
            cluster = start.take()
            LAST["cluster_taken"] = time.time()
            if cluster is not None:
                self._cluster = cluster  # the parent connects to it ...
                self._exit_stack.callback(cluster.close)  # ... and we close it with the runner
                self.timings = start.seconds
        return DaskTaskRunner.client.fget(self)

    def __exit__(self, *args) -> None:
        # The flow's results are in: with ``prestart`` (a command-line run) the client and the
        # local cluster close in the background (seconds: each worker drains its Prefect log and
        # event services before it exits), so the run's summary does not wait for them; the
        # process waits for them when it exits (a non-daemon thread), :func:`wait_closed` on demand.
        start, self._start = self._start, None
        if start is None and self._client is None:  # nothing started (e.g. the copy in a worker)
            super().__exit__(*args)
            return
        stack, self._exit_stack = self._exit_stack, ExitStack()
        if self._background_close:
            # explicitly not a daemon (a thread takes its creator's flag, and flow runs happen on
            # daemon threads): the interpreter joins it before the atexit hooks, where
            # distributed's close_clusters would otherwise meet a cluster still closing and
            # print a traceback
            t = threading.Thread(target=_close, args=(start, stack), name="depthcraft-dask-close", daemon=False)
            t.start()
            CLOSING.append(t)
        else:
            _close(start, stack)
        super().__exit__(*args)  # the (now empty) stack, then the base runner's state


CLOSING: list[threading.Thread] = []


def _close(start: _Start | None, stack: ExitStack) -> None:
    t0 = time.time()
    try:
        if start is not None:  # entered, never used (no task submitted): stop what was started
            cluster = start.take()
            if cluster is not None:
                cluster.close()
        stack.close()  # the client, then the cluster (callbacks run last in, first out)
    except Exception as e:  # noqa: BLE001 - the run is over; a cluster that closes badly is only logged
        log.warning("the local Dask cluster did not close cleanly: %s", e)
    LAST["closed_s"] = time.time() - t0


def wait_closed(timeout: float | None = None) -> None:
    """Wait until the local clusters of finished runs have closed."""
    for t in list(CLOSING):
        t.join(timeout)
        if not t.is_alive():
            CLOSING.remove(t)
