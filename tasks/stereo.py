"""The ``stereo`` step: a stereo pair from one photo and its depth, in the layout a viewer needs.

Two modes:

- **relative** (any estimated depth): ``divergence`` is the largest disparity between the two
  eyes, in percent of the image width, and ``convergence`` which nearness (0 = farthest,
  1 = nearest) sits on the screen plane; each eye is rendered from the photo moved half-way
  (the peers' parameters, e.g. iw3's ``divergence`` / ``convergence``).
- **exact** (a ``disparity`` depth map with ``scale``): every pixel of the photo, taken as the
  left view, moves to ``x - d * scale`` in the right view (the Middlebury convention); the
  left view is the photo itself.

Layouts: ``sbs`` (full side-by-side), ``hsbs`` (half side-by-side), ``tb`` / ``htb``
(top-bottom), ``cross`` (cross-eyed: right image on the left), ``anaglyph`` (red-cyan, Dubois
matrices by default), ``lr`` (two files), ``mpo`` (stereo JPEG, the format of 3D cameras).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from .lib.depthmap import DepthMap, normalized_nearness
from .lib.errors import ParameterError
from .lib.images import write_image
from .lib.step import Output, StepContext, StepParams, StepSpec
from .lib.viewsynth.holefill import MAX_DISPARITY
from .lib.viewsynth import edge_far, hidden_mask, layer_channels, make_layers, resolve_interpolation, shift_view

log = logging.getLogger(__name__)

Layout = Literal["sbs", "hsbs", "tb", "htb", "cross", "anaglyph", "lr", "mpo"]
AnaglyphName = Literal["dubois", "half_color", "gray", "color"]
COMFORT_PERCENT = 3.0  # above this divergence (share of width) many viewers feel strain

# Red-cyan anaglyph matrices, rows = output R, G, B; columns = input R, G, B.
# Dubois (least-squares projection, E. Dubois, "A projection method to generate anaglyph
# stereo images", ICASSP 2001), the red-cyan set published on his site.
ANAGLYPH = {
    "dubois": (np.array([[0.456, 0.500, 0.176], [-0.040, -0.038, -0.016], [-0.015, -0.021, -0.005]], np.float32),
               np.array([[-0.043, -0.088, -0.002], [0.378, 0.734, -0.018], [-0.072, -0.113, 1.226]], np.float32)),
    # left luminance in red, right colour in green and blue
    "half_color": (np.array([[0.299, 0.587, 0.114], [0, 0, 0], [0, 0, 0]], np.float32),
                   np.array([[0, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)),
    "gray": (np.array([[0.299, 0.587, 0.114], [0, 0, 0], [0, 0, 0]], np.float32),
             np.array([[0, 0, 0], [0.299, 0.587, 0.114], [0.299, 0.587, 0.114]], np.float32)),
    "color": (np.array([[1, 0, 0], [0, 0, 0], [0, 0, 0]], np.float32),
              np.array([[0, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)),
}


class StereoParams(StepParams):
    eye: Literal["both", "left", "right"] = Field("both", description="both: the layout; left/right: that view alone, the photo's size")
    layout: Layout = Field("sbs", description="sbs, hsbs, tb, htb, cross, anaglyph, lr (two files) or mpo (stereo JPEG)")
    divergence: float = Field(2.0, gt=0, le=20, description="largest disparity between the eyes, percent of the width (relative depth)")
    convergence: float = Field(0.5, ge=0, le=1, description="nearness on the screen plane: 0 = farthest (all pops out), 1 = nearest (all behind)")
    scale: float | None = Field(None, ge=-100, le=100, description="exact mode (disparity depth): shift each pixel by disparity x scale")
    anaglyph: AnaglyphName = Field("dubois", description="anaglyph matrix: dubois, half_color, gray or color")
    edge_dilation: int | None = Field(None, ge=0, le=64, description="grow near objects by this many pixels (default: auto, 0 for exact disparity)")
    interpolation: Literal["auto", "linear", "cubic", "lanczos"] = Field("auto", description="resampling filter (auto: cubic up to 4 MP, linear above)")
    format: Literal["png", "jpg"] = Field("png", description="image file format (mpo is always JPEG)")
    quality: int = Field(95, ge=50, le=100, description="JPEG quality")
    mask: bool = Field(True, description="also write the mask of filled-in pixels of each view")
    temporal: bool = Field(True, description="clips: temporally stable depth (false: each frame alone)")
    keyframe_interval: int | None = Field(None, ge=1, le=120, description="clips: estimate depth every Nth frame and carry it along the motion between (default 24)")


# -- pure functions ----------------------------------------------------------------------------
def eye_disparities(dm: DepthMap, *, divergence: float, convergence: float, scale: float | None,
                    width: int) -> tuple[np.ndarray | None, np.ndarray, bool]:
    """Per-eye shifts ``(left, right, exact)``: the left view shows x at ``x + left``, the right
    view at ``x - right`` (``left`` is None in exact mode: the photo is the left view)."""
    if dm.kind == "disparity" and scale is not None:
        # (clipped first: a float map's "no data" sentinel, -3.4e38, times the scale is -inf)
        d = np.nan_to_num(np.asarray(dm.data, np.float32), nan=0.0, posinf=0.0, neginf=0.0)  # (a copy)
        np.clip(d, -MAX_DISPARITY, MAX_DISPARITY, out=d)
        d *= np.float32(scale)
        return None, d, True
    half = normalized_nearness(dm, robust=0.002)  # a new array: worked on in place
    half -= np.float32(convergence)
    half *= np.float32(divergence / 100.0 * width)  # the total disparity between the eyes...
    half *= np.float32(0.5)  # ...half of it per eye
    return half, half, False


def comfort_warning(disp_range_px: float, width: int) -> str | None:
    """A warning when the pair's disparity range exceeds what most eyes fuse comfortably."""
    pct = 100.0 * disp_range_px / max(width, 1)
    if pct > COMFORT_PERCENT:
        return (f"disparity range is {pct:.1f}% of the width, above the {COMFORT_PERCENT:.0f}% most viewers "
                "find comfortable; lower divergence (or scale)")
    return None


