"""The ``layers`` step: N depth planes as feathered masks and RGBA layers (focus planes).

Planes are chosen on normalised nearness (0..1, 1 = nearest) from the depth histogram, or
given. Methods:

- ``kmeans``: 1-D k-means (Lloyd) on the nearness histogram, started at equal-count quantiles;
  each pixel goes to the nearest plane centre.
- ``otsu``: multi-level Otsu thresholds (Liao, Chen & Chung 2001, "A fast algorithm for
  multilevel thresholding"; ``skimage.filters.threshold_multiotsu``), up to 5 planes.
- ``quantile``: equal pixel counts per plane.
- given ``depths``: plane centres, as nearness 0..1 or, with ``units: meters``, distances.

Hard labels partition the image (one plane per pixel). Feathering blurs each one-hot mask
with the same Gaussian; blurring is linear, so the feathered masks still sum to 1 everywhere
and the layers composite back to the photo. Layer 0 is the nearest plane.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from PIL import Image
from pydantic import Field, field_validator

from .lib.depthmap import DepthMap, normalized_nearness
from .lib.errors import ParameterError
from .lib.formats import MetricScale, colorize, metric_of
from .lib.images import write_image
from .lib.step import Output, StepContext, StepParams, StepSpec


def kmeans_1d(values: np.ndarray, k: int, *, bins: int = 1024, iters: int = 50) -> np.ndarray:
    """Sorted centres (descending: nearest first) of k clusters of ``values`` in 0..1, on a histogram."""
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    mids = (edges[:-1] + edges[1:]) / 2
    cdf = np.cumsum(hist) / max(hist.sum(), 1)
    c = np.interp((np.arange(k) + 0.5) / k, cdf, mids)  # equal-count start: deterministic
    for _ in range(iters):
        lab = np.argmin(np.abs(mids[:, None] - c[None, :]), axis=1)
        new = c.copy()
        for j in range(k):
            w = hist[lab == j]
            if w.sum() > 0:
                new[j] = float((mids[lab == j] * w).sum() / w.sum())
        if np.allclose(new, c, atol=1e-7):
            break
        c = new
    return np.sort(c)[::-1]


def choose_planes(n: np.ndarray, count: int, method: str = "kmeans") -> tuple[np.ndarray, np.ndarray]:
    """Plane centres (nearest first) and the ``count - 1`` thresholds between them, on nearness 0..1.

    Returns ``(centres, thresholds)``, both descending: plane i holds the pixels with
    ``thresholds[i] < n <= thresholds[i - 1]``.
    """
    if count < 1:
        raise ParameterError(f"must be at least 1, got {count}", parameter="count")
    flat = n[np.isfinite(n)].ravel()
    if count == 1:
        return np.array([float(flat.mean())]), np.array([])
    if method == "kmeans":
        centres = kmeans_1d(flat, count)
        return centres, (centres[:-1] + centres[1:]) / 2
    if method == "quantile":
        th = np.quantile(flat, np.arange(count - 1, 0, -1) / count)
    elif method == "otsu":
        if count > 5:
            raise ParameterError("otsu works up to 5 planes; use kmeans or quantile", parameter="method")
        from skimage.filters import threshold_multiotsu

        th = np.sort(threshold_multiotsu(flat, classes=count, nbins=256))[::-1]
    else:
        raise ParameterError(f"unknown method {method!r}; kmeans, otsu or quantile", parameter="method")
    labels = assign_planes(flat, th)
    centres = np.array([flat[labels == i].mean() if (labels == i).any() else np.nan for i in range(count)])
    return centres, np.asarray(th, dtype=np.float64)


def thresholds_for(centres: np.ndarray) -> np.ndarray:
    """Midpoints between descending centres: each pixel goes to its nearest centre."""
    c = np.sort(np.asarray(centres, dtype=np.float64))[::-1]
    return (c[:-1] + c[1:]) / 2


def assign_planes(n: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Plane index per pixel (0 = nearest) from descending thresholds on nearness."""
    th = np.asarray(thresholds, dtype=np.float64)
    return (np.asarray(n)[..., None] <= th).sum(axis=-1).astype(np.int32) if th.size else \
        np.zeros(np.shape(n), np.int32)


