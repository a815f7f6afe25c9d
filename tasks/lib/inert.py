"""Settings that would have no effect: found before any work and refused in one line.

A parameter the user wrote (on the command line, with ``--set``, or in a recipe step's ``with:``)
that cannot change the result given the other parameters in force (given or default) is
refused, naming both: the user meant something by it, and silently ignoring it hides the
mistake (``--anaglyph gray --layout sbs``, ``--eye left --layout anaglyph``). A *default* that
does not apply is never mentioned (``anaglyph: dubois`` is in force with every layout).

Each step module may define ``inert(params, given) -> list[Inert]`` (its ``StepSpec.inert``):
``given`` holds the dotted names of the parameters the user wrote (``metric.near``). The rules
are data, so the command line and recipe validation apply the same ones; ``docs/cli.md`` lists
them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

from .errors import ParameterError


@dataclass(frozen=True)
class Inert:
    """``param`` (dotted) has no effect because of ``by`` (a parameter name, dotted, or a
    setting outside the step such as ``provider``); ``why`` says what ``param`` is for."""

    param: str
    by: str
    why: str
    hint: str | None = None


def given_names(values: dict, prefix: str = "") -> set[str]:
    """Dotted names of what ``values`` sets: ``{"metric": {"near": 1}}`` -> ``{"metric", "metric.near"}``."""
    out: set[str] = set()
    for k, v in (values or {}).items():
        name = f"{prefix}{k}"
        out.add(name)
        if isinstance(v, dict):
            out |= given_names(v, name + ".")
    return out


def value_of(params: Any, dotted: str) -> Any:
    node = params
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else getattr(node, part, None)
    return node


def show(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(show(x) for x in v) + "]"
    if v is None:
        return "null"
    return str(v)


def message(f: Inert, params: Any, given: set[str], name: Callable[[str], str] = lambda n: n,
            by_value: Any = ...) -> str:
    """``--anaglyph gray has no effect with --layout sbs: <why>``; ``by`` not given by the user
    is marked as the default."""
    bv = value_of(params, f.by) if by_value is ... else by_value
    by = f"{name(f.by)} {show(bv)}" + ("" if f.by in given or by_value is not ... else " (the default)")
    return f"{name(f.param)} {show(value_of(params, f.param))} has no effect with {by}: {f.why}"


def find(spec: Any, params: Any, given: Iterable[str]) -> list[Inert]:
    """The step's rules that fire for ``params`` with ``given`` written by the user."""
    rules = getattr(spec, "inert", None)
    if rules is None:
        return []
    return [f for f in rules(params, set(given)) if f.param in set(given)]


def refuse(spec: Any, params: Any, given: Iterable[str], *, name: Callable[[str], str] = lambda n: n) -> None:
    """Raise :class:`ParameterError` (naming the ineffective parameter) for the first rule that fires."""
    given = set(given)
    for f in find(spec, params, given):
        raise ParameterError(message(f, params, given, name), parameter=name(f.param),
                             hint=f.hint or f"leave out {name(f.param)}")


METRIC_FORMATS = ("metric", "metric_mm", "metric_tiff", "metric_exr")


def metric_scale(formats: Iterable[str], by: str, *, fov_applies: bool = False, prefix: str = "metric") -> list[Inert]:
    """A depth step's ``metric`` scale: read by the metric formats only (``fov_applies``: the
    field of view is written into every format, as export does); ``known_x``/``known_y`` place
    ``known`` and mean nothing without it."""
    out = []
    if not any(f in METRIC_FORMATS for f in formats):
        names = ("near", "far", "known", "known_x", "known_y") + (() if fov_applies else ("fov_deg",))
        out += [Inert(f"{prefix}.{n}", by, f"the metric scale is read by the metric formats ({', '.join(METRIC_FORMATS)})",
                      hint=f"leave out {prefix}.{n}, or write a metric format") for n in names]
    out += [Inert(f"{prefix}.{n}", f"{prefix}.known", "known_x and known_y are the pixel of the known distance")
            for n in ("known_x", "known_y")]
    return out