def render_pair(image: np.ndarray, left_d: np.ndarray | None, right_d: np.ndarray, *,
                edge_dilation: int = 0, interpolation: str = "auto", eyes: tuple[str, ...] = ("left", "right")):
    """The two views and their filled-in masks: ``{eye: View}``. Each eye reads its own
    background layer, built for the side it reveals (right of near objects for the right eye,
    left for the left eye): one layer for both hid both sides of every object, so neither
    eye could read background from the other side's band (Middlebury, right eye: disoccluded
    21.23 dB with the shared layer against 21.48 with its own), and ``--eye left`` differed
    from the left image of the pair. One layer at a time is held."""
    from .lib.viewsynth import View, dilate_near

    out = {}
    rd = dilate_near(right_d, edge_dilation, horizontal=True) if edge_dilation else right_d
    ld = None
    if left_d is not None and "left" in eyes:
        ld = rd if left_d is right_d else (dilate_near(left_d, edge_dilation, horizontal=True) if edge_dilation else left_d)
    interpolation = resolve_interpolation(interpolation, image.shape[0] * image.shape[1])
    channels = layer_channels(interpolation)

    def view(d, side, direction):
        far = edge_far(d, side)  # (the band and the warp share it)
        layers = make_layers(image, hidden_mask(d, sides=side, edge_far=far), channels=channels, disparity=d,
                             sides=side)
        return shift_view(image, d, direction=direction, layers=layers, interpolation=interpolation, edge_far=far)

    jobs = {}
    if "right" in eyes:
        jobs["right"] = (rd, "right", -1)
    if "left" in eyes:
        if ld is None:
            out["left"] = View(image, np.zeros(image.shape[:2], bool), np.zeros(image.shape[:2], np.float32))
        else:
            jobs["left"] = (ld, "left", 1)
    # one eye after the other (each is banded over the cores already; both at once measured no
    # faster and held both layers)
    out.update({eye: view(*job) for eye, job in jobs.items()})
    return {eye: out[eye] for eye in ("left", "right") if eye in out}