def plane_masks(labels: np.ndarray, count: int, feather: float = 0.0) -> np.ndarray:
    """``float32 count x H x W`` masks in 0..1 that sum to 1 at every pixel.

    ``feather``: Gaussian sigma in pixels applied to every one-hot mask (0 = hard edges).
    """
    masks = np.stack([(labels == i).astype(np.float32) for i in range(count)])
    if feather > 0:
        masks = np.stack([cv2.GaussianBlur(m, (0, 0), feather, borderType=cv2.BORDER_REFLECT) for m in masks])
        masks /= np.maximum(masks.sum(axis=0, keepdims=True), 1e-6)  # exact 1 despite float rounding
    return masks


def rgba_layers(rgb: np.ndarray, masks: np.ndarray, alpha: np.ndarray | None = None) -> list[np.ndarray]:
    """One uint8 RGBA image per mask: the photo with the mask as alpha, times the photo's own
    ``alpha`` (uint8 H x W) when it has one (a transparent pixel stays transparent in every layer)."""
    if alpha is not None:
        masks = masks * (alpha.astype(np.float32) * np.float32(1.0 / 255.0))[None]
    return [np.dstack([rgb, np.clip(m * 255.0 + 0.5, 0, 255).astype(np.uint8)]) for m in masks]


def plane_preview(rgb: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    """The photo tinted by plane (turbo colours, warm = near), plane edges drawn dark."""
    tint = colorize(1.0 - np.arange(count) / max(count - 1, 1))[0] if count > 1 else colorize(np.ones((1, 1)))[0]
    out = (0.55 * rgb.astype(np.float32) + 0.45 * tint[labels].astype(np.float32))
    edge = cv2.morphologyEx(labels.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    out[edge] *= 0.3
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def split_layers(rgb: np.ndarray, dm: DepthMap, *, count: int = 3, method: str = "kmeans",
                 depths: list[float] | None = None, units: str = "nearness", scale: MetricScale | None = None,
                 feather: float = 2.0) -> dict:
    """The pure core of the step (and of the one-shot ``layers`` command).

    Returns ``labels`` (int32 HxW, 0 = nearest), ``masks`` (float32 NxHxW summing to 1),
    ``layers`` (uint8 RGBA), ``centres`` (nearness 0..1, nearest first), ``thresholds``, and
    ``centres_m`` (meters, when the map is metric or a scale is given).
    """
    n = normalized_nearness(dm)
    if depths:
        d = np.asarray(depths, dtype=np.float64)
        if units == "meters":
            if np.any(d <= 0):
                raise ParameterError("plane distances must be positive meters", parameter="depths")
            # work on the metric map's own inverse depth, so that centres and pixels share a scale
            m = metric_of(dm, scale).data.astype(np.float64)
            ok = np.isfinite(m) & (m > 0)  # a pixel with no depth (NaN, inf, 0) made every centre NaN
            if not ok.any():
                raise ParameterError("the depth map has no valid value to place planes in meters", parameter="depths")
            inv = 1.0 / np.where(ok, m, 1.0)
            lo, hi = float(inv[ok].min()), float(inv[ok].max())
            n = ((inv - lo) / max(hi - lo, 1e-12)).astype(np.float32)
            n[~ok] = np.median(n[ok])  # as normalized_nearness fills them: the planes' own median
            d = (1.0 / d - lo) / max(hi - lo, 1e-12)
        elif np.any((d < 0) | (d > 1)):
            raise ParameterError("plane depths as nearness must lie in 0..1 (1 = nearest); "
                                 "or set units: meters", parameter="depths")
        centres = np.sort(d)[::-1]
        thresholds = thresholds_for(centres)
    else:
        centres, thresholds = choose_planes(n, count, method)
    k = len(centres)
    labels = assign_planes(n, thresholds)
    masks = plane_masks(labels, k, feather)
    out = {"labels": labels, "masks": masks, "layers": rgba_layers(rgb, masks),
           "centres": [float(c) for c in centres], "thresholds": [float(t) for t in thresholds],
           "fractions": [float((labels == i).mean()) for i in range(k)]}
    if dm.kind == "metric" or (scale is not None and scale.given()):
        m = metric_of(dm, scale).data
        ok = np.isfinite(m)
        out["centres_m"] = [float(np.median(m[(labels == i) & ok])) if ((labels == i) & ok).any() else None
                            for i in range(k)]
    return out


def _json_numbers(values: list) -> list:
    """``values`` with NaN (a plane no pixel fell in, e.g. quantiles of a flat map) as ``null``:
    ``NaN`` is not JSON (RFC 8259), and strict readers refuse the whole file."""
    return [None if v is None or not np.isfinite(v) else v for v in values]


# -- the step --------------------------------------------------------------------------------
class LayersParams(StepParams):
    count: int = Field(3, ge=1, le=16, description="number of depth planes (ignored when depths are given)")
    method: Literal["kmeans", "otsu", "quantile"] = Field("kmeans", description="how planes are chosen from the "
                                                          "depth histogram: kmeans, otsu (up to 5), quantile")
    depths: list[float] | None = Field(None, min_length=1, max_length=16,
                                       description="plane centres instead: nearness 0..1 (1 = nearest) "
                                       "or meters with units: meters (1 to 16, all different)")
    units: Literal["nearness", "meters"] = Field("nearness", description="units of depths")
    metric: MetricScale = Field(default_factory=MetricScale, description="scale for a relative map when depths are meters")
    # (bounded: a sigma of 1e9 px was an OpenCV assertion, its kernel size overflowing)
    feather: float = Field(2.0, ge=0, le=1000, description="mask edge softness: Gaussian sigma in pixels (0 = hard)")

    @field_validator("depths")
    @classmethod
    def _distinct(cls, v):
        # two planes at one centre: which pixel is whose is a tie, not "the nearest centre"
        if v is not None and len(set(v)) < len(v):
            dup = next(x for x in v if v.count(x) > 1)
            raise ValueError(f"plane centre {dup:g} is given twice; each plane needs its own depth")
        return v


def run(ctx: StepContext, p: LayersParams) -> dict[str, Output]:
    from .lib.images import over_background

    rgb, alpha = ctx.image_alpha()
    res = split_layers(rgb, ctx.depth(), count=p.count, method=p.method, depths=p.depths, units=p.units,
                       scale=p.metric, feather=p.feather)
    if alpha is not None:  # the layers keep the photo's alpha; the preview is an opaque picture
        res["layers"] = rgba_layers(rgb, res["masks"], alpha)
        rgb = over_background(rgb, alpha)
    k = len(res["centres"])
    info = {"planes": k, "centres": json.dumps(_json_numbers(res["centres"])), "fractions": json.dumps(res["fractions"])}
    path = ctx.out("main", ".png")
    write_image(path, plane_preview(rgb, res["labels"], k))  # (tagged sRGB, as every colour output)
    outs = {"main": Output(path, "image", info)}
    for i in range(k):
        plane = {"plane": i, "nearness": _json_numbers(res["centres"])[i], "order": "0 = nearest"}
        if "centres_m" in res and res["centres_m"][i] is not None:
            plane["distance_m"] = res["centres_m"][i]
        lp = ctx.out(f"layer_{i}", ".png")
        write_image(lp, res["layers"][i])
        mp = ctx.out(f"mask_{i}", ".png")
        Image.fromarray(np.clip(res["masks"][i] * 255.0 + 0.5, 0, 255).astype(np.uint8)).save(mp)
        outs[f"layer_{i}"] = Output(lp, "image", plane)
        outs[f"mask_{i}"] = Output(mp, "mask", plane)
    planes = ctx.out("planes", ".json")
    planes.write_text(json.dumps({k_: _json_numbers(v) for k_, v in res.items()
                                  if k_ in ("centres", "thresholds", "fractions", "centres_m")}, indent=1, allow_nan=False))
    outs["planes"] = Output(planes, "data", {"planes": k})
    return outs


PLANE_HISTORY = 0.85  # clips: weight of the previous frame's plane thresholds (planes drift, never jump)


def clip_warm(rgb: np.ndarray, near: np.ndarray, p: LayersParams, state: dict) -> np.ndarray:
    """The plane thresholds for this frame of a clip, kept in ``state`` (descending nearness).

    Given ``depths`` fix the planes for the whole shot. Otherwise the planes are chosen on every
    frame (on the stable nearness, no per-frame normalisation) and filtered like a focus pull
    (``PLANE_HISTORY``), so they follow a changing scene without jumping; a scene cut
    (``state["cut"]``) chooses afresh. Called on the warm-up frames before a segment too, so
    that the planes continue across segment boundaries."""
    if state.get("cut"):
        state.pop("thresholds", None)
    prev = state.get("thresholds")
    if p.depths:
        if prev is None:
            from .lib.depthmap import DepthMap

            res = split_layers(rgb, DepthMap(data=near, kind="relative_inverse", source="clip"), count=p.count,
                               method=p.method, depths=p.depths, units=p.units, scale=p.metric, feather=0.0)
            state["thresholds"] = np.asarray(res["thresholds"], np.float64)
        return state["thresholds"]
    step = max(1, min(near.shape) // 256)  # the histogram needs no more than ~256 rows of samples
    _, th = choose_planes(near[::step, ::step], p.count, p.method)
    th = np.asarray(th, np.float64)
    if prev is not None and prev.shape == th.shape:
        th = PLANE_HISTORY * prev + (1 - PLANE_HISTORY) * th
    state["thresholds"] = th
    return th


def clip_frame(rgb: np.ndarray, near: np.ndarray, p: LayersParams, state: dict) -> dict[str, np.ndarray]:
    """One frame of a clip (``depthcraft.tasks.clips``): ``main`` the plane preview, and per
    plane ``layer_i`` (RGBA: a folder of PNGs keeps the alpha; a video shows the plane over
    black). The planes follow the clip smoothly (:func:`clip_warm`)."""
    th = clip_warm(rgb, near, p, state)
    k = len(th) + 1
    labels = assign_planes(near, th)
    masks = plane_masks(labels, k, p.feather)
    outs = {"main": plane_preview(rgb, labels, k)}
    for i, layer in enumerate(rgba_layers(rgb, masks)):
        outs[f"layer_{i}"] = layer
    return outs


def params_for_output(path) -> dict:
    """``-o x.png``: the plane preview; the RGBA layers and masks beside it are PNGs too (alpha)."""
    s = Path(str(path)).suffix.lower()
    if s not in (".png", ""):  # no suffix: PNG, as ever
        raise ParameterError(f"{Path(str(path)).name}: layers writes PNG images (the layers keep their alpha), "
                             f"not {repr(s) if s else 'a file without a suffix'}; use -o NAME.png", parameter="-o")
    return {}


def inert(p: LayersParams, given: set) -> list:
    """Parameters with no effect given the others (refused when written: :mod:`.lib.inert`)."""
    from .lib.inert import Inert, metric_scale

    known = metric_scale(["metric"], "metric", known=p.metric.known)  # (every format "metric": only known_x/known_y without known)
    if p.depths:
        return [Inert("count", "depths", "the planes are the given depths"),
                Inert("method", "depths", "the planes are the given depths, not chosen from the histogram"), *known]
    return [Inert("units", "depths", "units says what the given depths are in"), *known]


SPEC = StepSpec(kind="layers", version="3", params=LayersParams, run=run, clip_frame=clip_frame,
                params_for_output=params_for_output, main_suffixes=lambda p: (".png",),
                clip_warm=clip_warm, inert=inert,
                summary="split the photo into N depth planes: feathered masks and RGBA layers, nearest first")
