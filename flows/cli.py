"""The ``depthcraft`` command: parses arguments and calls the same functions recipes reach.

Errors raised on purpose (:class:`depthcraft.tasks.lib.errors.DepthcraftError`) become one clear line on
stderr and a non-zero exit; ``-v`` shows Prefect's logs and full tracebacks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from depthcraft.tasks.lib.errors import DepthcraftError

from .workspace import Workspace


def _console():
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def _quiet_prefect(verbose: bool) -> None:
    """Prefect's console logs would bury our progress bars; the UI and API keep them all."""
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_FLOW_RUNS_LEVEL", "CRITICAL")
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_TASK_RUNS_LEVEL", "CRITICAL")


# -- run, validate, plan ---------------------------------------------------------------------
def cmd_run(a) -> int:
    from .cli_inert import refuse_runner_options
    from .recipe import load_recipe

    refuse_runner_options(a)  # --dask-address with --task-runner threads

    ws = Workspace.default(a.workspace)
    recipe, src = load_recipe(a.recipe, overrides=a.set)
    from .fetch import run_scope

    with run_scope():  # a URL input is fetched once per run, even when it fails
        return _run(a, ws, recipe, src)


def _run(a, ws, recipe, src) -> int:
    from .compile import compile_plan

    # compile once here so that bad inputs and parameters fail before any server or flow starts
    if a.out:  # (an output root that is a file, too long a name, a folder that takes no new files)
        from depthcraft.tasks.lib.outputs import can_write

        can_write(a.out, parameter="--out", is_folder=True)
    plan = compile_plan(recipe, src, ws, out_root=a.out)
    from .server import ensure_api

    _quiet_prefect(a.verbose)
    t0 = time.time()
    url = ensure_api(ws, watch=_summary_printer(a))
    from . import interrupt, progress, recovery
    from .runner import RunFailed, run_recipe

    total = len(plan.nodes)
    con = _console()
    recovery.recover(ws, url, say=_plain(con))  # what a killed run left: work folders, flow runs still Running
    reporter = progress.RichReporter(total=total, description=f"{recipe.name}") if con.is_terminal else None
    try:
        if reporter:
            with reporter, progress.reporting(reporter):
                summary = interrupt.run_flow(lambda: run_recipe(
                    a.recipe, overrides=a.set, out_root=a.out, workspace=str(ws.root), refresh=a.refresh,
                    task_runner=_task_runner(a, recipe)), ws=ws, say=_plain(con))
        else:
            summary = interrupt.run_flow(lambda: run_recipe(
                a.recipe, overrides=a.set, out_root=a.out, workspace=str(ws.root), refresh=a.refresh,
                task_runner=_task_runner(a, recipe)), ws=ws, say=_plain(con))
        failed = False
    except RunFailed as e:
        summary, failed = e.summary, True
    recovery.clean_own_tmp(ws)
    _print_summary(con, summary, time.time() - t0)
    if a.json:
        print(json.dumps(summary, indent=1))
    return 1 if failed else 0


def _plain(con):
    """Print plain text lines (file and step names like ``edges[photo]`` are not rich markup)."""
    from rich.markup import escape

    return lambda line: con.print(escape(line))


def _task_runner(a, recipe):
    # (--dask-address alone runs on that scheduler, as deploy and serve do; it was silently unused)
    kind = getattr(a, "task_runner", None) or ("dask" if getattr(a, "dask_address", None) else recipe.task_runner)
    if kind == "dask":
        from .scale import dask_runner

        # prestart: the local cluster starts (and its workers import) while the flow compiles
        return dask_runner(recipe, address=getattr(a, "dask_address", None), prestart=True)
    return None


def _summary_printer(a):
    """What prints a run's summary if the server stops under it (the watchdog): as the run would."""
    def show(con, s: dict, seconds: float) -> None:
        _print_summary(con, s, seconds)
        if getattr(a, "json", False):
            print(json.dumps(s, indent=1), flush=True)
    return show


