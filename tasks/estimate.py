"""The ``estimate`` step: a depth map for a photo, from the run's provider or a given depth file."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .lib.depthmap import DepthMap
from .lib.errors import ParameterError
from .lib.formats import FormatName, MetricScale, format_outputs
from .lib.outputs import DEPTH_SUFFIXES, depth_params_for_suffix
from .providers import DepthRequest, get_provider
from .lib.step import Output, StepContext, StepParams, StepSpec, save_depth

UseCase = Literal["general", "portrait", "landscape", "product", "interior", "parallax", "vr", "stereo",
                  "focus_planes", "background_blur"]


class EstimateParams(StepParams):
    format: FormatName = Field("grayscale", description="file written to the output folder (see export formats)")
    use_case: UseCase = Field("general", description="what the depth is for; remote providers word their request by it")
    message: str | None = Field(None, description="eachsense: the request in your own words (overrides use_case)")
    output: Literal["relative", "metric"] = Field("relative", description="relative depth, or meters (metric models, eachsense)")
    metric: MetricScale = Field(default_factory=MetricScale, description="scale for the metric formats")
    temporal: bool = Field(True, description="clips: temporally stable depth (false: each frame alone)")
    keyframe_interval: int | None = Field(None, ge=1, le=120, description="clips: estimate every Nth frame and carry the depth along the motion between (default 1)")


def estimate_depth(ctx: StepContext, p: EstimateParams) -> DepthMap:
    """The given depth file when the input has one, else the provider's estimate."""
    if ctx.given_depth is not None:
        return ctx.given_depth_map(ctx.given_depth)
    provider = get_provider(ctx.provider)
    # a transparent pixel's stored colour is not the scene: the model sees the photo over the
    # stated background (white), as a viewer of the PNG does
    req = DepthRequest(image=ctx.photo_seen(), image_path=ctx.source.meta.get("origin", ctx.source.path),
                       session_id=ctx.session_id, mode=ctx.mode, use_case=p.use_case, message=p.message,
                       answers=dict(ctx.options.get("answers") or {}), output=p.output,
                       options=dict(ctx.options.get("provider_options") or {}))
    dm = provider.estimate(req)
    # (classic gave relative depth, silently, for output metric; onnx refuses a relative model the
    # same way; eachsense asks for meters and says so when the service answers with a relative map)
    if p.output == "metric" and dm.kind != "metric" and not str(ctx.provider).startswith("eachsense"):
        raise ParameterError(f"output metric: provider {ctx.provider} gives relative depth, not meters",
                             parameter="output", hint="use a metric model (onnx:depth-anything-v2-metric-indoor-small "
                             "or -outdoor-small) or eachsense, or scale relative depth with a metric format's "
                             "near/far")
    return dm


def run(ctx: StepContext, p: EstimateParams) -> dict[str, Output]:
    dm = estimate_depth(ctx, p)
    return {"depth": save_depth(ctx, dm), **format_outputs(ctx, dm, p.format, scale=p.metric)}


def params_for_output(path) -> dict:
    """``-o x.png``: 8-bit white = near; ``x.npy`` / ``x.pfm``: float32 normalised, larger = nearer;
    ``x.tif``/``x.tiff``, ``x.exr``, ``x.npz``: float32 in the map's units."""
    return depth_params_for_suffix(path)


def main_suffixes(p: EstimateParams) -> tuple[str, ...]:
    return DEPTH_SUFFIXES[p.format]


def inert(p: EstimateParams, given: set) -> list:
    """Parameters with no effect given the others (refused when written: :mod:`.lib.inert`); what
    depends on the provider (message, a given depth map) is checked where it is known."""
    from .lib.inert import metric_scale

    return metric_scale([p.format], "format", known=p.metric.known)


SPEC = StepSpec(kind="estimate", version="4", params=EstimateParams, run=run, needs_depth=False,
                uses_provider=True, params_for_output=params_for_output, output_params=("format",),
                main_suffixes=main_suffixes, inert=inert, summary="estimate a depth map with the run's provider (or take the given one)")
