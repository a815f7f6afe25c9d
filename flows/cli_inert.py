"""Command options (outside the steps) that would have no effect: refused in one line naming
both, before any server or flow starts (the rule: docs/cli.md). ``run``, ``deploy`` and
``serve`` share the task-runner options; ``session list`` lists every session."""

from __future__ import annotations

from depthcraft.tasks.lib.errors import ParameterError


def refuse_runner_options(a) -> None:
    """``--dask-address`` with ``--task-runner threads``: the address of a Dask scheduler means
    nothing to threads (``--dask-address`` alone runs on that scheduler, ``deploy``'s rule)."""
    if getattr(a, "dask_address", None) and getattr(a, "task_runner", None) == "threads":
        raise ParameterError(f"--dask-address {a.dask_address} has no effect with --task-runner threads: it is the "
                             "Dask scheduler that dask runs on", parameter="--dask-address",
                             hint="leave out --dask-address, or use --task-runner dask")


def refuse_deploy_options(a) -> None:
    refuse_runner_options(a)
    if getattr(a, "work_queue", None) and not getattr(a, "work_pool", None):
        raise ParameterError(f"--work-queue {a.work_queue} has no effect without --work-pool: a queue is part of "
                             "a work pool (without one, runs execute where the recipe is served)",
                             parameter="--work-queue", hint="add --work-pool NAME, or leave out --work-queue")


def refuse_session_options(a) -> None:
    if a.action == "list" and a.id:
        raise ParameterError(f"session id {a.id!r} has no effect with `session list`, which lists every session",
                             parameter="id", hint=f"`depthcraft session show {a.id}` shows its turns")


def refuse_server_options(a, ws) -> None:
    """``--port`` for anything but ``server start``, or for a server already running elsewhere."""
    if a.port is None:
        return
    if a.action != "start":
        raise ParameterError(f"--port {a.port} has no effect with `server {a.action}`: it is the port a new server "
                             "listens on", parameter="--port", hint="leave out --port")
    from urllib.parse import urlparse

    from . import server

    st = server.status(ws)
    if st and server.healthy(st["url"]) and urlparse(st["url"]).port != a.port:
        raise ParameterError(f"--port {a.port} has no effect: the server is already running on {st['url']}",
                             parameter="--port", hint="`depthcraft server stop` first to start it on another port")