def _print_summary(con, s: dict, seconds: float) -> None:
    from rich.markup import escape

    con.print(f"[bold]{s['recipe']}[/]: {s['images']} image(s), {s['nodes']} step run(s): "
              f"{s['computed']} computed, {s['cached']} cached, {len(s['failures'])} failed "
              f"in {seconds:.1f} s  (session {s['session_id']})")
    for f in s["failures"]:
        where = f"{f['step']} on {f['image']}" if f["step"] else f["image"]
        con.print(f"  [red]failed[/] {escape(where)}: {escape(f['error'])}")
    con.print(f"outputs in {s['out_dir']}; manifest {s['manifest']}")


def cmd_validate(a) -> int:
    from .compile import chain_text, compile_plan
    from .recipe import load_recipe

    recipe, src = load_recipe(a.recipe, overrides=a.set)
    plan = compile_plan(recipe, src, Workspace.default(a.workspace), out_root=a.out, fetch=False)
    if recipe.schedule:
        from .deploy import schedule_spec

        schedule_spec(recipe, src)  # a bad schedule is a recipe error too
    bad = [i for i in plan.images if i.error]
    con = _console()
    for i in bad:
        con.print(f"[red]error[/] {i.error}")
    if bad:
        return 2
    con.print(f"{a.recipe}: ok ({len(plan.images)} image(s), {len(plan.order)} step(s): {chain_text(plan.order)})")
    return 0


def cmd_plan(a) -> int:
    from rich.table import Table

    from .compile import compile_plan
    from .recipe import load_recipe

    ws = Workspace.default(a.workspace)
    recipe, src = load_recipe(a.recipe, overrides=a.set)
    plan = compile_plan(recipe, src, ws, out_root=a.out, pull_models=False)
    store = ws.store
    t = Table(title=f"{recipe.name}: session {plan.session_id}")
    for c in ("step", "uses", "from", "image", "cached", "key"):
        t.add_column(c)
    decl = {s.id: s for s in recipe.steps}
    for img in plan.images:
        for sid in plan.order:
            node = plan.nodes.get((sid, img.name))
            if node is None:
                t.add_row(sid, decl[sid].uses, ", ".join(decl[sid].from_), img.name, "[red]input error[/]", "")
                continue
            t.add_row(sid, node.kind, ", ".join(node.upstream) or "-", img.name,
                      "yes" if store.has(node.key) else "no", node.key[:12])
            if img.name in plan.clips:  # a clip: its segments, each a task run of its own
                from .segments import segment_rows

                for row in segment_rows(plan, store, sid, img.name):
                    t.add_row(*row)
    from rich.console import Console

    Console().print(t)
    for img in plan.images:
        if img.error:
            _console().print(f"[red]error[/] {img.error}")
    return 0


# -- steps -----------------------------------------------------------------------------------
def cmd_steps(a) -> int:
    from rich.console import Console
    from rich.table import Table

    from depthcraft.tasks.catalog import get_step, steps

    con = Console()
    kinds = list(a.kind) if a.kind else sorted(steps())
    if a.markdown:
        print(steps_markdown(kinds))
        return 0
    for k in kinds:
        spec = get_step(k)
        t = Table(title=f"{k}: {spec.summary}", title_justify="left", show_lines=False)
        t.add_column("parameter")
        t.add_column("default")
        t.add_column("meaning")
        for name, f in spec.params.model_fields.items():
            default = f.default_factory() if f.default_factory else f.default
            if hasattr(default, "model_dump"):
                default = {k2: v for k2, v in default.model_dump().items() if v is not None} or "{}"
            t.add_row(name, json.dumps(default, default=str), f.description or "")
        con.print(t)
    return 0


def _default_text(f) -> str:
    default = f.default_factory() if f.default_factory else f.default
    if hasattr(default, "model_dump"):
        default = {k: v for k, v in default.model_dump().items() if v is not None} or {}
    return json.dumps(default, default=str)


