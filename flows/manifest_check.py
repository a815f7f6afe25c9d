"""The shape of a manifest before anything reads it: what ``reproduce`` needs, checked once.

A manifest is a file a user can edit, truncate or mistake for another JSON file. Each way it
can be wrong is one line naming the file and the key (an :class:`InputError`), never a
``KeyError`` or ``AttributeError`` from deep inside ``reproduce``.
"""

from __future__ import annotations

from pathlib import Path

from depthcraft.tasks.lib.errors import InputError

# key -> (type, what it should be); the keys ``reproduce`` and ``compare`` read
_TOP = {"recipe": (dict, "an object"), "steps": (list, "a list"), "inputs": (list, "a list")}
_RECIPE = {"text": (str, "the recipe's text"), "file": (str, "the recipe's path"), "overrides": (list, "a list")}


def check_shape(m, path: Path) -> None:
    """Raise one :class:`InputError` naming ``path`` when ``m`` is not a usable depthcraft manifest."""
    if not isinstance(m, dict):
        raise InputError(f"not a depthcraft manifest (a JSON {type(m).__name__}, not an object)", path=str(path))
    if m.get("depthcraft_manifest") != 1:
        raise InputError("not a depthcraft manifest (no \"depthcraft_manifest\": 1)", path=str(path))
    for key, (kind, what) in _TOP.items():
        if key not in m:
            raise InputError(f"malformed manifest: no {key!r}", path=str(path))
        if not isinstance(m[key], kind):
            raise InputError(f"malformed manifest: {key!r} is not {what}", path=str(path))
    for key, (kind, what) in _RECIPE.items():
        if not isinstance(m["recipe"].get(key), kind):
            raise InputError(f"malformed manifest: 'recipe.{key}' is missing or not {what}", path=str(path))
    if m.get("out_root") is not None and not isinstance(m["out_root"], str):
        raise InputError("malformed manifest: 'out_root' is not a path", path=str(path))
    for i, n in enumerate(m["steps"]):
        if not isinstance(n, dict) or not isinstance(n.get("outputs") or {}, dict) or not all(
                isinstance(o, dict) and isinstance(o.get("path"), str) and isinstance(o.get("sha256"), str)
                for o in (n.get("outputs") or {}).values()):
            raise InputError(f"malformed manifest: 'steps[{i}]' is not a step record with outputs {{path, sha256}}",
                             path=str(path))
    for i, e in enumerate(m["inputs"]):
        if not isinstance(e, dict) or not isinstance(e.get("name"), str) or "origin" not in e:
            raise InputError(f"malformed manifest: 'inputs[{i}]' is not an input record {{name, origin, sha256}}",
                             path=str(path))


def check_inputs_exist(m: dict, path: Path) -> None:
    """Refuse to reproduce a run whose local input files are gone: one line naming the first
    (and how many more), before any flow runs. A URL is fetched again by the run itself."""
    import re

    missing = []
    for e in m["inputs"]:
        if e.get("error"):  # it failed in the recorded run too: the reproduction says so again
            continue
        for what, p in (("input", e.get("origin")), ("depth map", e.get("depth"))):
            if isinstance(p, str) and p and not re.match(r"^https?://", p, re.I) and not Path(p).exists():
                missing.append((what, e["name"], p))
    if missing:
        what, name, p = missing[0]
        more = f" (and {len(missing) - 1} more input file(s) missing)" if len(missing) > 1 else ""
        raise InputError(f"no such file: the {what} of {name!r} recorded in {path}{more}", path=p,
                         hint="put it back, or run the recipe on the inputs you have")
