"""The ``bokeh`` step: synthetic shallow depth of field, occlusion-aware, in linear light.

The blur radius of a pixel grows with its distance from the focus plane measured in nearness
(inverse depth), which is what a thin lens does: the circle of confusion is proportional to
``|1/z - 1/z_focus|``. The sign says in front of (positive) or behind the focus plane.

Rendering is layered (after Kraus & Strengert, "Depth-of-Field Rendering by Pyramidal Image
Processing", Eurographics 2007): the signed radius is cut into slices; each slice's pixels are
blurred with the slice's aperture kernel (disc or polygon), premultiplied by their coverage, and
the slices are composited from far to near with their blurred coverage as alpha. So a sharp
foreground never bleeds into a blurred background (background slices never see foreground
pixels; what the foreground hid is filled from the background around it), and a blurred
foreground softly covers the sharp subject behind it (its coverage spreads with its blur).
Large radii are blurred at reduced resolution (the result is smooth anyway), which keeps a
12 MP photo in seconds on a CPU.
"""

from __future__ import annotations

import math
from typing import Literal

import cv2
import numpy as np
from pydantic import Field, model_validator

from .lib.depthmap import DepthMap, normalized_nearness
from .lib.errors import ParameterError
from .lib.images import write_image
from .lib.step import Output, StepContext, StepParams, StepSpec
from .lib.viewsynth import push_pull_fill


class BokehParams(StepParams):
    focus_x: float | None = Field(None, ge=0, description="focus point x: a share of the width (0..1) or pixels (>1)")
    focus_y: float | None = Field(None, ge=0, description="focus point y: a share of the height (0..1) or pixels (>1)")
    focus_depth: float | None = Field(None, ge=0, le=1, description="focus on this nearness (0 = farthest, 1 = nearest) instead of a point")
    focus: Literal["point", "depth", "nearest"] | None = Field(None, description="focus by point, depth, or on the nearest subject (default: point if given, else depth if given, else nearest)")
    aperture: float = Field(1.5, ge=0, le=10, description="largest blur radius, percent of the image width (bigger = shallower focus)")
    f_number: float | None = Field(None, ge=0.28, description="alternatively a lens-like f-number: aperture = 2.8 / f_number percent")
    shape: Literal["disc", "polygon"] = Field("disc", description="aperture shape")
    blades: int = Field(6, ge=3, le=12, description="polygon: number of blades")
    rotation: float = Field(0.0, description="polygon: rotation, degrees")
    highlight_boost: float = Field(1.0, ge=0, le=8, description="brighten highlights before blurring (1 = off; 2-4 makes bright bokeh balls)")
    highlight_threshold: float = Field(0.85, ge=0, le=1, description="linear luminance above which highlights are boosted")
    focus_band: float = Field(0.03, ge=0, le=0.5, description="nearness range around the focus plane kept fully sharp")
    quality: int = Field(95, ge=50, le=100, description="JPEG quality when writing .jpg")
    format: Literal["png", "jpg"] = Field("png", description="image format")

    @model_validator(mode="after")
    def _one_focus_one_aperture(self):
        # A setting that would be silently ignored is refused: whoever wrote it meant something.
        if (self.focus_x is None) != (self.focus_y is None):
            missing = "focus_y" if self.focus_y is None else "focus_x"
            raise ParameterError(f"a focus point needs focus_x and focus_y; {missing} is missing", parameter=missing)
        point, depth = self.focus_x is not None, self.focus_depth is not None
        if point and depth:
            raise ParameterError("give a focus point (focus_x, focus_y) or focus_depth, not both",
                                 parameter="focus_depth")
        if self.focus == "nearest" and (point or depth):
            raise ParameterError(f"focus nearest finds the subject itself; it would ignore "
                                 f"{'focus_x/focus_y' if point else 'focus_depth'}", parameter="focus")
        if self.focus == "point" and not point:
            raise ParameterError("focus by point needs focus_x and focus_y", parameter="focus_x")
        if self.focus == "depth" and not depth:
            raise ParameterError("focus by depth needs focus_depth", parameter="focus_depth")
        # (aperture at its default: a re-validated dump (every field set) of f_number alone)
        if self.f_number is not None and "aperture" in self.model_fields_set and \
                self.aperture != type(self).model_fields["aperture"].default:
            raise ParameterError("give aperture or f_number, not both (f_number sets aperture = 2.8 / f_number)",
                                 parameter="f_number")
        return self


