"""One-shot commands: options that would have no effect, refused in one line before any work.

The step's own rules (a parameter made useless by another: ``--anaglyph`` with ``--layout sbs``)
live with each step (``StepSpec.inert``, :mod:`depthcraft.tasks.lib.inert`); here are those that
depend on the command line itself: the input (a photo or a clip), ``--depth`` and ``--provider``.
An option is refused only when the user gave it; a default that does not apply is not news.
"""

from __future__ import annotations

from typing import Any

from depthcraft.tasks.lib import inert
from depthcraft.tasks.lib.errors import ParameterError

# Photo settings that the clip engine does not read, with why: refused when given for a clip.
# One table with recipes (flows/recipe_inert.py), so the two never drift apart.
from .recipe_inert import CLIP_INERT as CLIP_IGNORES


def flag(spec, name: str, args=None) -> str:
    """How the user wrote parameter ``name``: ``--layout``, or ``--set metric.near`` for nested
    ones and those without a flag of their own."""
    top = name.split(".")[0]
    if "." not in name and (args is None or hasattr(args, f"param_{top}")):
        return "--" + name.replace("_", "-")
    return f"--set {name}"


def say(spec, args, name: str, value: Any) -> str:
    """A setting as typed: ``--layout sbs``, ``--no-loop``, ``--set metric.near=1.5``."""
    f = flag(spec, name, args)
    if f.startswith("--set "):
        return f"{f}={inert.show(value)}"
    if isinstance(value, bool):
        return f if value else "--no-" + f[2:]
    return f"{f} {inert.show(value)}"


def refuse_inert_params(spec, params: Any, values: dict, args) -> None:
    """``values``: what the user gave (flags and ``--set``), not what the ``-o`` suffix implied."""
    from pathlib import Path

    given = inert.given_names(values)
    implied: set = set()
    if spec.params_for_output is not None and Path(str(args.output)).suffix:
        implied = set(spec.params_for_output(Path(str(args.output))))  # (a suffix it cannot write: refused before)
    inert.refuse(spec, params, given, name=lambda n: flag(spec, n, args), say=lambda n, v: say(spec, args, n, v),
                 note=lambda n: f" (from -o {Path(str(args.output)).name})" if n in implied else " (the default)")
    from depthcraft.tasks.lib.clip import is_clip

    clip = is_clip(args.image)
    for name, why in CLIP_IGNORES.get(spec.kind, {}).items() if clip else ():
        if name in given:
            opt = flag(spec, name, args)
            raise ParameterError(f"{opt} has no effect on a clip: {why}", parameter=opt, hint=f"leave out {opt}")
    if clip and spec.kind in ("estimate", "refine", "export"):  # the engine writes frames without the scale
        key = "formats" if spec.kind == "export" else "format"
        fmts = list(params.formats) if spec.kind == "export" else [params.format]
        metric = [f for f in fmts if f in inert.METRIC_FORMATS]
        if metric:
            opt = flag(spec, key, args)
            raise ParameterError(f"{metric[0]} cannot be written for a clip: a clip's depth frames are the stable "
                                 "nearness (0..1), which has no metric scale", parameter=opt,
                                 hint="write a relative format (grayscale, png16, npy...)")
        for name in sorted(given):
            if name.startswith("metric."):
                raise ParameterError(f"{say(spec, args, name, inert.value_of(params, name))} has no effect on a clip: "
                                     "a clip's depth frames are the stable nearness (0..1), written without a metric "
                                     "scale", parameter=flag(spec, name, args), hint="leave out the metric scale")
    if clip and spec.kind == "stereo" and "edge_dilation" in given and params.edge_dilation:  # (0 is read: off)
        raise ParameterError(f"--edge-dilation {params.edge_dilation} has no effect on a clip: a clip's near objects "
                             "grow with the divergence; only 0 (off) is read", parameter="--edge-dilation",
                             hint="leave out --edge-dilation, or 0 to turn the growth off")
    if not clip:  # a clip-only parameter ("clips: ..." in its description) on a photo
        for name, f in spec.params.model_fields.items():
            if name in given and (f.description or "").startswith("clips:"):
                opt = flag(spec, name, args)
                raise ParameterError(f"{opt} has no effect on a photo: it is a setting for clips "
                                     f"({f.description[len('clips:'):].strip()})", parameter=opt,
                                     hint=f"leave out {opt}")
    depth = getattr(args, "depth", None)
    provider = getattr(args, "provider", "auto") or "auto"
    remote = provider.split(":")[0] == "eachsense"
    if depth and getattr(args, "depth_kind", None) == "metric":  # meters already: nothing to scale
        for name in ("metric.near", "metric.far", "metric.known", "metric.known_x", "metric.known_y", "far_ratio"):
            if name in given:
                opt = flag(spec, name, args)
                raise ParameterError(f"{say(spec, args, name, inert.value_of(params, name))} has no effect with "
                                     "--depth-kind metric: the depth map is in meters already, "
                                     f"{'far_ratio places a map without a scale' if name == 'far_ratio' else 'there is nothing to scale'}",
                                     parameter=opt, hint=f"leave out {opt}, or give a relative map")
    if spec.kind == "estimate" and depth:  # the given depth map is the estimate: no provider is asked
        for name in ("message", "use_case", "output"):
            if name in given:
                raise ParameterError(f"{flag(spec, name, args)} has no effect with --depth: the given depth map is "
                                     "taken as it is, no provider is asked", parameter=flag(spec, name, args),
                                     hint=f"leave out {flag(spec, name, args)}, or leave out --depth")
    if "message" in given and not remote:
        raise ParameterError(f"{flag(spec, 'message', args)} has no effect with --provider {provider}"
                             f"{'' if provider != 'auto' else ' (the default)'}: a message is the request sent to "
                             "the eachsense provider", parameter=flag(spec, "message", args),
                             hint="leave out --message, or use --provider eachsense")
    if spec.kind == "refine" and provider not in ("classic", "auto"):  # the provider refines (flows/oneshot.py)
        from depthcraft.tasks.refine import LOCAL

        for name in LOCAL:
            if name in given:
                raise ParameterError(f"{flag(spec, name, args)} has no effect with --provider {provider}: the provider "
                                     "refines the map; this sets the local edge refinement",
                                     parameter=flag(spec, name, args),
                                     hint=f"leave out {flag(spec, name, args)}, or --provider classic")


