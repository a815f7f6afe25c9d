#!/usr/bin/env python3
"""Flow overhead: the showcase recipe, first run and fully cached re-run, next to the floor.

The floor is a trivial Prefect flow (one task) on the same local server, in the same process,
measured in the same run: it is what any Prefect flow costs here. Each figure is the median of
``--repeat`` runs; the first run uses a fresh workspace every time (nothing cached).

usage: bench/bench_flow.py [--recipe recipes/showcase.yaml] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default=str(REPO / "recipes" / "showcase.yaml"))
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()

    from depthcraft.flows import server
    from depthcraft.flows.workspace import Workspace

    tmp = Path(tempfile.mkdtemp(prefix="dc-bench-flow-"))
    srv_ws = Workspace.default(tmp / "server")
    t0 = time.perf_counter()
    url = server.start(srv_ws, ui=False)["url"] if not os.environ.get("PREFECT_API_URL") else os.environ["PREFECT_API_URL"]
    server_start = time.perf_counter() - t0
    os.environ["PREFECT_API_URL"] = url
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_FLOW_RUNS_LEVEL", "CRITICAL")
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_TASK_RUNS_LEVEL", "CRITICAL")
    try:
        from prefect import flow, task

        from depthcraft.flows.runner import run_recipe

        @task
        def one(x: int) -> int:
            return x + 1

        @flow(name="bench-trivial")
        def trivial() -> int:
            return one.submit(1).result()

        trivial()  # warm imports and the server's first-request paths

        def timed(fn) -> float:
            t = time.perf_counter()
            fn()
            return time.perf_counter() - t

        floor, first, cached = [], [], []
        for i in range(a.repeat):
            ws = tmp / f"ws{i}"
            out = tmp / f"out{i}"
            floor.append(timed(trivial))
            first.append(timed(lambda: run_recipe(a.recipe, out_root=str(out), workspace=str(ws))))
            cached.append(timed(lambda: run_recipe(a.recipe, out_root=str(out), workspace=str(ws))))
        med = statistics.median
        rows = [("local Prefect server start (once per machine)", server_start),
                ("trivial Prefect flow, 1 task (the floor)", med(floor)),
                (f"{Path(a.recipe).name}: first run", med(first)),
                (f"{Path(a.recipe).name}: fully cached re-run", med(cached))]
        print(f"\nflow overhead, median of {a.repeat} (2-core machine, same server, same process)\n")
        print(f"| {'what':52s} | {'seconds':>8s} | {'x floor':>7s} |")
        print(f"|{'-' * 54}|{'-' * 10}|{'-' * 9}|")
        for name, s in rows:
            print(f"| {name:52s} | {s:8.2f} | {s / med(floor):7.1f} |")
    finally:
        if not os.environ.get("DC_BENCH_KEEP"):
            server.stop(srv_ws)
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
