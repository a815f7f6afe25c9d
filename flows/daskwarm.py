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

from prefect_dask import DaskTaskRunner

log = logging.getLogger(__name__)

LOCAL = "distributed.LocalCluster"


def warm_worker() -> float:
    """Run once in each worker process: import what segment and step task runs execute (seconds)."""
    t0 = time.perf_counter()
    import prefect.task_engine  # noqa: F401 - the engine that runs each task run in the worker

    from depthcraft.flows import execute, segments  # noqa: F401 - the task bodies
    from depthcraft.tasks import catalog, clips  # noqa: F401
    from depthcraft.tasks.providers import classic  # noqa: F401 - the default provider

    catalog.steps()  # every step module imported once
    return time.perf_counter() - t0


class _Start:
    """A local cluster being started (and its workers warmed) in a background thread."""

    def __init__(self, cluster_kwargs: dict):
        self.cluster = None
        self.error: BaseException | None = None
        self.seconds: dict[str, float] = {}
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
        self.seconds["cluster"] = time.perf_counter() - t0
        try:
            with Client(self.cluster, set_as_default=False) as c:
                self.seconds["warm"] = max(c.run(warm_worker).values(), default=0.0)
        except Exception as e:  # noqa: BLE001 - a cold worker is slower, not wrong
            log.debug("workers not warmed: %s", e)

    def take(self):
        self.thread.join()
        return self.cluster


class WarmDaskTaskRunner(DaskTaskRunner):
    """``DaskTaskRunner`` with an early, warm local cluster (see the module docstring). With an
    ``address`` (an existing cluster) it is the plain runner."""

    def __init__(self, *args, prestart: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self._start: _Start | None = None
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
        return new

    def __enter__(self):
        super().__enter__()
        self._begin()
        return self

    @property
    def client(self):
        if self._client is None and self._start is not None:
            start, self._start = self._start, None
            cluster = start.take()
            if cluster is not None:
                self._cluster = cluster  # the parent connects to it ...
                self._exit_stack.callback(cluster.close)  # ... and we close it with the runner
                self.timings = start.seconds
        return DaskTaskRunner.client.fget(self)

    def __exit__(self, *args) -> None:
        start, self._start = self._start, None
        if start is not None:  # entered, never used (no task submitted): stop what was started
            cluster = start.take()
            if cluster is not None:
                cluster.close()
        super().__exit__(*args)
