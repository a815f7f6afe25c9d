"""Depth map file formats for people and for the next tool, and the ``export`` step.

Formats (``format`` parameter; every file says its convention in its metadata):

========== ============================================================================
grayscale  8-bit PNG, white = near (normalised nearness)
inverse    8-bit PNG, black = near
png16      16-bit PNG of normalised nearness (white = near); value range in the file
npy        float32 .npy: normalised nearness 0..1, larger = nearer
pfm        float32 .pfm: the same values as npy
raw        float32 .npy in the map's own units and kind (disparity px, meters...)
metric     float32 .npy in meters (larger = farther), from ``near``/``far`` or ``known``
metric_mm  16-bit PNG in millimetres, 0 = invalid (the depth camera convention)
preview    colour-mapped PNG (turbo), warm = near
========== ============================================================================
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from .depthio import write_npy, write_pfm, write_png8, write_png16
from .depthmap import DepthMap, normalized_nearness, to_metric
from .errors import ParameterError
from .steps import Output, StepContext, StepParams, StepSpec

FORMATS = ("grayscale", "inverse", "png16", "npy", "pfm", "raw", "metric", "metric_mm", "preview")
SUFFIX = {"grayscale": ".png", "inverse": ".png", "png16": ".png", "npy": ".npy", "pfm": ".pfm",
          "raw": ".npy", "metric": ".npy", "metric_mm": ".png", "preview": ".png"}
FormatName = Literal["grayscale", "inverse", "png16", "npy", "pfm", "raw", "metric", "metric_mm", "preview"]


class MetricScale(StepParams):
    """How to turn relative depth into meters."""

    near: float | None = Field(None, gt=0, description="distance of the nearest point, meters")
    far: float | None = Field(None, gt=0, description="distance of the farthest point, meters")
    known: float | None = Field(None, gt=0, description="one known distance, meters (with known_x, known_y)")
    known_x: int | None = Field(None, ge=0, description="pixel column of the known distance")
    known_y: int | None = Field(None, ge=0, description="pixel row of the known distance")


def colorize(unit: np.ndarray) -> np.ndarray:
    """RGB uint8 turbo colour map of a 0..1 map (1 = near = warm)."""
    q = np.clip(unit * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(q, cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB)


def metric_of(dm: DepthMap, scale: MetricScale | None) -> DepthMap:
    if dm.kind == "metric":
        return dm
    s = scale or MetricScale()
    xy = (s.known_x, s.known_y) if s.known_x is not None and s.known_y is not None else None
    return to_metric(dm, near_m=s.near, far_m=s.far, known_m=s.known, known_xy=xy)


def write_format(dm: DepthMap, fmt: str, path: str | Path, *, scale: MetricScale | None = None) -> Path:
    """Write ``dm`` to ``path`` in format ``fmt`` (see the module table)."""
    if fmt not in FORMATS:
        raise ParameterError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}", parameter="format")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    base = {"source": dm.source, "kind": dm.kind}
    if fmt in ("grayscale", "inverse", "png16", "npy", "pfm", "preview"):
        n = normalized_nearness(dm)
        if fmt == "grayscale":
            return write_png8(p, n, {**base, "convention": "white = near", "values": "normalized nearness"})
        if fmt == "inverse":
            return write_png8(p, 1.0 - n, {**base, "convention": "black = near", "values": "1 - normalized nearness"})
        if fmt == "png16":
            return write_png16(p, n, {**base, "convention": "white = near", "values": "normalized nearness"})
        if fmt == "npy":
            return write_npy(p, n)
        if fmt == "pfm":
            return write_pfm(p, n)
        cv2.imwrite(str(p), cv2.cvtColor(colorize(n), cv2.COLOR_RGB2BGR))
        return p
    if fmt == "raw":
        return write_npy(p, dm.data)
    m = metric_of(dm, scale)
    if fmt == "metric":
        return write_npy(p, m.data)
    mm = np.where(np.isfinite(m.data), np.round(m.data * 1000.0), 0)
    cv2.imwrite(str(p), np.clip(mm, 0, 65535).astype(np.uint16))
    return p


def format_for_suffix(path: str | Path) -> str:
    """The format a one-shot ``-o`` path asks for: .png grayscale, .npy float, .pfm float..."""
    s = Path(path).suffix.lower()
    table = {".png": "grayscale", ".npy": "npy", ".pfm": "pfm", ".jpg": "grayscale"}
    if s not in table:
        raise ParameterError(f"cannot tell a depth format from {s!r}; use .png, .npy or .pfm", parameter="-o")
    return table[s]


# -- the export step -------------------------------------------------------------------------
class ExportParams(StepParams):
    formats: list[FormatName] = Field(default_factory=lambda: ["grayscale", "png16", "npy", "preview"],
                                      description="formats to write, any of: " + ", ".join(FORMATS))
    metric: MetricScale = Field(default_factory=MetricScale, description="scale for metric formats")


def run(ctx: StepContext, p: ExportParams) -> dict[str, Output]:
    dm = ctx.depth()
    outs: dict[str, Output] = {}
    for i, fmt in enumerate(p.formats):
        name = "main" if i == 0 else fmt
        path = write_format(dm, fmt, ctx.out(fmt, SUFFIX[fmt]), scale=p.metric)
        outs[name] = Output(path, "depth" if fmt != "preview" else "image", {"format": fmt, **dm.describe()})
    return outs


SPEC = StepSpec(kind="export", version="1", params=ExportParams, run=run,
                summary="write the depth map in the formats the next tool needs")