def steps_markdown(kinds: list[str]) -> str:
    """The step reference as Markdown (the README's copy is generated by this)."""
    from depthcraft.tasks.catalog import get_step

    out = []
    for k in kinds:
        spec = get_step(k)
        out.append(f"#### `{k}`: {spec.summary}\n")
        out.append("| parameter | default | meaning |\n|---|---|---|")
        for name, f in spec.params.model_fields.items():
            desc = (f.description or "").replace("|", "\\|")
            out.append(f"| `{name}` | `{_default_text(f)}` | {desc} |")
        out.append("")
    return "\n".join(out)


# -- sessions, server, reproduce, runs -------------------------------------------------------
def cmd_session(a) -> int:
    from rich.console import Console
    from rich.table import Table

    from .session import SessionLog, list_sessions

    ws = Workspace.default(a.workspace)
    con = Console()
    from .cli_inert import refuse_session_options

    refuse_session_options(a)  # `session list ID`: the id did nothing
    if a.action == "list" and a.json:  # (--json was silently a table here)
        print(json.dumps([{"session": sid, "turns": n, "last_turn": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(m))}
                          for sid, n, m in list_sessions(ws)], indent=1))
        return 0
    if a.action == "list":
        t = Table(title="sessions")
        for c in ("session", "turns", "last turn"):
            t.add_column(c)
        for sid, n, mtime in list_sessions(ws):
            t.add_row(sid, str(n), time.strftime("%Y-%m-%d %H:%M", time.localtime(mtime)))
        con.print(t)
        return 0
    if not a.id:
        raise DepthcraftError("session show needs an id", hint="`depthcraft session list` shows them")
    log = SessionLog(ws, a.id)
    turns = log.turns()
    if not turns:
        raise DepthcraftError(f"no session {a.id!r} in {ws.sessions}", hint="`depthcraft session list` shows them")
    if a.json:
        print(json.dumps(turns, indent=1))
        return 0
    t = Table(title=f"session {a.id}: {len(turns)} turn(s)")
    for c in ("#", "time", "step", "image", "provider", "status", "s", "outputs"):
        t.add_column(c)
    for i, turn in enumerate(turns, 1):
        outs = ", ".join(Path(o["path"]).name for o in (turn.get("outputs") or {}).values())
        t.add_row(str(i), turn.get("time", "")[11:19], f"{turn.get('step')} ({turn.get('kind')})", str(turn.get("image")),
                  str(turn.get("provider")), turn.get("status", ""), str(turn.get("seconds", "")),
                  outs or turn.get("error", ""))
    con.print(t)
    return 0


def cmd_server(a) -> int:
    from . import server

    ws = Workspace.default(a.workspace)
    con = _console()
    from .cli_inert import refuse_server_options

    refuse_server_options(a, ws)  # --port that no server would listen on
    if a.action == "start":
        st = server.start(ws, port=a.port)
        con.print(f"Prefect server on {st['url']} (pid {st['pid']}); UI at {st['url'][:-4]}; log {st['log']}")
    elif a.action == "stop":
        if not getattr(a, "force", False) and server.clients_active(ws):
            # (stopping it under a run ends that run with exit 75; `reset` refuses the same way)
            raise server.ServerError("another depthcraft command is using the local Prefect server; stopping it "
                                     "would end that command", hint="wait for it to finish, or `depthcraft server "
                                     "stop --force`")
        con.print("stopped" if server.stop(ws) else "no server was running")
    elif a.action == "reset":
        aside = server.reset(ws)
        con.print(f"moved the run history database aside to {aside}; the next run starts a fresh server"
                  if aside else "no database to reset; the next run starts a fresh server")
    else:
        st = server.status(ws)
        ext = os.environ.get("PREFECT_API_URL")
        if ext:
            con.print(f"PREFECT_API_URL is set: runs use {ext} (healthy: {server.healthy(ext)})")
        if st:
            idle = f"stops after {st['idle_s'] / 60:g} min without use" if st.get("idle_s") else "no idle stop"
            con.print(f"running: {st['url']} (pid {st['pid']}, healthy: {server.healthy(st['url'])}; {idle})")
        else:
            stray = server.workspace_processes(ws)
            if stray:
                con.print(f"not recorded in {ws.root / 'server.json'}: {len(stray)} process(es) of this workspace's "
                          f"server (pids {', '.join(str(p.pid) for p in stray)}); `depthcraft server stop` stops them")
            else:
                con.print("not running (`depthcraft run` starts it on first use)")
            return 0 if ext else 3
    return 0


