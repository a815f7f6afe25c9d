"""The ``refine`` step: make the depth map's edges follow the photo's edges.

Method (*two-layer matting of the depth edge*, :func:`refine_depth`): a blurred depth edge is a
ramp between two correct plateaus. Around every pixel the local maximum and minimum of the map
within ``radius`` pixels (a grey dilation and erosion) give the depth of the near and the far
layer, and the pixel's position on the ramp between them gives a soft *alpha* (1 = near). Pixels
whose window holds less than ``band`` of the depth range are flat and are left untouched.
The alpha is then made to follow the photo with the colour guided filter (He, Sun & Tang,
"Guided Image Filtering", ECCV 2010, Sec. 3.5: the filter fits alpha locally as an affine
function of the CIE Lab colour, the *colour-line* model it uses for matte feathering, cf.
Levin et al., "A Closed-Form Solution to Natural Image Matting", CVPR 2006) and sharpened with a
smoothstep around 0.5, because depth edges are hard where colour edges are: the depth is
rebuilt as ``far + alpha * (near - far)``. This is joint-bilateral-upsampling done on the
near/far decision instead of on the depth (Kopf et al., "Joint Bilateral Upsampling", SIGGRAPH
2007): values come from the plateaus, so a near object keeps its own depth up to its outline.

Units are kept: both layers are the map's own values, so a disparity map in pixels stays in
pixels and a metric map in meters. Non-finite input values are filled for the computation and
put back where they were. Work is done only on the tiles that hold uncertain pixels.
"""

from __future__ import annotations

import cv2
import numpy as np
from pydantic import Field

from .lib.depthmap import DepthMap
from .lib.errors import InputError, ParameterError
from .lib.formats import FormatName, MetricScale, format_outputs
from .lib.outputs import DEPTH_SUFFIXES, depth_params_for_suffix
from .lib.guided import box
from .lib.step import Output, StepContext, StepParams, StepSpec, save_depth


GAIN = 3.0  # slope of the alpha sharpening at 0.5 (divided by `temperature`)
EPS = 2e-3  # guided-filter regulariser on (Lab / (100, 127, 127)) colours
TILE = 256  # side of the work tiles (px): only tiles holding uncertain pixels are processed
LAB_SCALE = np.array([1 / 100, 1 / 127, 1 / 127], np.float32)