# -- colour -------------------------------------------------------------------------------------
_LUT = None


def srgb_to_linear(img: np.ndarray) -> np.ndarray:
    """uint8 sRGB -> float32 linear 0..1 (a lookup table)."""
    global _LUT
    if _LUT is None:
        c = np.arange(256, dtype=np.float64) / 255.0
        _LUT = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)
    return _LUT[img]


# -- geometry -------------------------------------------------------------------------------------
def aperture_kernel(radius: float, shape: str = "disc", blades: int = 6, rotation: float = 0.0) -> np.ndarray:
    """Normalised float32 kernel of the aperture with ``radius`` pixels, anti-aliased edge."""
    r = max(float(radius), 0.5)
    n = int(math.ceil(r)) + 1
    yy, xx = np.mgrid[-n:n + 1, -n:n + 1].astype(np.float32)
    if shape == "disc":
        dist = np.hypot(xx, yy)
    elif shape == "polygon":
        # distance in the polygon's own metric: the largest projection on its edge normals
        ang = np.arctan2(yy, xx) - math.radians(rotation)
        sector = 2 * math.pi / blades
        a = np.mod(ang, sector) - sector / 2
        dist = np.hypot(xx, yy) * np.cos(a) / math.cos(sector / 2)
    else:
        raise ParameterError(f"unknown aperture shape {shape!r}; disc or polygon", parameter="shape")
    k = np.clip(r + 0.5 - dist, 0.0, 1.0)
    return (k / k.sum()).astype(np.float32)


def signed_radius(nearness: np.ndarray, focus: float, max_radius: float, band: float = 0.03) -> np.ndarray:
    """Blur radius in pixels, signed: positive in front of the focus plane, negative behind.

    Proportional to the distance from the focus plane in nearness (thin-lens circle of
    confusion), minus a small in-focus ``band``, scaled so that the farthest of the extremes
    (nearness 0 or 1) gets ``max_radius``.
    """
    d = nearness - np.float32(focus)
    span = max(focus, 1.0 - focus) - band
    mag = np.maximum(np.abs(d) - np.float32(band), 0.0) / np.float32(max(span, 1e-3))
    return (np.sign(d) * mag * np.float32(max_radius)).astype(np.float32)