def cmd_reproduce(a) -> int:
    from . import manifest as mf

    old = mf.read(a.manifest)
    from .manifest_check import check_inputs_exist

    check_inputs_exist(old, Path(a.manifest))  # one line naming a missing input, before any flow
    from .outlock import describe_partial

    if describe_partial(old):  # interrupted or killed: say so, compare what it recorded
        _plain(_console())(f"{a.manifest}: {describe_partial(old)}")
    r = old["recipe"]
    src_file = r["file"]
    ws = Workspace.default(a.workspace)
    from .server import ensure_api

    _quiet_prefect(a.verbose)
    url = ensure_api(ws, watch=_print_summary)
    from . import interrupt, recovery
    from .runner import RunFailed, flow_for
    from .recipe import load_recipe

    con = _console()
    recovery.recover(ws, url, say=_plain(con))
    out_root = a.out or old["out_root"]
    if out_root:  # (as run --out: one line before the flow, not a traceback from inside it)
        from depthcraft.tasks.lib.outputs import can_write

        can_write(out_root, parameter="--out" if a.out else "out_root (of the manifest's run)", is_folder=True)
    overrides = list(r["overrides"])
    pinned = ((old.get("provider") or {}).get("resolved") or {}).get("auto", {}).get("provider")
    if pinned and r.get("resolved", {}).get("provider") == "auto":  # what auto was then, not what it is now
        overrides.append(f"provider={pinned}")
    recipe, _ = load_recipe(src_file, overrides=overrides, text=r["text"])
    limit = (old.get("limits") or {}).get("max_pixels")
    if limit and recipe.inputs.max_pixels is None:  # the pixel limit in effect then (DEPTHCRAFT_MAX_PIXELS)
        os.environ["DEPTHCRAFT_MAX_PIXELS"] = str(limit)
    f = flow_for(recipe)
    try:
        summary = interrupt.run_flow(lambda: f(
            recipe_text=r["text"], recipe_file=src_file, overrides=overrides, out_root=out_root,
            workspace=str(ws.root), refresh=not a.use_cache), ws=ws, say=_plain(con))
    except RunFailed as e:
        summary = e.summary
    new = mf.read(summary["manifest"])
    # the files this run wrote, hashed on disk now, against what the manifest recorded
    diffs, measured = mf.measure_reproduction(old, new)
    n = len(mf.output_hashes(old))
    if not diffs:  # how each was made, from the new run's records: "recomputed" only when none was a cache hit
        con.print(f"reproduced: all {n} output(s) written and hashed again, each has the recorded sha256 "
                  f"({mf.how_made(new)})")
        return 0
    for d in diffs:
        con.print(f"[red]differs[/] {d['path']}: {d['why']} (recorded {str(d['recorded'])[:12]}, "
                  f"now {str(d['now'])[:12]})")
    changed = sum(bool(d.get("input")) for d in diffs)  # an input is not an output: counted apart
    con.print(f"{len(diffs) - changed} of {n} recorded output(s) differ ({measured} file(s) measured)"
              + (f"; {changed} input(s) changed" if changed else ""))
    return 1