def _fill(d: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    ok = np.isfinite(d)
    if ok.all():
        return d, None
    if not ok.any():
        raise InputError("the depth map has no finite value")
    out = d.copy()
    out[~ok] = float(np.median(d[ok]))
    return out, ~ok


def guided_alpha(lab: np.ndarray, p: np.ndarray, r: int, eps: float) -> np.ndarray:
    """Colour guided filter of ``p`` (float32 ``H x W``) by ``lab`` (float32 ``H x W x 3``).

    He et al. 2010, Eq. 19-21: in every ``(2r+1)^2`` window ``p ~ a . I + b`` with ``a`` from the
    3x3 colour covariance (regularised by ``eps``); the coefficients are averaged over the windows
    holding each pixel. The 3x3 systems are solved in closed form (adjugate) on whole arrays.
    """
    m = box(lab, r)
    mp = box(p, r)
    c = box(lab * p[..., None], r) - m * mp[..., None]
    sq = box(lab * lab, r) - m * m  # variances rr, gg, bb
    cr = box(lab * lab[..., [1, 2, 0]], r) - m * m[..., [1, 2, 0]]  # rg, gb, br
    vrr, vgg, vbb = sq[..., 0] + eps, sq[..., 1] + eps, sq[..., 2] + eps
    vrg, vgb, vbr = cr[..., 0], cr[..., 1], cr[..., 2]
    i00 = vgg * vbb - vgb * vgb
    i01 = vgb * vbr - vrg * vbb
    i02 = vrg * vgb - vgg * vbr
    i11 = vrr * vbb - vbr * vbr
    i12 = vrg * vbr - vrr * vgb
    i22 = vrr * vgg - vrg * vrg
    det = vrr * i00 + vrg * i01 + vbr * i02
    c0, c1, c2 = c[..., 0], c[..., 1], c[..., 2]
    a = np.stack([i00 * c0 + i01 * c1 + i02 * c2,
                  i01 * c0 + i11 * c1 + i12 * c2,
                  i02 * c0 + i12 * c1 + i22 * c2], axis=-1) / det[..., None]
    b = mp - (a * m).sum(axis=-1)
    return (box(a, r) * lab).sum(axis=-1) + box(b, r)


def refine_depth(rgb: np.ndarray, depth: np.ndarray, *, radius: int = 6, color_radius: int = 4,
                 band: float = 0.03, margin: float = 0.0, temperature: float = 1.0, median: int = 0,
                 eps: float = EPS) -> np.ndarray:
    """Edge-refined copy of ``depth`` (float32 ``H x W``, any kind, same units) guided by ``rgb``.

    ``rgb``: uint8 RGB ``H x W x 3`` of the same size. ``radius``: window radius (px) in which the
    near and far layers of a blurred edge are looked for (about 0.4 x the width of the blur).
    ``color_radius``: guided-filter window radius. ``band``: least depth variation within
    ``radius``, as a share of the map's 1..99 % range, for a pixel to be re-decided. ``margin``:
    share (0..1) of the input's own ramp position kept in the decision (higher = more
    conservative). ``temperature``: softness of the near/far decision. ``median``: 0, 3 or 5.
    """
    d = np.asarray(depth, dtype=np.float32)
    img = np.asarray(rgb)
    if img.ndim != 3 or img.shape[2] != 3:
        raise InputError(f"refine needs an RGB image, got shape {img.shape}")
    if d.shape != img.shape[:2]:
        raise InputError(f"depth map is {d.shape[1]}x{d.shape[0]} but the image is {img.shape[1]}x{img.shape[0]}",
                         hint="give a depth map of the same size as its photo")
    for name, v in (("radius", radius), ("color_radius", color_radius)):
        if v < 1:
            raise ParameterError("must be at least 1", parameter=name)
    if median not in (0, 1, 3, 5):
        raise ParameterError("must be 0 (off), 3 or 5", parameter="median")
    if not 0.0 <= margin <= 1.0:
        raise ParameterError("must be between 0 and 1", parameter="margin")
    if temperature <= 0:
        raise ParameterError("must be positive", parameter="temperature")
    d, bad = _fill(d)
    h, w = d.shape
    lo, hi = np.percentile(d[:: max(1, h // 512), :: max(1, w // 512)], [1, 99])
    span = max(float(hi - lo), 1e-12)

    # Near and far layers: the extremes of the map within `radius` (van Herk: O(1) per pixel).
    k = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * radius + 1, 2 * radius + 1))
    near, far = cv2.dilate(d, k), cv2.erode(d, k)
    jump = near - far
    in_band = jump > band * span
    out = d.copy()
    if in_band.any():
        gain = GAIN / temperature
        halo = 2 * color_radius + 1  # support of the guided filter (box of a box)
        rows = np.flatnonzero(np.add.reduceat(in_band, np.arange(0, h, TILE), axis=0).any(axis=1))
        for ty in rows:
            y0, y1 = ty * TILE, min(h, (ty + 1) * TILE)
            cols = np.flatnonzero(np.add.reduceat(in_band[y0:y1], np.arange(0, w, TILE), axis=1).any(axis=0))
            for tx in cols:
                x0, x1 = tx * TILE, min(w, (tx + 1) * TILE)
                Y0, Y1, X0, X1 = max(0, y0 - halo), min(h, y1 + halo), max(0, x0 - halo), min(w, x1 + halo)
                sl = np.s_[Y0:Y1, X0:X1]
                rgb_t = img[sl].astype(np.float32)
                rgb_t *= 1.0 / 255.0
                lab = cv2.cvtColor(rgb_t, cv2.COLOR_RGB2Lab) * LAB_SCALE
                j, f, m = jump[sl], far[sl], in_band[sl]
                # Position on the ramp (flat pixels: undecided 0.5, so they pull no side).
                a0 = np.where(m, (d[sl] - f) / np.maximum(j, 1e-12), 0.5).astype(np.float32)
                a = guided_alpha(lab, a0, color_radius, eps)
                x = np.clip((a - 0.5) * gain + 0.5, 0.0, 1.0)
                alpha = x * x * (3.0 - 2.0 * x)  # smoothstep: hard where the colour is clear
                if margin > 0:
                    alpha = (1.0 - margin) * alpha + margin * a0
                new = f + alpha * j
                iy, ix = np.s_[y0 - Y0:y1 - Y0], np.s_[x0 - X0:x1 - X0]
                keep = m[iy, ix]
                out[y0:y1, x0:x1][keep] = new[iy, ix][keep]
        if median > 1:
            med = cv2.medianBlur(out, median)
            out[in_band] = med[in_band]
    if bad is not None:
        out[bad] = np.asarray(depth, dtype=np.float32)[bad]
    return out


# -- the step ---------------------------------------------------------------------------------
class RefineParams(StepParams):
    radius: int = Field(6, ge=1, le=64, description="window radius (px) in which the near and far sides of a blurred "
                                                    "depth edge are looked for; about 0.4 x the blur's width")
    color_radius: int = Field(4, ge=1, le=32, description="window radius (px) of the colour guided filter that "
                                                          "aligns the edge with the photo")
    band: float = Field(0.03, gt=0, lt=1, description="least depth change within radius, as a share of the depth range, "
                                                      "for a pixel to be re-decided (smaller = more pixels)")
    margin: float = Field(0.0, ge=0, le=1, description="share (0..1) of the input's own value kept at edges "
                                                       "(higher = more conservative)")
    temperature: float = Field(1.0, gt=0, description="softness of the near/far decision at edges (lower = harder)")
    median: int = Field(0, ge=0, le=5, description="median clean-up window inside the band: 0 (off), 3 or 5")
    format: FormatName = Field("grayscale", description="file written to the output folder (see export formats); "
                                                         "raw keeps the input's units")
    metric: MetricScale = Field(default_factory=MetricScale, description="scale for the metric formats")
    message: str | None = Field(None, description="eachsense: the refinement request in your words")


def _delegate(ctx: StepContext, p: RefineParams, dm: DepthMap) -> DepthMap:
    """The recipe step named a provider: let it refine (e.g. eachsense, multi-turn)."""
    from .providers import DepthRequest, get_provider

    prov = get_provider(ctx.provider)
    if not hasattr(prov, "refine"):
        raise ParameterError(f"provider {ctx.provider!r} cannot refine a depth map; drop the step's provider "
                             "to use the local edge refinement", parameter="provider")
    up = ctx.depth_artifact()  # a remote estimate says which service session holds its conversation
    chain = {"service_session": up.meta["service_session"]} if up is not None and up.meta.get("service_session") else {}
    # the recipe's provider_options (send_depth, model, web_search...) reach the refine turn as
    # they reach estimate's (they were keyed but never sent before)
    options = {**dict(ctx.options.get("provider_options") or {}), **chain}
    req = DepthRequest(image=ctx.photo_seen(), image_path=ctx.source.meta.get("origin", ctx.source.path),
                       session_id=ctx.session_id, mode=ctx.mode, message=p.message, depth=dm,
                       answers=dict(ctx.options.get("answers") or {}), options=options)
    return prov.refine(req)


def run(ctx: StepContext, p: RefineParams) -> dict[str, Output]:
    dm = ctx.depth()  # raises InputError naming the file when its size differs from the photo
    if ctx.options.get("step_provider"):
        out = _delegate(ctx, p, dm)
    else:
        data = refine_depth(ctx.photo_seen(), dm.data, radius=p.radius, color_radius=p.color_radius, band=p.band,
                            margin=p.margin, temperature=p.temperature, median=p.median)
        out = dm.with_data(data, meta={**dm.meta, "refined": "edge-matting"})
    # as estimate: the file's own metadata, and the .npy/.pfm sidecar published beside it (it was
    # left out: `refine -o d.npy` on a disparity map read back as relative_inverse)
    return {"depth": save_depth(ctx, out), **format_outputs(ctx, out, p.format, scale=p.metric)}


def clip_frame(rgb: np.ndarray, near: np.ndarray, p: RefineParams, state: dict) -> dict[str, np.ndarray]:
    """One frame of a clip (``depthcraft.tasks.clips``): the stable nearness (0..1) refined at
    the frame's edges; written as a depth video or per-frame files."""
    out = refine_depth(rgb, near, radius=p.radius, color_radius=p.color_radius, band=p.band, margin=p.margin,
                       temperature=p.temperature, median=p.median)
    return {"main": np.clip(out, 0.0, 1.0).astype(np.float32)}


def params_for_output(path) -> dict:
    """``-o x.npy``: float32 in the input's own units (raw); ``.png``: 8-bit white = near; ``.pfm``: normalised."""
    return depth_params_for_suffix(path, npy="raw")


def main_suffixes(p: RefineParams) -> tuple[str, ...]:
    return DEPTH_SUFFIXES[p.format]


def inert(p: RefineParams, given: set) -> list:
    """Parameters with no effect given the others (refused when written: :mod:`.lib.inert`); what
    depends on the provider (message, the local edge settings) is checked where it is known."""
    from .lib.inert import metric_scale

    return metric_scale([p.format], "format", known=p.metric.known)


LOCAL = ("radius", "color_radius", "band", "margin", "temperature", "median")  # the local edge matting's settings

SPEC = StepSpec(kind="refine", version="4", params=RefineParams, run=run, params_for_output=params_for_output,
                output_params=("format",), main_suffixes=main_suffixes,
                clip_frame=clip_frame,
                uses_provider=True, inert=inert,
                summary="make depth edges follow the photo's edges (two-layer edge matting; keeps the depth's units)")
