"""``depthcraft models list | pull NAME | verify [NAME]``: the ONNX model cache from the command line.

Only parses arguments and calls :mod:`tasks.models`; :func:`register` adds the sub-command to
the main parser.
"""

from __future__ import annotations

import argparse
import os

from depthcraft.tasks.lib import models as M
from depthcraft.tasks.lib.errors import DepthcraftError


def _console(stderr: bool = False):
    import sys

    from rich.console import Console

    # Piped output (logs, tests) gets a wide fixed width rather than rich's 80 columns.
    stream = sys.stderr if stderr else sys.stdout
    return Console(highlight=False, stderr=stderr, width=None if stream.isatty() else 160)


_STATE_STYLE = {"verified": "green", "corrupt": "red", "unverified": "yellow", "partial": "yellow",
                "unreadable": "red", "unpinned": "yellow"}


def _cache_problem(folder) -> str | None:
    """None when the cache folder is there and readable, or not there yet; else why not."""
    import os

    try:
        os.listdir(folder)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return "it is not a folder"
    except OSError as e:
        return e.strerror or str(e)
    return None


def cmd_list(args) -> int:
    from rich.markup import escape
    from rich.table import Table

    con = _console()
    folder = M.models_dir()
    why = _cache_problem(folder)
    if why:
        raise M.ModelError(f"cannot read the model cache {folder}: {why}",
                           hint="make it readable, or set DEPTHCRAFT_MODELS_DIR to another folder")
    table = Table(title=f"ONNX depth models (cache: {folder})")
    for col in ("name", "output", "input", "licence", "size", "cached", "pinned"):
        table.add_column(col, no_wrap=col in ("name", "cached", "pinned"))
    trusted = M.trusted_hashes()
    advice = []
    for info in M.REGISTRY.values():
        out = "meters" + (f" (<= {info.max_depth_m:g} m)" if info.max_depth_m else "") if info.output == "metric" \
            else "relative"
        lic = info.licence + ("" if info.commercial_use else " [yellow](non-commercial)[/]")
        pinned = "yes" if info.pinned else ("recorded" if info.name in trusted else "[yellow]no[/]")
        st = M.cache_state(info)
        if st.advice:
            advice.append(f"{info.name}: {st.text}: {st.advice}")
        style = _STATE_STYLE.get(st.state)
        cached = f"[{style}]{escape(st.text)}[/]" if style else escape(st.text)
        table.add_row(info.name, out, info.input_text(), lic, info.size_text(), cached, pinned)
    con.print(table)
    if getattr(args, "models_long", False):
        for info in M.REGISTRY.values():
            con.print(f"[bold]{info.name}[/]: {info.description}\n  url: {info.url}\n  sha256: "
                      f"{info.sha256 or 'not pinned'} ({info.sha256_note})")
    for line in advice:  # "verified": the last hash of the file matched, and the file has not changed since
        con.print(escape(line), soft_wrap=True)
    if not folder.exists():
        con.print(f"(no model cache yet: {folder} is made by the first pull)")
    con.print("Use one with `--provider onnx:NAME` (downloaded on first use when pinned), or fetch it now with "
              "`depthcraft models pull NAME`.")
    return 0


def _model(name: str, action: str):
    """The registry entry; an unknown name is said as the argument it is (it said "parameter 'provider'")."""
    from depthcraft.tasks.lib.errors import ParameterError

    try:
        return M.get_model(name)
    except ParameterError as e:
        raise ParameterError(e.reason, parameter=f"models {action} NAME", hint=e.hint) from None


def cmd_pull(args) -> int:
    con = _console()
    info = _model(args.name, "pull")
    if M.cached_ok(info) and not args.force:  # a file that fails its hash is downloaded again
        con.print(f"{info.name} is already in the cache: {M.cached_path(info)} (`depthcraft models verify "
                  f"{info.name}` re-hashes it; --force downloads it again)")
        return 0
    if M.is_offline():  # (DEPTHCRAFT_OFFLINE means no download at all, asked for or not)
        raise M.ModelError(f"not downloading {info.name}: DEPTHCRAFT_OFFLINE="
                           f"{os.environ.get('DEPTHCRAFT_OFFLINE', '').strip()} forbids downloads",
                           hint="unset DEPTHCRAFT_OFFLINE to pull it")
    path = M.pull(info, trust_unpinned=args.trust_unpinned, force=args.force, progress=not args.quiet,
                  say=lambda s: con.print(s, markup=False))
    con.print(f"{info.name}: {path}")
    return 0


