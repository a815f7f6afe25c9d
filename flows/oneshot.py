"""One-shot commands: one step on one image, no recipe and no flow.

``depthcraft <step> IMAGE -o OUT [--depth D --depth-kind K] [--<param> VALUE ...]``. Every
scalar parameter of the step becomes a ``--param-name`` option; others are set with
``--set name=value`` (YAML values). The suffix of ``-o`` may pick parameters (a format, a
container) through the step's ``params_for_output``, and must agree with those given
(``depthcraft.tasks.lib.outputs``). The step's main output is written to
``OUT``; its other published outputs next to it as ``<OUT stem>-<name><suffix>``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import types
import typing
import uuid
from pathlib import Path
from typing import Any, Literal

import yaml

from depthcraft.tasks.catalog import steps
from depthcraft.tasks.lib.depthmap import USER_KINDS
from depthcraft.tasks.lib.errors import InputError, ParameterError
from depthcraft.tasks.lib.step import StepContext, StepSpec
from depthcraft.tasks.lib.store import Artifact, atomic_copy, sha256_file

GENERIC = {"output", "depth", "depth_kind", "provider", "mode", "session", "set", "max_pixels", "downscale", "image",
           "answer"}


def _scalar_type(ann) -> tuple[str, Any] | None:
    """('bool'|'choice'|'value', choices) for annotations a command-line flag can carry."""
    origin = typing.get_origin(ann)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if len(args) == 1:
            return _scalar_type(args[0])
        if all(a in (int, float, str) for a in args):
            return ("value", None)
        return None
    if origin is Literal:
        return ("choice", [str(a) for a in typing.get_args(ann)])
    if ann is bool:
        return ("bool", None)
    if ann in (int, float, str):
        return ("value", None)
    return None


def add_step_parser(sub, spec: StepSpec) -> None:
    p = sub.add_parser(spec.kind, help=spec.summary, description=f"{spec.summary}. " + __doc__.split("\n\n")[1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", help="the photo (JPEG, PNG, WebP, TIFF...) or clip (MP4, MOV, MKV, WebM, AVI, animated GIF/WebP/PNG; one frame is a photo)")
    p.add_argument("-o", "--output", required=True, action="append",  # (once: a second -o silently won)
                   help="the file to write: its suffix chooses the format, and must agree with an explicit one")
    p.add_argument("--depth", help="a depth map for the photo (PNG 8/16-bit, PGM, PFM, NPY, NPZ)")
    p.add_argument("--depth-kind", choices=sorted(USER_KINDS), default=None,
                   help="what --depth values mean: disparity/relative (larger = nearer) or depth/metric "
                        "(larger = farther); default: what a depthcraft file records, else disparity")
    p.add_argument("--provider", default="auto",
                   help="auto (the best model in the cache, else Depth Anything V2 Small downloaded once, else "
                        "classic) | classic | onnx:<model or path> | eachsense")
    p.add_argument("--offline", action="store_true", help="never download (as DEPTHCRAFT_OFFLINE=1): auto uses a "
                   "cached model or classic")
    p.add_argument("--mode", choices=["max", "eco"], default="max", help="provider quality")
    p.add_argument("--session", help="session id (remote providers continue it)")
    p.add_argument("--max-pixels", type=int, help="refuse photos larger than this many pixels (default 50 MP)")
    p.add_argument("--downscale", action="store_true", help="downscale photos over the limit instead of refusing")
    p.add_argument("--answer", action="append", default=[], metavar="QUESTION=ANSWER",
                   help="answer a remote provider's clarification question (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="set any parameter, including nested ones (YAML value)")
    for name, f in spec.params.model_fields.items():
        if name in GENERIC:
            continue
        kind = _scalar_type(f.annotation)
        if kind is None:
            continue
        flag = "--" + name.replace("_", "-")
        help_ = (f.description or "") + (f" (default: {f.default})" if f.default is not None and not callable(f.default) else "")
        help_ = help_.replace("%", "%%")
        if kind[0] == "bool":
            p.add_argument(flag, dest=f"param_{name}", action=argparse.BooleanOptionalAction, default=None, help=help_)
        elif kind[0] == "choice":
            p.add_argument(flag, dest=f"param_{name}", choices=kind[1], default=None, help=help_)
        else:
            p.add_argument(flag, dest=f"param_{name}", default=None, metavar=name.upper(), help=help_)
    p.set_defaults(func=run_oneshot, step_kind=spec.kind)


def register(sub, command: str | None = None) -> None:
    """Add a sub-command per step kind. When ``command`` names the one being run, only that
    step's module is imported (the others get a bare entry): each one-shot starts faster."""
    from depthcraft.tasks.catalog import STEP_MODULES, get_step

    for name in STEP_MODULES:
        if command is None or command == name:
            add_step_parser(sub, get_step(name))
        else:
            sub.add_parser(name, add_help=False)