def anaglyph(left: np.ndarray, right: np.ndarray, kind: str = "dubois") -> np.ndarray:
    """Red-cyan anaglyph (uint8 RGB) of a pair, by a 3x3 matrix per eye."""
    if kind not in ANAGLYPH:
        raise ParameterError(f"unknown anaglyph {kind!r}; one of {', '.join(ANAGLYPH)}", parameter="anaglyph")
    ml, mr = ANAGLYPH[kind]
    out = cv2.transform(left.astype(np.float32), ml) + cv2.transform(right.astype(np.float32), mr)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def compose(left: np.ndarray, right: np.ndarray, layout: str, *, anaglyph_kind: str = "dubois") -> np.ndarray:
    """One image of a pair in a layout (not ``lr`` / ``mpo``, which are several images)."""
    h, w = left.shape[:2]
    if layout == "sbs":
        return np.concatenate([left, right], 1)
    if layout == "cross":
        return np.concatenate([right, left], 1)
    if layout == "tb":
        return np.concatenate([left, right], 0)
    if layout == "hsbs":
        half = (max(1, w // 2), h)
        return np.concatenate([cv2.resize(left, half, interpolation=cv2.INTER_AREA),
                               cv2.resize(right, half, interpolation=cv2.INTER_AREA)], 1)
    if layout == "htb":
        half = (w, max(1, h // 2))
        return np.concatenate([cv2.resize(left, half, interpolation=cv2.INTER_AREA),
                               cv2.resize(right, half, interpolation=cv2.INTER_AREA)], 0)
    if layout == "anaglyph":
        return anaglyph(left, right, anaglyph_kind)
    raise ParameterError(f"layout {layout!r} is not a single image", parameter="layout")


def write_mpo(path: str | Path, left: np.ndarray, right: np.ndarray, *, quality: int = 95) -> Path:
    """A stereo MPO (CIPA DC-007 multi-picture JPEG: left image first, then right)."""
    from PIL import Image

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(left).save(p, format="MPO", save_all=True, append_images=[Image.fromarray(right)],
                               quality=quality)
    return p


# -- the step ----------------------------------------------------------------------------------
def _with_alpha(views: dict, alpha_views: dict) -> dict:
    """Each eye's premultiplied view divided by its warped alpha, with that alpha: RGBA views."""
    from dataclasses import replace

    out = {}
    for eye, v in views.items():
        a = alpha_views[eye].image[..., 0]
        col = v.image.astype(np.float32) * (255.0 / np.maximum(a, 1).astype(np.float32))[..., None]
        col = np.where(a[..., None] > 0, np.clip(col + 0.5, 0, 255), 0).astype(np.uint8)
        out[eye] = replace(v, image=np.dstack([col, a]))
    return out


def run(ctx: StepContext, p: StereoParams) -> dict[str, Output]:
    from .lib.images import over_background

    image, alpha = ctx.image_alpha()
    # PNG pairs and eyes keep the photo's alpha, warped with it: the colour is warped premultiplied
    # (a transparent pixel's stored colour never reaches the edge next to it) and the alpha as an
    # image of its own along the same disparities, then divided back. An anaglyph mixes the eyes'
    # colours and a JPEG/MPO has no alpha: there the photo is composited over the stated background.
    keep_alpha = alpha is not None and p.format == "png" and p.layout not in ("anaglyph", "mpo")
    if alpha is not None and not keep_alpha:
        image, alpha = over_background(image, alpha), None
    elif keep_alpha:
        image = (image.astype(np.float32) * (alpha.astype(np.float32) / 255.0)[..., None] + 0.5).astype(np.uint8)
    dm = ctx.depth()
    if p.scale is not None and dm.kind != "disparity":  # (else silently the relative mode, as if scale were not given)
        raise ParameterError(f"exact mode (scale) needs a disparity map; this depth map's kind is {dm.kind!r}",
                             parameter="scale", hint="give --depth FILE --depth-kind disparity, or leave out scale")
    h, w = image.shape[:2]
    left_d, right_d, exact = eye_disparities(dm, divergence=p.divergence, convergence=p.convergence,
                                             scale=p.scale, width=w)
    dil = (0 if exact else max(1, round(w / 600))) if p.edge_dilation is None else p.edge_dilation
    rng = float(np.ptp(right_d)) * (1.0 if exact else 2.0)
    warning = comfort_warning(rng, w)
    if warning:
        log.warning("%s: %s", ctx.image_name, warning)
    meta = {"mode": "exact" if exact else "relative", "divergence_percent": round(100.0 * rng / w, 3),
            "layout": p.layout, "eye": p.eye}
    if warning:
        meta["warning"] = warning
    eyes = ("left", "right") if p.eye == "both" else (p.eye,)
    views = render_pair(image, left_d, right_d, edge_dilation=dil, interpolation=p.interpolation, eyes=eyes)
    if alpha is not None:
        views = _with_alpha(views, render_pair(np.ascontiguousarray(np.repeat(alpha[..., None], 3, axis=2)), left_d,
                                               right_d, edge_dilation=dil, interpolation=p.interpolation, eyes=eyes))
    # (one eye of an mpo is that eye's JPEG: it was a PNG under the .mpo name)
    ext = ".jpg" if p.format == "jpg" or (p.layout == "mpo" and p.eye != "both") else ".png"
    outs: dict[str, Output] = {}
    for eye, v in views.items():
        # a single eye is the main output itself: not published twice
        outs[eye] = Output(write_image(ctx.out(eye, ext), v.image, quality=p.quality), "image", {**meta, "eye": eye},
                           publish=p.eye == "both")
        if p.mask and v.filled.any():
            outs[f"{eye}_mask"] = Output(write_image(ctx.out(f"{eye}_mask", ".png"), v.filled.view(np.uint8) * np.uint8(255)),
                                         "mask", {"content": f"filled-in pixels of the {eye} view, white"})
    if p.eye != "both":
        outs["main"] = Output(outs[p.eye].path, "image", outs[p.eye].meta)
        if f"{p.eye}_mask" in outs:
            outs["mask"] = outs.pop(f"{p.eye}_mask")
        return outs
    left, right = views["left"].image, views["right"].image
    if p.layout == "lr":
        outs["main"] = Output(outs["left"].path, "image", outs["left"].meta)
    elif p.layout == "mpo":
        outs["main"] = Output(write_mpo(ctx.out("main", ".mpo"), left, right, quality=p.quality), "image", meta)
    else:
        img = compose(left, right, p.layout, anaglyph_kind=p.anaglyph)
        outs["main"] = Output(write_image(ctx.out("main", ext), img, quality=p.quality), "image", meta)
    return outs


def clip_frame(rgb: np.ndarray, near: np.ndarray, p: StereoParams, state: dict) -> dict[str, np.ndarray]:
    """One frame of a 3D video (``depthcraft.tasks.clips``): each eye by a backward warp along the
    rows (as iw3's row-flow warping), rendered straight at the layout's size (half width for hsbs,
    half height for htb), from the stable nearness ``near`` (0..1, any size: resampled here): no per-frame normalisation,
    so the depth budget does not pump. Near objects are grown by a horizontal max filter of the
    disparity first, so that their edges do not tear. ``lr`` gives ``main`` (left) and ``right``."""
    h, w = rgb.shape[:2]
    if p.layout == "mpo" or p.eye != "both" and p.layout not in ("sbs", "hsbs", "tb", "htb", "cross", "anaglyph", "lr"):
        raise ParameterError("a clip's 3D layout is sbs, hsbs, tb, htb, cross, anaglyph or lr", parameter="layout")
    if p.scale is not None:
        raise ParameterError("exact mode (scale) needs a disparity map; clips use estimated depth", parameter="scale")
    # half-size layouts: at least one pixel per eye (a 1-pixel-wide clip is still a clip)
    ow, oh = (max(1, w // 2) if p.layout == "hsbs" else w), (max(1, h // 2) if p.layout == "htb" else h)
    if (ow, oh) != (w, h):  # half-size layouts: render each eye straight at its final size
        src = cv2.resize(rgb, (ow, oh), interpolation=cv2.INTER_AREA)
    else:
        src = rgb
    n = near if near.shape == (oh, ow) else cv2.resize(
        near, (ow, oh), interpolation=cv2.INTER_AREA if near.shape[1] > ow else cv2.INTER_LINEAR)
    # half the disparity per eye, in output pixels (the divergence is a share of the frame width)
    half = ((n - np.float32(p.convergence)) * np.float32(0.5 * p.divergence / 100.0 * ow)).astype(np.float32)
    grow = max(1, int(np.ceil(p.divergence / 100.0 * ow * 0.5)))
    d = cv2.dilate(half, np.ones((1, 2 * min(grow, 64) + 1), np.uint8)) if p.edge_dilation != 0 else half
    if state.get("grid_key") != (ow, oh):
        state["grid"] = np.meshgrid(np.arange(ow, dtype=np.float32), np.arange(oh, dtype=np.float32))
        state["grid_key"] = (ow, oh)
    gx, gy = state["grid"]
    views = {}
    for eye, sign in (("left", -1.0), ("right", 1.0)):
        views[eye] = cv2.remap(src, gx + np.float32(sign) * d, gy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    left, right = views["left"], views["right"]
    if p.eye != "both":
        return {"main": views[p.eye]}
    if p.layout == "lr":
        return {"main": left, "right": right}
    if p.layout == "hsbs" or p.layout == "sbs":
        return {"main": np.concatenate([left, right], 1)}
    if p.layout == "cross":
        return {"main": np.concatenate([right, left], 1)}
    if p.layout in ("tb", "htb"):
        return {"main": np.concatenate([left, right], 0)}
    return {"main": anaglyph(left, right, p.anaglyph)}


def params_for_output(path) -> dict:
    """``-o x.mpo``: stereo JPEG; ``x.jpg``: JPEG; ``x.png``: PNG."""
    from .lib.images import image_format_for_suffix

    if Path(path).suffix.lower() == ".mpo":
        return {"layout": "mpo"}

    return image_format_for_suffix(path, " or .mpo")


def main_suffixes(p: StereoParams) -> tuple[str, ...]:
    """One eye: the image format; both: ``.mpo`` for the mpo layout, else the image format."""
    from .lib.outputs import IMAGE_SUFFIXES

    if p.eye == "both" and p.layout == "mpo":
        return (".mpo",)
    return IMAGE_SUFFIXES[p.format]


def inert(p: StereoParams, given: set) -> list:
    """Parameters with no effect given the others (refused when written: :mod:`.lib.inert`)."""
    from .lib.inert import Inert

    out = []
    if p.eye != "both":
        out.append(Inert("layout", "eye", "one eye is written alone, at the photo's size; a layout arranges both eyes",
                         hint="leave out {layout} for one eye, or set {eye} both for the layout"))
        out.append(Inert("anaglyph", "eye", "the anaglyph matrix mixes both eyes (layout anaglyph)"))
    elif p.layout != "anaglyph":
        out.append(Inert("anaglyph", "layout", "the anaglyph matrix is used by layout anaglyph only",
                         hint="leave out {anaglyph}, or set {layout} anaglyph"))
    if p.scale is not None:  # exact mode: each pixel moves by its disparity x scale
        for name in ("divergence", "convergence"):
            out.append(Inert(name, "scale", "exact mode (scale) shifts each pixel by its disparity x scale; "
                             "divergence and convergence set the relative mode's shifts",
                             hint="leave out {%s}, or leave out {scale} for the relative mode" % name))
    if p.format != "jpg" and p.layout != "mpo":
        out.append(Inert("quality", "format", "quality is JPEG's (format jpg, or layout mpo)",
                         hint="leave out {quality}, or write a JPEG ({format} jpg)"))
    # (format jpg with layout mpo agrees with what is written; format png is a contradiction,
    # refused by the output checks)
    return out


# version 7: soft edges (issue 12 §3, fifth round: docs/rendering.md item 12); version 9: nearer
# sources count less in the fill's depth layers (seventh round, item 17); version 10: holes lean
# towards the background at their row ends and read the nearest background row above and below
# unless it is mixed with the occluder (eighth round, items 18-20); version 11: a pixel ~16 %
# occluder (a soft edge) counts as mixed (shift.MIXED_FROM/MIXED_TO 0.03 .. 0.12)
SPEC = StepSpec(kind="stereo", version="11", params=StereoParams, run=run, params_for_output=params_for_output,
                output_params=("layout", "format"), main_suffixes=main_suffixes,
                clip_frame=clip_frame, inert=inert,
                summary="make a stereo pair (side-by-side, top-bottom, anaglyph, MPO, or one eye)")