def focus_value(nearness: np.ndarray, mode: str, *, point: tuple[float, float] | None = None,
                depth: float | None = None) -> float:
    """The nearness to focus on: at a point (median of a small window), a given value, or the
    nearest subject (a high percentile, robust to specks)."""
    h, w = nearness.shape
    if mode == "point":
        if point is None:
            raise ParameterError("focus by point needs focus_x and focus_y", parameter="focus_x")
        x, y = point
        x = x * (w - 1) if x <= 1 else x
        y = y * (h - 1) if y <= 1 else y
        if not (0 <= x < w and 0 <= y < h):
            raise ParameterError(f"focus point ({x:.0f}, {y:.0f}) is outside the {w}x{h} image", parameter="focus_x")
        r = max(2, min(w, h) // 100)
        xi, yi = int(round(x)), int(round(y))
        win = nearness[max(0, yi - r):yi + r + 1, max(0, xi - r):xi + r + 1]
        return float(np.median(win))
    if mode == "depth":
        if depth is None:
            raise ParameterError("focus by depth needs focus_depth", parameter="focus_depth")
        return float(depth)
    if mode == "nearest":
        return float(np.percentile(nearness, 99.0))
    raise ParameterError(f"unknown focus mode {mode!r}; point, depth or nearest", parameter="focus")


def _blur(img: np.ndarray, radius: float, shape: str, blades: int, rotation: float) -> np.ndarray:
    """Aperture blur; large radii at reduced resolution (kernel at most ~7 px wide there)."""
    if radius < 0.5:
        return img
    if img.ndim == 3 and img.shape[2] > 4:  # OpenCV's resize takes at most 4 channels (a photo's alpha makes 5)
        return np.dstack([_blur(np.ascontiguousarray(img[..., :4]), radius, shape, blades, rotation),
                          _blur(np.ascontiguousarray(img[..., 4:]), radius, shape, blades, rotation)])
    h, w = img.shape[:2]
    if radius <= 2.0:  # tiny: a Gaussian of the same spread is indistinguishable and separable
        return cv2.GaussianBlur(img, (0, 0), max(radius * 0.6, 0.3), borderType=cv2.BORDER_REFLECT)
    f = 1
    while radius / f > 3.0:
        f *= 2
    small = img if f == 1 else cv2.resize(img, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
    k = aperture_kernel(radius / f, shape, blades, rotation)
    out = cv2.filter2D(small, -1, k, borderType=cv2.BORDER_REFLECT)
    return out if f == 1 else cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR)


def _srgb_lut_inverse(levels: int = 4096) -> np.ndarray:
    c = (np.arange(levels, dtype=np.float64) + 0.5) / levels
    srgb = np.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1 / 2.4) - 0.055)
    return np.clip(srgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


_INV = None


def linear_to_srgb_fast(lin: np.ndarray) -> np.ndarray:
    """float32 linear 0..1 -> uint8 sRGB through a 4096-entry table (exact to the 8-bit step)."""
    global _INV
    if _INV is None:
        _INV = _srgb_lut_inverse()
    q = np.clip(lin * np.float32(4096.0), 0, 4095).astype(np.int32)
    return _INV[q]


def _group(lin_s: np.ndarray, cov: np.ndarray, rad_s: np.ndarray, f0: int, step: float,
           shape: str, blades: int, rotation: float) -> tuple[np.ndarray, np.ndarray]:
    """Gather-blur one depth group (behind or in front of focus) at reduced resolution:
    slices of equal radius, each blurred with its aperture, summed premultiplied.
    ``lin_s``: premultiplied colour, ``cov``: coverage, ``rad_s``: radius (full-res px)."""
    tot = np.zeros_like(lin_s)
    alpha = np.zeros_like(cov)
    idx = np.round(rad_s / step).astype(np.int32)
    idx[cov <= 0] = -1
    for s in np.unique(idx):
        if s < 0:
            continue
        m = (idx == s).astype(np.float32)
        r = s * step / f0  # in reduced pixels
        rgba = np.dstack([lin_s * m[..., None], cov * m])  # colour channels (3, or 4 with a photo's alpha), coverage
        bl = _blur(rgba, r, shape, blades, rotation)
        tot += bl[..., :-1]
        alpha += bl[..., -1]
    return tot, alpha


def render_bokeh(image: np.ndarray, nearness: np.ndarray, *, focus: float, max_radius: float,
                 shape: str = "disc", blades: int = 6, rotation: float = 0.0, highlight_boost: float = 1.0,
                 highlight_threshold: float = 0.85, band: float = 0.03, step: float | None = None,
                 alpha: np.ndarray | None = None) -> np.ndarray:
    """Depth of field for ``image`` (uint8 RGB) with ``nearness`` (0 far .. 1 near, float32),
    focused at nearness ``focus``; ``max_radius`` in pixels. Returns uint8 RGB, or uint8 RGBA
    H x W x 4 when the photo's ``alpha`` (uint8 H x W, 255 = opaque) is given.

    With ``alpha``, the colour is blurred premultiplied by it (linear colour x alpha) and the
    alpha is blurred with it as a fourth channel of the same slices, then the colour is divided
    by the blurred alpha: a transparent pixel's stored colour (often black or leftovers of an
    editor) weighs nothing, so it never bleeds into the product's edge, and an out-of-focus
    silhouette gets the soft, half-transparent edge a real defocused object has (Porter & Duff,
    "Compositing Digital Images", 1984: filtering is only correct on premultiplied colour).

    Three groups (the near-field / far-field split of real-time DoF): pixels behind the focus
    plane are blurred among themselves only (so nothing in focus or in front bleeds into
    them; what they hid is filled from around it), the in-focus pixels are kept sharp on top,
    and the pixels in front are blurred among themselves and laid over the rest with their
    spread coverage as alpha. Within a group, slices of equal radius are blurred with the
    aperture kernel and summed (normalised gather), at reduced resolution for large images.
    """
    if image.shape[:2] != nearness.shape:
        raise ParameterError("depth and image sizes differ", parameter="depth")
    if alpha is not None and alpha.shape != image.shape[:2]:
        raise ParameterError("alpha and image sizes differ", parameter="alpha")
    if max_radius < 0.5:
        return image.copy() if alpha is None else np.dstack([image, alpha])
    h, w = image.shape[:2]
    lin = srgb_to_linear(image)
    if highlight_boost != 1.0:
        lum = lin @ np.array([0.2126, 0.7152, 0.0722], np.float32)
        gain = 1.0 + (highlight_boost - 1.0) * np.clip((lum - highlight_threshold) / max(1 - highlight_threshold, 1e-3), 0, 1)
        lin *= gain[..., None]
    if alpha is not None:  # premultiplied colour + alpha: four channels through the same slices
        a01 = alpha.astype(np.float32) * np.float32(1.0 / 255.0)
        lin = np.dstack([lin * a01[..., None], a01])
    rad = signed_radius(nearness, focus, max_radius, band)
    f0 = 1
    while (w / f0) * (h / f0) > 1_500_000:
        f0 *= 2
    sharp_r = max(1.0, 0.5 * f0)
    step = step or max(1.0, max_radius / 10.0, 0.75 * f0)
    small = (max(1, w // f0), max(1, h // f0))

    def down(a):
        return a if f0 == 1 else cv2.resize(a, small, interpolation=cv2.INTER_AREA)

    def up(a):
        return a if f0 == 1 else cv2.resize(a, (w, h), interpolation=cv2.INTER_LINEAR)

    out = None
    layers = {}
    for name, mask in (("behind", rad <= -sharp_r), ("front", rad >= sharp_r)):
        if not mask.any():
            continue
        mf = mask.astype(np.float32)
        cov = down(mf)
        col = down(lin * mf[..., None])
        rs = down(np.abs(rad) * mf) / np.maximum(cov, 1e-6)
        layers[name] = _group(col, cov, rs, f0, step, shape, blades, rotation)
    # Backdrop: the blurred far group, normalised and filled where it saw nothing (behind the
    # subject and the near group); without a far group, the in-focus pixels filled the same way.
    # Only in-focus pixels are copied over it: under the near group lies what it hides.
    sharp = np.abs(rad) < sharp_r
    if "behind" in layers:
        tot, a = layers["behind"]
    else:
        mf = sharp.astype(np.float32)
        a = down(mf)
        tot = down(lin * mf[..., None])
    col = tot / np.maximum(a, 1e-6)[..., None]
    if (a < 0.999).any():
        col = push_pull_fill(col, np.clip(a, 0.0, 1.0))
    out = up(col)
    np.copyto(out, lin, where=sharp[..., None])
    if "front" in layers:
        # under the near group lies what it hides: continue the backdrop and the in-focus
        # pixels beneath it, so that its soft edges show the surface next to them
        front = rad >= sharp_r
        known = down((~front).astype(np.float32))
        under = push_pull_fill(down(out * (~front)[..., None]) / np.maximum(known, 1e-6)[..., None],
                               np.clip(known, 0.0, 1.0))
        np.copyto(out, up(under), where=front[..., None])
        # "over" in premultiplied colour: colour and alpha are resampled together. (Resampling
        # the normalised colour instead mixes the undefined colour (0) of cells the near group
        # does not reach into the pixels next to it: a dark seam where the in-focus region
        # meets a slightly nearer one, whose unblurred slice leaves its coverage a hard edge.)
        tot, a = layers["front"]
        alpha = np.clip(a, 0.0, 1.0)
        pre = tot * (alpha / np.maximum(a, 1e-6))[..., None]
        out *= 1.0 - up(alpha)[..., None]
        out += up(pre)
    if lin.shape[2] == 4:  # un-premultiply; a pixel left with no alpha has no colour to show
        a_out = np.clip(out[..., 3], 0.0, 1.0)
        col = linear_to_srgb_fast(out[..., :3] / np.maximum(a_out, 1e-6)[..., None])
        a8 = np.round(a_out * 255.0).astype(np.uint8)
        col[a8 == 0] = 0
        return np.dstack([col, a8])
    return linear_to_srgb_fast(out)


def run(ctx: StepContext, p: BokehParams) -> dict[str, Output]:
    image, alpha = ctx.image_alpha()
    if alpha is not None and p.format == "jpg":  # JPEG has no alpha: over the stated background
        from .lib.images import over_background

        image, alpha = over_background(image, alpha), None
    dm: DepthMap = ctx.depth()
    n = normalized_nearness(dm, robust=0.002)
    if n.shape != image.shape[:2]:
        n = cv2.resize(n, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    mode = p.focus or ("point" if p.focus_x is not None and p.focus_y is not None
                       else "depth" if p.focus_depth is not None else "nearest")
    pt = (p.focus_x, p.focus_y) if p.focus_x is not None and p.focus_y is not None else None
    f = focus_value(n, mode, point=pt, depth=p.focus_depth)
    aperture = 2.8 / p.f_number if p.f_number else p.aperture
    max_r = aperture / 100.0 * image.shape[1]
    out = render_bokeh(image, n, focus=f, max_radius=max_r, shape=p.shape, blades=p.blades, rotation=p.rotation,
                       highlight_boost=p.highlight_boost, highlight_threshold=p.highlight_threshold, band=p.focus_band,
                       alpha=alpha)
    ext = ".jpg" if p.format == "jpg" else ".png"
    path = write_image(ctx.out("main", ext), out, quality=p.quality)
    meta = {"focus_nearness": round(f, 4), "focus_mode": mode, "max_radius_px": round(max_r, 2)}
    return {"main": Output(path, "image", meta), "image": Output(path, "image", meta, publish=False)}


FOCUS_HISTORY = 0.85  # clips: weight of the previous frame's focus (the focus pulls smoothly)


def clip_warm(rgb: np.ndarray, near: np.ndarray, p: BokehParams, state: dict) -> float:
    """The focus nearness of this frame, pulled from the previous one (``FOCUS_HISTORY``) and
    kept in ``state``; a scene cut (``state["cut"]``) starts the pull over. Called on the
    warm-up frames before a segment too, so that the focus continues across the boundary."""
    mode = p.focus or ("point" if p.focus_x is not None and p.focus_y is not None
                       else "depth" if p.focus_depth is not None else "nearest")
    pt = (p.focus_x, p.focus_y) if p.focus_x is not None and p.focus_y is not None else None
    f = focus_value(near, mode, point=pt, depth=p.focus_depth)
    prev = None if state.get("cut") else state.get("focus")
    f = f if prev is None else FOCUS_HISTORY * prev + (1 - FOCUS_HISTORY) * f
    state["focus"] = f
    return f


def clip_frame(rgb: np.ndarray, near: np.ndarray, p: BokehParams, state: dict) -> dict[str, np.ndarray]:
    """One frame of a portrait-mode clip (``depthcraft.tasks.clips``): the focus is found on
    every frame (on the subject: the nearest one by default, or at the focus point) and follows
    it smoothly (an exponential filter, ``FOCUS_HISTORY``), like a camera's focus pull; the
    nearness is the stable one (no per-frame normalisation)."""
    f = clip_warm(rgb, near, p, state)
    aperture = 2.8 / p.f_number if p.f_number else p.aperture
    out = render_bokeh(rgb, near, focus=f, max_radius=aperture / 100.0 * rgb.shape[1], shape=p.shape, blades=p.blades,
                       rotation=p.rotation, highlight_boost=p.highlight_boost,
                       highlight_threshold=p.highlight_threshold, band=p.focus_band)
    return {"main": out}


def params_for_output(path) -> dict:
    from .lib.images import image_format_for_suffix

    return image_format_for_suffix(path)


def main_suffixes(p: BokehParams) -> tuple[str, ...]:
    from .lib.outputs import IMAGE_SUFFIXES

    return IMAGE_SUFFIXES[p.format]


def inert(p: BokehParams, given: set) -> list:
    """Parameters with no effect given the others (refused when written: :mod:`.lib.inert`)."""
    from .lib.inert import Inert

    out = []
    if p.shape == "disc":
        out.append(Inert("blades", "shape", "blades shape the polygon aperture only", hint="leave out {blades}, or set {shape} polygon"))
        out.append(Inert("rotation", "shape", "rotation turns the polygon aperture only", hint="leave out {rotation}, or set {shape} polygon"))
    if p.highlight_boost == 1.0:
        out.append(Inert("highlight_threshold", "highlight_boost", "highlights are not boosted at highlight_boost 1",
                         hint="leave out {highlight_threshold}, or set {highlight_boost} above 1"))
    if p.f_number is not None:
        out.append(Inert("aperture", "f_number", "give aperture or f_number, not both (f_number sets aperture = 2.8 / f_number)"))
    if p.format != "jpg":
        out.append(Inert("quality", "format", "quality is JPEG's (format jpg)",
                         hint="leave out {quality}, or write a JPEG ({format} jpg)"))
    return out


SPEC = StepSpec(kind="bokeh", version="3", params=BokehParams, run=run, params_for_output=params_for_output,
                output_params=("format",), main_suffixes=main_suffixes,
                clip_frame=clip_frame, clip_warm=clip_warm, inert=inert,
                summary="synthetic shallow depth of field, occlusion-aware (focus point, depth or nearest subject)")