def cmd_focus_stack(a) -> int:
    from depthcraft.tasks.lib.formats import write_format
    from depthcraft.tasks.focus_stack import focus_stack
    from depthcraft.tasks.lib.images import write_image
    from depthcraft.tasks.lib.outputs import check_image_output

    fmt = check_image_output(a.output, depth_out=a.depth_out)  # before any work: a suffix it cannot write
    if a.max_pixels is not None and a.max_pixels < 1:  # (0 was the default limit, as for the one-shot commands)
        from depthcraft.tasks.lib.errors import ParameterError

        raise ParameterError(f"{a.max_pixels} is not a number of pixels >= 1", parameter="--max-pixels")
    from depthcraft.tasks.lib.outputs import refuse_input

    for out, opt in ((a.output, "-o"), (a.depth_out, "--depth-out")):  # never over a photo of the bracket
        if out is not None:
            refuse_input(out, {f"the bracket's {Path(x).name}": x for x in a.images}, opt)
    if a.order and a.depth_out is None:  # (the order only says which end of the depth map is near)
        from depthcraft.tasks.lib.errors import ParameterError

        raise ParameterError(f"--order {a.order} has no effect without --depth-out: it says which end of the "
                             "depth map is near; the all-in-focus image is the same either way", parameter="--order",
                             hint="add --depth-out FILE, or leave out --order")
    rgb, dm = focus_stack(a.images, order=a.order or "near_first", align=not a.no_align, max_pixels=a.max_pixels,
                          downscale=a.downscale)
    import tempfile

    from depthcraft.tasks.lib.store import atomic_copy

    con = _console()
    for dst, write in ((a.output, lambda t: write_image(t, rgb)), (a.depth_out, lambda t: write_format(dm, fmt, t))):
        if dst is None:
            continue
        with tempfile.TemporaryDirectory() as tmp:  # written whole, then renamed: no half file under its name
            write(Path(tmp) / Path(dst).name)
            for f in sorted(Path(tmp).iterdir()):  # the file and any sidecar of it
                atomic_copy(f, Path(dst).with_name(f.name))
        con.print(f"wrote {dst}")
    return 0