def cmd_verify(args) -> int:
    from rich.markup import escape

    con = _console()
    why = _cache_problem(M.models_dir())  # (as list: a cache that cannot be read is not an empty one)
    if why:
        raise M.ModelError(f"cannot read the model cache {M.models_dir()}: {why}",
                           hint="make it readable, or set DEPTHCRAFT_MODELS_DIR to another folder")
    if args.name:
        _model(args.name, "verify")
    names = [args.name] if args.name else [n for n in M.REGISTRY if M.is_cached(M.REGISTRY[n])]
    if not names:
        con.print(f"no models in the cache ({M.models_dir()})")
        return 0
    bad = 0
    for name in names:
        r = M.verify(name)
        if r.status == "ok":
            con.print(f"[green]ok[/]        {name}  sha256 {r.got}")
            if r.not_recorded:  # else `models list` keeps advising a verify that changes nothing
                con.print(f"          (not recorded for `models list`, which keeps saying not verified: "
                          f"{r.not_recorded} in {r.path.parent})", markup=False)
        elif r.status == "unpinned":
            con.print(f"[yellow]unpinned[/]  {name}  sha256 {r.got} (no pinned or recorded hash to compare)")
        elif r.status == "empty":
            bad += 1
            con.print(f"[red]empty[/]     {name}  {r.path} is an empty file; delete it and run "
                      f"{M.repair_hint(M.get_model(name))}")
        elif r.status == "unloadable":  # an unpinned file that is not an ONNX model (lib/onnxfile.py)
            bad += 1
            con.print(f"[red]unloadable[/] {name}  {escape(str(r.path))} {escape(r.why or '')}; delete it or run "
                      f"{M.repair_hint(M.get_model(name))}", soft_wrap=True)
        elif r.status == "missing":
            bad += 1
            con.print(f"[red]missing[/]   {name}  not in {r.path.parent}; run `depthcraft models pull {name}`")
        else:
            bad += 1
            con.print(f"[red]MISMATCH[/]  {name}  expected {r.expected}, got {r.got}; delete {r.path} and run "
                      f"`depthcraft models pull {name}`")
    return 1 if bad else 0


def handler(args) -> int:
    """Run the chosen ``models`` action; a depthcraft error becomes one line and its exit code."""
    action = getattr(args, "models_action", None) or "list"
    fn = {"list": cmd_list, "pull": cmd_pull, "verify": cmd_verify}[action]
    try:
        return fn(args)
    except DepthcraftError as e:
        from rich.markup import escape

        # on stderr, as every other command's errors: `models list > inventory.txt` kept the error in the file
        _console(stderr=True).print(f"[red]error:[/] {escape(str(e))}", soft_wrap=True)  # one line, however long
        return e.exit_code


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``models`` (list | pull NAME | verify [NAME]) to the main parser's sub-commands."""
    p = subparsers.add_parser("models", help="list, download and verify the ONNX depth models",
                              description="The ONNX depth models: list them, download one into the user cache "
                                          "(DEPTHCRAFT_MODELS_DIR overrides the folder), verify cached files.")
    sub = p.add_subparsers(dest="models_action")
    pl = sub.add_parser("list", help="the models, their licences, and which are cached (verified, not verified "
                                     "yet, corrupt, partial)")
    pl.add_argument("-l", "--long", dest="models_long", action="store_true",
                    help="also print descriptions, URLs and hashes")
    pp = sub.add_parser("pull", help="download a model (resumable, verified by sha256)")
    pp.add_argument("name", help="a model name from `depthcraft models list`")
    pp.add_argument("--trust-unpinned", action="store_true",
                    help="download a model that has no pinned sha256, and record the hash it gets")
    pp.add_argument("--force", action="store_true", help="download again even when cached")
    pp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    pv = sub.add_parser("verify", help="re-hash cached models against their pinned sha256 and load them")
    pv.add_argument("name", nargs="?", help="one model (default: every cached one)")
    p.set_defaults(func=handler)
    return p


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m flows.cli_models list``), for use before the main CLI exists."""
    parser = argparse.ArgumentParser(prog="depthcraft")
    register(parser.add_subparsers(dest="command"))
    import sys

    args = parser.parse_args(["models", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