def params_from_args(spec: StepSpec, args) -> Any:
    values: dict[str, Any] = {}  # what the user gave; the -o suffix fills in the rest (tasks/lib/outputs.py)
    for name in spec.params.model_fields:
        v = getattr(args, f"param_{name}", None)
        if v is not None:
            values[name] = v
    for s in args.set:
        if "=" not in s:
            raise ParameterError(f"--set {s!r}: expected NAME=VALUE", parameter="--set")
        k, raw = s.split("=", 1)
        node = values
        parts = k.strip().split(".")
        for i, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):  # (`--divergence 2 --set divergence.x=1`: a TypeError traceback)
                raise ParameterError(f"--set {s!r}: {'.'.join(parts[:i + 1])} is already set to {node!r}, which "
                                     "has no parts", parameter="--set", hint="give the parameter once")
        from .yamlsafe import YamlDuplicateKeyError, YamlLimitError, safe_value

        try:  # (within the recipe's limits: a duplicate key, an alias bomb are one line, as in recipes)
            new = safe_value(raw) if raw else ""
        except (YamlDuplicateKeyError, YamlLimitError) as e:
            said = s if len(s) <= 80 else f"{s[:60]}... ({len(s)} characters)"
            raise ParameterError(f"--set {said!r}: {e.message}", parameter="--set") from None
        except yaml.YAMLError as e:  # (e.g. an unclosed list: `--set divergence=[1`)
            raise ParameterError(f"--set {s!r}: the value is not YAML ({getattr(e, 'problem', None) or e})",
                                 parameter="--set", hint="quote it, or write a YAML value: 2, [1, 2], {a: 1}") from None
        flag = getattr(args, f"param_{parts[0]}", None) if len(parts) == 1 else None
        if flag is not None and new != flag and str(new) != str(flag) and new != yaml.safe_load(str(flag)):
            # two explicit values for one parameter: neither silently wins (e.g. the output's format)
            opt = "--" + parts[0].replace("_", "-")
            raise ParameterError(f"{opt} {flag} and --set {k.strip()}={raw} disagree", parameter=opt,
                                 hint="give the parameter once")
        node[parts[-1]] = new
    from depthcraft.tasks.lib.outputs import refuse_input, resolve

    if str(args.output).strip() != "-":
        refuse_input(args.output, {"the input": args.image, "--depth": getattr(args, "depth", None)})
    flags = {k: f"--set {k}=" for k in values if getattr(args, f"param_{k}", None) is None}
    params = resolve(spec, args.output, values, validate=lambda v: _validate(spec, v), flags=flags)
    from .oneshot_inert import refuse_inert_params

    refuse_inert_params(spec, params, values, args)  # a parameter given that would have no effect
    return params


def _validate(spec: StepSpec, values: dict) -> Any:
    from pydantic import ValidationError

    try:
        return spec.params.model_validate(values)
    except ValidationError as e:
        err = e.errors()[0]
        name = ".".join(str(x) for x in err["loc"])
        if err["type"] == "extra_forbidden":
            raise ParameterError(f"{spec.kind} has no parameter {name!r}", parameter=name,
                                 hint=f"`depthcraft steps {spec.kind}` lists them") from None
        raise ParameterError(f"{err['msg']} (got {err.get('input')!r})", parameter="--" + name.replace("_", "-")) from None


