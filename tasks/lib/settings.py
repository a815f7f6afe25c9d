"""Numbers from the environment (``DEPTHCRAFT_*`` settings), read one way everywhere: unset or
empty is the default; anything that is not a number at least the smallest allowed is one
:class:`~.errors.ParameterError` naming the variable, so a typo is said rather than silently
replaced by the default."""

from __future__ import annotations

import math
import os

from .errors import ParameterError


def env_number(name: str, default: float, *, least: float, units: str, whole: bool = False,
               hint: str | None = None) -> float:
    """The number in environment variable ``name`` (``int`` when ``whole``), or ``default`` when
    it is unset or empty. Raises :class:`ParameterError` (parameter ``name``) when it is not a
    number (a whole one when ``whole``), is nan, or is below ``least``; callers clamp further."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        v: float = int(raw) if whole else float(raw)
    except ValueError:
        v = math.nan
    if math.isnan(v) or v < least:
        raise ParameterError(f"{raw!r} is not a {'whole ' if whole else ''}number of {units} >= {least:g}",
                             parameter=name,
                             # (a whole default as digits: `=5e+07` was itself refused by this check)
                             hint=hint or f"e.g. {name}={int(default) if whole else f'{default:g}'} (the default; "
                                          "unset it to use the default)")
    return v
