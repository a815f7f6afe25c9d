"""The ``export`` step: write the depth map in the formats the next tool needs.

The formats themselves (what each file holds, its metadata) live in
:mod:`depthcraft.tasks.lib.formats`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from .lib.formats import FORMATS, FormatName, MetricScale, format_outputs
from .lib.outputs import DEPTH_SUFFIXES, depth_format_for_suffix
from .lib.step import Output, StepContext, StepParams, StepSpec


class ExportParams(StepParams):
    # (at least one: `formats: []` wrote nothing and exited 0, -o's file never made)
    formats: list[FormatName] = Field(default_factory=lambda: ["grayscale", "png16", "npy", "preview"], min_length=1,
                                      description="formats to write, any of: " + ", ".join(FORMATS))
    metric: MetricScale = Field(default_factory=MetricScale, description="scale for metric formats")


def run(ctx: StepContext, p: ExportParams) -> dict[str, Output]:
    dm = ctx.depth()
    if p.metric.fov_deg is not None:
        dm = dm.with_data(dm.data, fov_deg=p.metric.fov_deg)
    outs: dict[str, Output] = {}
    for i, fmt in enumerate(dict.fromkeys(p.formats)):
        outs.update(format_outputs(ctx, dm, fmt, "main" if i == 0 else fmt, scale=p.metric))
    return outs


def clip_frame(rgb, near, p: ExportParams, state: dict) -> dict:
    """One frame of a clip (``depthcraft.tasks.clips``): the stable nearness once per format
    (``main`` = the first; ``preview`` as a colour-mapped image); ``state['formats']`` tells the
    engine which format each output is written in."""
    from .lib.formats import colorize

    names = {fmt: ("main" if i == 0 else fmt) for i, fmt in enumerate(dict.fromkeys(p.formats))}
    state["formats"] = {n: f for f, n in names.items()}
    return {n: (colorize(near) if f == "preview" else near) for f, n in names.items()}


def params_for_output(path) -> dict:
    """``-o x.exr``: the main output (the first format) is what the suffix says, the other
    default formats follow it (``x-png16.png``...); no suffix: the default formats, as ever."""
    if not Path(str(path)).suffix:
        return {}
    first = depth_format_for_suffix(path)
    rest = [f for f in ExportParams.model_fields["formats"].default_factory() if f != first]
    return {"formats": [first, *rest]}


def main_suffixes(p: ExportParams) -> tuple[str, ...]:
    return DEPTH_SUFFIXES[p.formats[0]] if p.formats else (".png",)


def inert(p: ExportParams, given: set) -> list:
    """Parameters with no effect given the others (refused when written: :mod:`.lib.inert`);
    export writes the field of view into every format."""
    from .lib.inert import metric_scale

    return metric_scale(p.formats, "formats", known=p.metric.known, fov_applies=True)


SPEC = StepSpec(kind="export", version="4", params=ExportParams, run=run, clip_frame=clip_frame,
                params_for_output=params_for_output, output_params=("formats",), main_suffixes=main_suffixes,
                inert=inert, summary="write the depth map in the formats the next tool needs")