# -- the parser ------------------------------------------------------------------------------
def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``command`` (the sub-command being run) only what it needs is imported."""
    p = argparse.ArgumentParser(prog="depthcraft", description="Depth maps and depth effects from photos, "
                                "as YAML recipes run by Prefect.")
    p.add_argument("-v", "--verbose", action="store_true", help="Prefect's logs and full tracebacks")
    p.add_argument("--workspace", help="state folder (default $DEPTHCRAFT_HOME or the user data folder)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def recipe_cmd(name, func, help_):
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.add_argument("recipe", help="the recipe YAML file")
        sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value, e.g. steps.video.with.duration=6 (repeatable)")
        sp.add_argument("--out", help="output root; the recipe's output template is resolved under it "
                        "(default: the current folder)")
        sp.add_argument("--offline", action="store_true", help="never download (as DEPTHCRAFT_OFFLINE=1): "
                        "provider auto uses a cached model or classic")
        sp.set_defaults(func=func)
        return sp

    r = recipe_cmd("run", cmd_run, "run a recipe as a Prefect flow")
    r.add_argument("--refresh", action="store_true", help="recompute every step (ignore the cache)")
    r.add_argument("--json", action="store_true", help="print the run summary as JSON on stdout")
    r.add_argument("--task-runner", choices=["threads", "dask"], help="override the recipe's task runner")
    r.add_argument("--dask-address", help="tcp://host:port of an existing Dask scheduler")
    recipe_cmd("validate", cmd_validate, "check a recipe (schema, steps, parameters, DAG, inputs)")
    recipe_cmd("plan", cmd_plan, "show the DAG of a recipe with what is already cached")

    s = sub.add_parser("steps", help="every step kind with its parameters and defaults")
    s.add_argument("kind", nargs="*")
    s.add_argument("--markdown", action="store_true", help="print the reference as Markdown")
    s.set_defaults(func=cmd_steps)

    se = sub.add_parser("session", help="show or list sessions")
    se.add_argument("action", choices=["show", "list"])
    se.add_argument("id", nargs="?")
    se.add_argument("--json", action="store_true")
    se.set_defaults(func=cmd_session)

    sv = sub.add_parser("server", help="the local Prefect server (start | stop | status | reset)")
    sv.add_argument("action", choices=["start", "stop", "status", "reset"],
                    help="reset: stop it and move its database (run history only) aside")
    sv.add_argument("--port", type=int)
    sv.add_argument("--force", action="store_true", help="stop: even while another command is using the server")
    sv.set_defaults(func=cmd_server)

    rp = sub.add_parser("reproduce", help="re-run a manifest's recipe and report outputs whose hash differs")
    rp.add_argument("manifest", help="manifest.json (or its folder)")
    rp.add_argument("--out", help="write to another output root instead of the recorded one")
    rp.add_argument("--use-cache", action="store_true", help="reuse cached artifacts instead of recomputing")
    rp.set_defaults(func=cmd_reproduce)

    ru = sub.add_parser("runs", help="recent runs with state, duration and output folder")
    ru.add_argument("recipe", nargs="?")
    ru.add_argument("--limit", type=int, default=20)
    ru.add_argument("--json", action="store_true", help="print the runs as JSON")
    from .cli_deploy import cmd_runs

    ru.set_defaults(func=cmd_runs)

    fs = sub.add_parser("focus-stack", help="all-in-focus image and depth-from-focus map from a focus bracket")
    fs.add_argument("images", nargs="+", help="the bracket: photos of one scene focused at different distances")
    fs.add_argument("-o", "--output", required=True, help="the all-in-focus image (.png, .jpg, .tif, .webp: by its suffix)")
    fs.add_argument("--depth-out", help="the depth-from-focus map, by its suffix (.png white = near, .npy, .pfm, .npz, .tif, .exr)")
    fs.add_argument("--order", choices=["near_first", "far_first"], default=None,
                    help="focus order of the bracket, for the depth map (default near_first: the first photo is "
                         "focused nearest)")
    fs.add_argument("--no-align", action="store_true", help="skip aligning the frames (tripod shots)")
    fs.add_argument("--max-pixels", type=int)
    fs.add_argument("--downscale", action="store_true")
    fs.set_defaults(func=cmd_focus_stack)

    from . import oneshot

    oneshot.register(sub, command)
    from . import cli_deploy, cli_models, cli_store

    cli_models.register(sub)
    cli_deploy.register(sub)
    cli_store.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # the first word that is not an option (or an option's value) is the sub-command
    words = [w for i, w in enumerate(argv) if not w.startswith("-") and (i == 0 or argv[i - 1] != "--workspace")]
    help_asked = not words or words[0] == "help"
    args = build_parser(None if help_asked else words[0]).parse_args(argv)
    from depthcraft.tasks.lib.notices import set_sink

    from . import interrupt

    # written, not printed: inside a flow run Prefect turns print() into a log record (log_prints)
    set_sink(lambda text: (sys.stderr.write(f"notice: {text}\n"), sys.stderr.flush()))
    # A local Dask cluster's worker processes hold multiprocessing semaphores; after Ctrl-C the
    # resource tracker (a helper process started with this interpreter's -W options) frees
    # them and would print a warning about each: it is clean-up working, not news.
    if "ignore:resource_tracker:UserWarning" not in sys.warnoptions:
        sys.warnoptions.append("ignore:resource_tracker:UserWarning")
    if getattr(args, "offline", False):
        os.environ["DEPTHCRAFT_OFFLINE"] = "1"  # read by provider auto, here and in the flow it starts
    interrupt.install()  # Ctrl-C / SIGTERM: stop within seconds, exit 130 / 143 (flows/interrupt.py)
    try:
        from .cli_paths import refuse_empty_paths

        refuse_empty_paths(args)  # --out '' (an unset shell variable) is not "no --out"
        return int(args.func(args) or 0)
    except DepthcraftError as e:
        from rich.markup import escape

        _console().print(f"[red]error:[/] {escape(str(e))}")
        if args.verbose:
            raise
        return e.exit_code
    except KeyboardInterrupt as e:  # SIGINT / SIGTERM (flows/interrupt.py); plain Ctrl-C without the handler
        _console().print(f"{str(e) or 'interrupted by SIGINT'}; finished outputs and cache entries are kept, "
                         "no output is left half-written")
        return getattr(e, "exit_code", 130)
    finally:
        interrupt.finished()


if __name__ == "__main__":
    sys.exit(main())
