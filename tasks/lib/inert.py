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
    if hasattr(v, "model_dump"):  # (a keyframe, a metric scale: what was written, not every default)
        v = v.model_dump(exclude_defaults=True)
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {show(x)}" for k, x in v.items()) + "}"
    return str(v)


def say_key(name: str, value: Any) -> str:
    """How a recipe writes a setting: ``layout sbs``."""
    return f"{name} {show(value)}"


class _Names(dict):
    def __init__(self, name: Callable[[str], str]):
        super().__init__()
        self.name = name

    def __missing__(self, key: str) -> str:
        return self.name(key)


def message(f: Inert, params: Any, given: set[str], *, say: Callable[[str, Any], str] = say_key,
            note: Callable[[str], str] = lambda n: " (the default)") -> str:
    """``anaglyph gray has no effect with layout sbs: <why>``; a ``by`` the user did not give is
    marked by ``note(by)`` (the default, or where else it came from)."""
    by = say(f.by, value_of(params, f.by)) + ("" if f.by in given else note(f.by))
    return f"{say(f.param, value_of(params, f.param))} has no effect with {by}: {f.why}"


def hint(f: Inert, name: Callable[[str], str] = lambda n: n) -> str:
    """The rule's hint, its ``{parameter}`` fields written as the user writes them."""
    return (f.hint or "leave out {%s}" % f.param.replace(".", "__")).format_map(
        _Names(lambda k: name(k.replace("__", "."))))


def find(spec: Any, params: Any, given: Iterable[str]) -> list[Inert]:
    """The step's rules that fire for ``params`` with ``given`` written by the user."""
    rules = getattr(spec, "inert", None)
    if rules is None:
        return []
    given = set(given)
    return [f for f in rules(params, given) if f.param in given]


def refuse(spec: Any, params: Any, given: Iterable[str], *, name: Callable[[str], str] = lambda n: n,
           say: Callable[[str, Any], str] = say_key, note: Callable[[str], str] = lambda n: " (the default)") -> None:
    """Raise :class:`ParameterError` (naming the ineffective parameter as ``name`` writes it)
    for the first rule that fires."""
    given = set(given)
    for f in find(spec, params, given):
        raise ParameterError(message(f, params, given, say=say, note=note), parameter=name(f.param),
                             hint=hint(f, name))


METRIC_FORMATS = ("metric", "metric_mm", "metric_tiff", "metric_exr")


def metric_scale(formats: Iterable[str], by: str, *, known: float | None, fov_applies: bool = False,
                 prefix: str = "metric") -> list[Inert]:
    """A depth step's ``metric`` scale: read by the metric formats only (``fov_applies``: the
    field of view is written into every format, as export does); ``known_x``/``known_y`` place
    ``known`` (the scale's value, required: the rule depends on it) and mean nothing without it."""
    out = []
    if not any(f in METRIC_FORMATS for f in formats):
        names = ("near", "far", "known", "known_x", "known_y") + (() if fov_applies else ("fov_deg",))
        out += [Inert(f"{prefix}.{n}", by, f"the metric scale is read by the metric formats ({', '.join(METRIC_FORMATS)})",
                      hint="leave out {%s__%s}, or write a metric format" % (prefix, n)) for n in names]
    if known is None:  # (with a known distance they are its pixel: needed, not inert)
        out += [Inert(f"{prefix}.{n}", f"{prefix}.known", "known_x and known_y are the pixel of the known distance")
                for n in ("known_x", "known_y")]
    return out