def refuse_inert_options(spec, args, *, clip: bool) -> None:
    """Options of the command itself: ``--depth-kind`` without ``--depth``, a provider that is
    never asked, what only the eachsense provider reads given another provider."""
    depth = getattr(args, "depth", None)
    if args.depth_kind and not depth:
        raise ParameterError(f"--depth-kind {args.depth_kind} has no effect without --depth: it says what a given "
                             "depth map's values mean", parameter="--depth-kind",
                             hint="give --depth FILE, or leave out --depth-kind")
    asks_provider = spec.uses_provider and spec.kind != "estimate" or not depth
    if not asks_provider and not clip:
        for opt, on in (("--provider", args.provider not in (None, "auto")), ("--mode", args.mode != "max"),
                        ("--answer", bool(args.answer))):
            if on:
                raise ParameterError(f"{opt} has no effect with --depth: {spec.kind} takes the given depth map, no "
                                     "provider is asked", parameter=opt, hint=f"leave out {opt}, or leave out --depth")
    provider = args.provider or "auto"
    if provider.split(":")[0] != "eachsense":  # what only the eachsense provider reads
        for opt, on, what in (("--mode", args.mode != "max", "the eachsense service's quality"),
                              ("--answer", bool(args.answer), "an answer to the eachsense service's questions"),
                              ("--session", bool(getattr(args, "session", None)),
                               "the eachsense conversation to continue (a one-shot records no session)")):
            if on:
                raise ParameterError(f"{opt} has no effect with --provider {provider}"
                                     f"{' (the default)' if provider == 'auto' else ''}: it is {what}",
                                     parameter=opt, hint=f"leave out {opt}, or use --provider eachsense")
