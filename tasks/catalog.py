"""Every step kind, by name. A step kind lives in the module of the same name
(``tasks/<kind>.py``), which adds its name to ``STEP_MODULES``; modules load on first use."""

from __future__ import annotations

import importlib
from functools import lru_cache

from .lib.errors import ParameterError
from .lib.step import StepSpec

STEP_MODULES = ("estimate", "export", "layers", "mesh", "refine", "stereo", "parallax", "bokeh",
                "viewer")


@lru_cache(maxsize=1)
def steps() -> dict[str, StepSpec]:
    out: dict[str, StepSpec] = {}
    for name in STEP_MODULES:
        spec: StepSpec = importlib.import_module(f"{__package__}.{name}").SPEC
        out[spec.kind] = spec
    return out


@lru_cache(maxsize=None)
def get_step(kind: str) -> StepSpec:
    if kind not in STEP_MODULES:
        raise ParameterError(f"unknown step kind {kind!r}; one of {', '.join(sorted(STEP_MODULES))}",
                             parameter="uses")
    return importlib.import_module(f"{__package__}.{kind}").SPEC


def clip_kinds() -> tuple[str, ...]:
    """The step kinds that take clips (frame by frame): estimate, and every kind with a ``clip_frame``."""
    return tuple(k for k, s in steps().items() if k == "estimate" or getattr(s, "clip_frame", None) is not None)
