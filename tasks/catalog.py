"""Every step kind, by name. A new step module adds its name to ``STEP_MODULES``."""

from __future__ import annotations

import importlib
from functools import lru_cache

from .errors import ParameterError
from .steps import StepSpec

STEP_MODULES = ("estimate", "export", "layers", "mesh", "refine", "stereo", "parallax", "bokeh")


@lru_cache(maxsize=1)
def steps() -> dict[str, StepSpec]:
    out: dict[str, StepSpec] = {}
    for name in STEP_MODULES:
        spec: StepSpec = importlib.import_module(f"tasks.{name}").SPEC
        out[spec.kind] = spec
    return out


def get_step(kind: str) -> StepSpec:
    table = steps()
    if kind not in table:
        raise ParameterError(f"unknown step kind {kind!r}; one of {', '.join(sorted(table))}", parameter="uses")
    return table[kind]