def run_oneshot(args) -> int:
    from rich.console import Console

    from . import progress, recovery

    spec = steps()[args.step_kind]
    for what, name in (("the photo", args.image), ("--depth", args.depth)):
        if name is not None and not str(name).strip():  # ("" was "." (a folder); --depth "" was no --depth at all)
            raise InputError(f"{what}: an empty file name", path=repr(str(name)),
                             hint="an unset shell variable? give the file's name")
    if isinstance(args.output, list):  # -o given twice: the first one was silently dropped
        if len(args.output) > 1:
            raise ParameterError(f"-o {args.output[0]} has no effect with -o {args.output[-1]}: one command writes "
                                 "one output", parameter="-o", hint="give -o once")
        args.output = args.output[0]
    if args.max_pixels is not None and args.max_pixels < 1:  # (0 was the default limit, -5 "the limit of -0 MP")
        raise ParameterError(f"{args.max_pixels} is not a number of pixels >= 1", parameter="--max-pixels")
    from depthcraft.tasks.lib.clip import is_clip

    from .oneshot_inert import refuse_inert_options

    refuse_inert_options(spec, args, clip=is_clip(args.image))  # e.g. --depth-kind without --depth
    if is_clip(args.image):  # a video or an animated GIF/WebP (flows/oneshot_clip.py)
        from .oneshot_clip import run_clip_oneshot

        return run_clip_oneshot(args, spec, params_from_args)
    from depthcraft.tasks.lib.outputs import refuse_stdout

    refuse_stdout(args.output)  # '-' or an empty name, before the folder check
    try:
        out_is_dir = Path(args.output).is_dir()
    except OSError as e:  # (a name too long for the file system)
        raise ParameterError(f"{args.output}: {e.strerror or e}", parameter="-o") from None
    if str(args.output).endswith(("/", os.sep)) or out_is_dir:
        # a folder is what a clip writes (one file per frame); a photo (a 1-frame GIF too) is one file
        raise ParameterError(f"{args.output!r} is a folder, which only clips write (one file per frame); "
                             f"{Path(args.image).name} is a single picture", parameter="-o",
                             hint="give a file name, e.g. -o " + str(Path(args.output) / (Path(args.image).stem + ".png")))
    try:
        params = params_from_args(spec, args)
    except ParameterError as e:  # a 1-frame video/GIF asked for a video: say why it is a photo here
        from .oneshot_clip import single_frame_note

        raise single_frame_note(e, args.image) from None
    from depthcraft.tasks.lib.outputs import can_write

    can_write(args.output)  # before any work: a folder that takes no new files (/proc, a read-only mount) failed at the end
    img = Path(args.image)
    if not img.exists():
        raise InputError("no such file", path=str(img))
    if img.is_dir():  # (a recipe takes a folder of photos; one-shot commands take one photo)
        raise InputError("is a folder, not a photo", path=str(img),
                         hint="give one photo or clip")
    source = Artifact(path=str(img.resolve()), sha256=sha256_file(img), kind="image", meta={"origin": str(img), "name": img.stem})
    given = None
    if args.depth:
        d = Path(args.depth)
        if not d.exists():
            raise InputError("no such depth file", path=str(d))
        from depthcraft.tasks.lib.depthio import read_depth

        read_depth(d)  # a colour picture, a truncated or huge file: refused before any work
        given = Artifact(path=str(d.resolve()), sha256=sha256_file(d), kind="depth",
                         meta={"kind": USER_KINDS[args.depth_kind] if args.depth_kind else None, "source": "given",
                               "given_path": str(d)})
    session = args.session or f"oneshot-{uuid.uuid4().hex[:10]}"
    provider = args.provider
    asked = spec.uses_provider and not (spec.kind == "estimate" and given is not None)  # (a given map is the estimate)
    if provider == "auto" and (asked or (spec.needs_depth and given is None)):
        from depthcraft.tasks.providers import resolve_spec

        provider = resolve_spec(provider)  # once, before any step: it may download, or say why not
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True, soft_wrap=True)
    recovery.clean_stale_oneshot_tmp()  # what a killed one-shot left (a partial video)
    with tempfile.TemporaryDirectory(prefix=recovery.oneshot_tmp_prefix()) as tmp:
        answers = dict(a.split("=", 1) for a in args.answer if "=" in a)
        options = {"max_pixels": args.max_pixels, "downscale": args.downscale, "answers": answers}
        ctx = StepContext(step_id=spec.kind, image_name=img.stem, source=source, workdir=Path(tmp) / "work",
                          session_id=session, provider=provider, mode=args.mode, given_depth=given,
                          options={**options, "step_provider": args.provider not in ("classic", "auto")})
        if spec.needs_depth and given is None:
            ctx.upstream = [_estimate_first(ctx, Path(tmp) / "estimate")]
        reporter = progress.RichReporter(total=1, description=spec.kind, transient=True) if console.is_terminal else None
        if reporter:
            ctx.progress = lambda d, t: reporter.update("frames", d, t)
            with reporter, progress.reporting(reporter):
                produced = spec.run(ctx, params)
        else:
            produced = spec.run(ctx, params)
        written = []
        dest = {name: out if name == spec.primary else out.with_name(f"{out.stem}-{name}{Path(o.path).suffix}")
                for name, o in produced.items()}
        for name, o in produced.items():
            owner = o.meta.get("sidecar_of")
            if owner in dest:  # metadata sidecar: <the written file>.json
                dst = dest[owner].with_name(dest[owner].name + ".json")
            elif name == spec.primary or o.publish:
                dst = dest[name]
            else:
                continue
            written.append((o.path, dst))
        from depthcraft.tasks.lib.outputs import refuse_input

        for _, dst in written:  # a file beside the output may carry an input's name (`-o pair.jpg` on pair-right.jpg)
            refuse_input(dst, {"the input": img, "--depth": args.depth},
                         parameter="-o" if dst == out else f"-o (beside it, {dst.name})")
        for _, dst in written:  # a folder under an output's name: said before any file is replaced (not half the set)
            if dst.is_dir():
                raise ParameterError(f"{dst}: a folder is in the way of this output; nothing was written",
                                     parameter="-o" if dst == out else f"-o (beside it, {dst.name})")
        from .outlock import oneshot_writing

        with oneshot_writing(out):  # (two one-shots writing one -o at once: one's set of files, never a mix)
            for src, dst in written:
                try:
                    atomic_copy(src, dst)
                except OSError as e:  # (a folder that takes no new files, such as /proc; a name too long; a full disk)
                    raise ParameterError(f"{dst}: cannot write it ({e.strerror or e})", parameter="-o") from None
        written = [dst for _, dst in written]
    for w in written:
        console.print(f"wrote {w}")
    return 0


def _estimate_first(ctx: StepContext, workdir: Path) -> dict[str, Artifact]:
    """A step that needs depth but got no --depth: estimate it with the provider first."""
    est = steps()["estimate"]
    sub = StepContext(step_id="estimate", image_name=ctx.image_name, source=ctx.source, workdir=workdir,
                      session_id=ctx.session_id, provider=ctx.provider, mode=ctx.mode, options=ctx.options)
    sub._photo = ctx.photo()
    produced = est.run(sub, est.params())
    ctx._photo, ctx._photo_full = sub._photo, sub._photo_full
    d = produced["depth"]
    keep = workdir.parent / "estimated-depth.npy"
    shutil.copyfile(d.path, keep)
    return {"depth": Artifact(path=str(keep), sha256=sha256_file(keep), kind="depth", meta=d.meta)}
