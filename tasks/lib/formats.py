"""Depth map file formats for people and for the next tool (what the ``export`` step writes).

Formats (``format`` parameter). Every file says its convention in its metadata (PNG text chunk,
TIFF description, EXR attribute, NPZ ``meta`` entry, ``<file>.json`` sidecar for NPY/PFM; see
``docs/formats.md``), and :func:`depthcraft.tasks.lib.depthio.read_depth` reads every one of them back to the
values written, within the format's precision:

=========== ==========================================================================
grayscale   8-bit PNG, white = near (normalised nearness)
inverse     8-bit PNG, black = near
png16       16-bit PNG of normalised nearness (white = near); value range in the file
npy         float32 .npy: normalised nearness 0..1, larger = nearer
pfm         float32 .pfm: the same values as npy
npz         float32 .npz in the map's own units and kind, metadata inside (``meta``)
raw         float32 .npy in the map's own units and kind (disparity px, meters...)
tiff        float32 TIFF in the map's own units and kind
exr         float32 OpenEXR (channel ``Y``) in the map's own units and kind
metric      float32 .npy in meters (larger = farther), from ``near``/``far`` or ``known``
metric_mm   16-bit PNG in millimetres, 0 = invalid (the depth camera convention)
metric_tiff float32 TIFF in meters
metric_exr  float32 OpenEXR in meters (what 3D tools read as a Z pass)
preview     colour-mapped PNG (turbo), warm = near
=========== ==========================================================================
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from PIL import Image, PngImagePlugin
from pydantic import Field

from .depthio import (PNG_META_KEY, write_exr, write_npy, write_npz, write_pfm, write_png8, write_png16,
                      write_png16_units, write_sidecar, write_tiff)
from .depthmap import NEAR_IS_LARGER, DepthMap, normalized_nearness, to_metric
from .errors import ParameterError
from .step import Output, StepContext, StepParams

FORMATS = ("grayscale", "inverse", "png16", "npy", "pfm", "npz", "raw", "tiff", "exr",
           "metric", "metric_mm", "metric_tiff", "metric_exr", "preview")
SUFFIX = {"grayscale": ".png", "inverse": ".png", "png16": ".png", "npy": ".npy", "pfm": ".pfm",
          "npz": ".npz", "raw": ".npy", "tiff": ".tif", "exr": ".exr", "metric": ".npy",
          "metric_mm": ".png", "metric_tiff": ".tif", "metric_exr": ".exr", "preview": ".png"}
FormatName = Literal["grayscale", "inverse", "png16", "npy", "pfm", "npz", "raw", "tiff", "exr",
                     "metric", "metric_mm", "metric_tiff", "metric_exr", "preview"]
FORMAT_VERSION = 1  # the ``depthcraft`` key of every file's metadata
UNITS = {"relative_inverse": "relative", "disparity": "pixels", "depth": "relative", "metric": "meters"}


class MetricScale(StepParams):
    """How to turn relative depth into meters, and the camera it was seen with."""

    # distances from a micrometre to a million km: meters are stored as float32 (and inverted),
    # and near=1e-300 or far=1e300 made inf/NaN depth written without a word
    near: float | None = Field(None, ge=1e-6, le=1e9, description="distance of the nearest point, meters")
    far: float | None = Field(None, ge=1e-6, le=1e9, description="distance of the farthest point, meters")
    known: float | None = Field(None, ge=1e-6, le=1e9, description="one known distance, meters (with known_x, known_y)")
    known_x: int | None = Field(None, ge=0, description="pixel column of the known distance")
    known_y: int | None = Field(None, ge=0, description="pixel row of the known distance")
    fov_deg: float | None = Field(None, gt=0, lt=180, description="camera horizontal field of view, degrees "
                                  "(written into metric files; used for 3D export)")

    def given(self) -> bool:
        return (self.near is not None and self.far is not None) or self.known is not None


def colorize(unit: np.ndarray) -> np.ndarray:
    """RGB uint8 turbo colour map of a 0..1 map (1 = near = warm)."""
    q = np.clip(unit * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(q, cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB)


def metric_of(dm: DepthMap, scale: MetricScale | None) -> DepthMap:
    """``dm`` in meters (a metric map as it is); the field of view from ``scale`` when given."""
    s = scale or MetricScale()
    if dm.kind != "metric":
        xy = (s.known_x, s.known_y) if s.known_x is not None and s.known_y is not None else None
        if s.known is not None and xy is None:
            raise ParameterError("a known distance needs its pixel (known_x, known_y)", parameter="known")
        dm = to_metric(dm, near_m=s.near, far_m=s.far, known_m=s.known, known_xy=xy)
    if s.fov_deg is not None:
        dm = dm.with_data(dm.data, fov_deg=s.fov_deg)
    return dm


def file_meta(dm: DepthMap, values: np.ndarray, *, kind: str, what: str, convention: str,
              units: str | None = None) -> dict:
    """The metadata every depth file carries: what its values are and which end is near.

    ``near`` and ``far`` are the values (after decoding) at the nearest and farthest points of
    the map, so a reader needs no other knowledge to tell the direction.
    """
    ok = np.isfinite(values)
    lo = float(values[ok].min()) if ok.any() else 0.0
    hi = float(values[ok].max()) if ok.any() else 0.0
    near_larger = NEAR_IS_LARGER[kind]
    meta = {"depthcraft": FORMAT_VERSION, "kind": kind, "values": what, "units": units or UNITS[kind],
            "near_is_larger": near_larger, "convention": convention,
            "near": hi if near_larger else lo, "far": lo if near_larger else hi,
            "source": dm.source, "source_kind": dm.kind}
    if dm.fov_deg is not None:
        meta["fov_deg"] = float(dm.fov_deg)
    for k in ("near_m", "far_m", "known_m", "model"):
        if k in dm.meta:
            meta[k] = dm.meta[k]
    return meta


def _write_preview(p: Path, n: np.ndarray, meta: dict) -> Path:
    info = PngImagePlugin.PngInfo()
    info.add_text(PNG_META_KEY, json.dumps({**meta, "values": "turbo colour map of normalized nearness"}))
    Image.fromarray(colorize(n)).save(p, pnginfo=info)
    return p


def write_format(dm: DepthMap, fmt: str, path: str | Path, *, scale: MetricScale | None = None) -> Path:
    """Write ``dm`` to ``path`` in format ``fmt`` (see the module table). Returns the path.

    NPY and PFM files get their metadata in a ``<path>.json`` sidecar next to them.
    """
    return write_format_meta(dm, fmt, path, scale=scale)[0]


def write_format_meta(dm: DepthMap, fmt: str, path: str | Path, *,
                      scale: MetricScale | None = None) -> tuple[Path, dict]:
    """:func:`write_format`, also returning the metadata written into the file."""
    if fmt not in FORMATS:
        raise ParameterError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}", parameter="format")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if fmt in ("grayscale", "inverse", "png16", "npy", "pfm", "preview"):
        n = normalized_nearness(dm)
        conv = "black = near" if fmt == "inverse" else "white = near" if fmt in ("grayscale", "png16") else \
            "warm = near" if fmt == "preview" else "larger = nearer"
        meta = file_meta(dm, n, kind="relative_inverse", what="normalized nearness 0..1", convention=conv)
        if fmt == "grayscale":
            return write_png8(p, n, meta), meta
        if fmt == "inverse":  # stored 1 - n; read back as n
            return write_png8(p, 1.0 - n, {**meta, "offset": 1.0, "scale": -1.0 / 255.0}), meta
        if fmt == "png16":
            return write_png16(p, n, meta), meta
        if fmt == "preview":
            return _write_preview(p, n, meta), meta
        (write_npy if fmt == "npy" else write_pfm)(p, n)
        write_sidecar(p, meta)
        return p, meta
    if fmt in ("npz", "raw", "tiff", "exr"):
        m, what = dm, f"{dm.kind} ({UNITS[dm.kind]})"
    else:
        m, what = metric_of(dm, scale), "meters along the optical axis"
    conv = "larger = nearer" if NEAR_IS_LARGER[m.kind] else "larger = farther"
    values = m.data
    if fmt == "metric_mm":  # near/far are what a reader decodes: 1 mm .. 65.535 m, said when clipped
        values, clipped = _stored_mm(m.data)
        if clipped:
            from .notices import notice

            notice(f"metric_mm: {clipped} pixel(s) outside 0.001..65.535 m stored at that limit (metric_mm's "
                   "16-bit millimetres); metric_exr, metric_tiff or metric keep every distance")
    meta = file_meta(m, values, kind=m.kind, what=what, convention=conv)
    meta["source_kind"] = dm.kind  # what the map was before meters (file_meta saw the metric map)
    if fmt == "metric_mm":
        meta = {**meta, "units": "millimetres", "values": "millimetres along the optical axis, read back as meters"}
        return write_png16_units(p, m.data, 0.001, meta), meta
    if fmt in ("raw", "metric"):
        write_npy(p, m.data)
        write_sidecar(p, meta)
        return p, meta
    if fmt == "npz":
        return write_npz(p, m.data, meta), meta
    if fmt in ("tiff", "metric_tiff"):
        return write_tiff(p, m.data, meta), meta
    return write_exr(p, m.data, meta), meta


def _stored_mm(a: np.ndarray) -> tuple[np.ndarray, int]:
    """Meters as ``metric_mm`` stores them (whole millimetres, 1..65535; NaN where no depth) and
    how many valid pixels that clips."""
    a = np.asarray(a, dtype=np.float64)
    ok = np.isfinite(a) & (a > 0)
    mm = np.round(np.where(ok, a, 0) / 0.001)
    clipped = int((ok & ((mm < 1) | (mm > 65535))).sum())
    return np.where(ok, np.clip(mm, 1, 65535) * 0.001, np.nan), clipped


def format_outputs(ctx: StepContext, dm: DepthMap, fmt: str, name: str = "main", *,
                   scale: MetricScale | None = None) -> dict[str, Output]:
    """Write ``dm`` in ``fmt`` as step output ``name`` (plus its ``.json`` sidecar, if the format has one)."""
    path, meta = write_format_meta(dm, fmt, ctx.out(f"{name}-{fmt}", SUFFIX[fmt]), scale=scale)
    # the artifact's metadata is the file's: a metric file stays metric when read downstream
    outs = {name: Output(path, "depth" if fmt != "preview" else "image", {"format": fmt, **meta})}
    side = path.with_name(path.name + ".json")
    if side.exists():
        outs[f"{name}_meta"] = Output(side, "data", {"format": fmt, "sidecar_of": name})
    return outs
