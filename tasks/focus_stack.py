"""Focus stacking: from a bracket of photos focused at different distances, an all-in-focus
image and a depth-from-focus map.

Method (pure functions on arrays; images uint8 RGB HxWx3, work in float32 gray 0..1):

1. Optional alignment of every frame to the middle one (ECC, affine: Evangelidis & Psarakis
   2008), since refocusing changes magnification slightly ("focus breathing").
2. Focus measure per frame: the sum-modified Laplacian of Nayar & Nakagawa 1994 ("Shape from
   focus", IEEE PAMI 16(8)), ``|2I - I(x-s) - I(x+s)| + |2I - I(y-s) - I(y+s)|``, averaged over a
   Gaussian window.
3. Depth from focus: the frame of largest focus per pixel, refined between frames by fitting a
   Gaussian through the three measures around the peak (Nayar & Nakagawa's interpolation), then
   smoothed with a confidence-weighted guided filter (He, Sun & Tang 2013, "Guided image
   filtering", IEEE PAMI 35(6)) so that textureless areas take the depth of their surroundings.
4. All-in-focus: per-frame weights = "this frame is the sharpest here", refined by the guided
   filter with the photo as guide (Li, Kang & Hu 2013, "Image fusion with guided filtering",
   IEEE TIP 22(7)), normalised, and the frames blended.

Frame order: ``near_first`` (the first photo is focused nearest, the usual bracket) or
``far_first``. The depth map is ``relative_inverse`` (1 = nearest focus, 0 = farthest): focus
distance is not linear in the frame index, so only the order is meaningful.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from .lib.depthmap import DepthMap
from .lib.errors import InputError, ParameterError


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """float32 luma 0..1 of a uint8 RGB image."""
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0


def focus_measure(gray: np.ndarray, *, window: float = 3.0, step: int = 1) -> np.ndarray:
    """Sum-modified Laplacian (Nayar & Nakagawa 1994) averaged over a Gaussian of sigma ``window`` px.

    ``gray``: float32 HxW. Larger = sharper. ``step``: the Laplacian's spacing in pixels.
    """
    g = gray.astype(np.float32)
    s = int(step)
    kx = np.zeros((1, 2 * s + 1), np.float32)
    kx[0, 0], kx[0, s], kx[0, -1] = -1, 2, -1
    ml = np.abs(cv2.filter2D(g, -1, kx, borderType=cv2.BORDER_REFLECT)) + \
        np.abs(cv2.filter2D(g, -1, kx.T, borderType=cv2.BORDER_REFLECT))
    return cv2.GaussianBlur(ml, (0, 0), window, borderType=cv2.BORDER_REFLECT) if window > 0 else ml


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Gray-guide guided filter (He, Sun & Tang 2013) with box windows of side ``2 radius + 1``.

    ``guide`` and ``src``: float32 HxW; edges of ``guide`` are kept in the output.
    """
    def box(a):
        return cv2.boxFilter(a, -1, (2 * radius + 1, 2 * radius + 1), borderType=cv2.BORDER_REFLECT)

    mi, ms = box(guide), box(src)
    var = box(guide * guide) - mi * mi
    a = (box(guide * src) - mi * ms) / (var + eps)
    b = ms - a * mi
    return box(a) * guide + box(b)


def align_to(ref_gray: np.ndarray, gray: np.ndarray, *, max_side: int = 800) -> np.ndarray | None:
    """Affine 2x3 warp mapping ``gray`` onto ``ref_gray`` (ECC on a downscaled copy), or None when
    it does not converge or does not improve the match."""
    h, w = ref_gray.shape
    f = min(1.0, max_side / max(h, w))
    small = (max(8, int(w * f)), max(8, int(h * f)))
    a, b = cv2.resize(ref_gray, small, interpolation=cv2.INTER_AREA), cv2.resize(gray, small, interpolation=cv2.INTER_AREA)
    warp = np.eye(2, 3, dtype=np.float32)
    try:
        _, warp = cv2.findTransformECC(a, b, warp, cv2.MOTION_AFFINE,
                                       (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-5), None, 5)
    except cv2.error:
        return None
    warp[:, 2] /= f
    moved = cv2.warpAffine(gray, warp, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
    blur = lambda x: cv2.GaussianBlur(x, (0, 0), 2)  # noqa: E731 - compare structure, not focus
    before, after = np.mean((blur(gray) - blur(ref_gray)) ** 2), np.mean((blur(moved) - blur(ref_gray)) ** 2)
    return warp if after < before * 0.98 else None


def align_frames(frames: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """Every frame warped onto the middle one (uint8 RGB in, out); the warps (None = unchanged)."""
    ref = len(frames) // 2
    ref_gray = to_gray(frames[ref])
    out, warps = [], []
    for i, fr in enumerate(frames):
        warp = None if i == ref else align_to(ref_gray, to_gray(fr))
        warps.append(warp)
        out.append(fr if warp is None else cv2.warpAffine(fr, warp, (fr.shape[1], fr.shape[0]),
                                                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                                          borderMode=cv2.BORDER_REFLECT))
    return out, warps


def peak_index(measures: np.ndarray) -> np.ndarray:
    """Sub-frame index of the focus peak per pixel (float32 HxW), ``measures`` K x H x W.

    Gaussian interpolation through the peak and its neighbours (log-parabola), clamped to
    half a frame; at the ends of the stack the integer index is kept.
    """
    k = measures.shape[0]
    i = np.argmax(measures, axis=0)
    if k < 3:
        return i.astype(np.float32)
    lm = np.log(np.maximum(measures, 1e-12))
    ic = np.clip(i, 1, k - 2)
    lo, mid, hi = (np.take_along_axis(lm, (ic + d)[None], 0)[0] for d in (-1, 0, 1))
    den = lo - 2 * mid + hi
    with np.errstate(divide="ignore", invalid="ignore"):
        off = np.where(den < -1e-9, 0.5 * (lo - hi) / den, 0.0)
    off = np.clip(off, -0.5, 0.5)
    inner = (i > 0) & (i < k - 1)
    return np.where(inner, i + off, i).astype(np.float32)


@dataclass
class FocusStack:
    """Result of :func:`stack_frames`: ``image`` uint8 RGB, ``depth`` (relative_inverse, 1 = nearest
    focus), ``index`` float32 (sub-frame index of best focus, smoothed), ``confidence`` float32 0..1."""

    image: np.ndarray
    depth: DepthMap
    index: np.ndarray
    confidence: np.ndarray


def stack_frames(frames: Sequence[np.ndarray], *, order: str = "near_first", align: bool = True,
                 window: float | None = None, smooth: float = 0.02, eps: float = 1e-3) -> FocusStack:
    """Fuse a focus bracket (uint8 RGB frames of one size) into an all-in-focus image and depth.

    ``window``: focus-measure window sigma in px (default 0.4 % of the longer side, at least 2).
    ``smooth``: guided-filter radius for the depth map as a share of the longer side.
    """
    if len(frames) < 2:
        raise ParameterError(f"focus stacking needs at least 2 photos, got {len(frames)}", parameter="images")
    if order not in ("near_first", "far_first"):
        raise ParameterError(f"order must be near_first or far_first, got {order!r}", parameter="order")
    shape = frames[0].shape
    if any(f.shape != shape for f in frames):
        raise InputError("the photos of a focus bracket must all have the same size",
                         hint="shoot the bracket without changing resolution or crop")
    if align:
        frames, _ = align_frames(frames)
    h, w = shape[:2]
    side = max(h, w)
    win = window if window is not None else max(2.0, 0.004 * side)
    grays = [to_gray(f) for f in frames]
    fm = np.stack([focus_measure(g, window=win) for g in grays])
    k = fm.shape[0]
    guide = np.mean(grays, axis=0).astype(np.float32)

    # all-in-focus: hard "sharpest frame" weights, refined along the photo's edges (Li et al. 2013)
    best = np.argmax(fm, axis=0)
    r_fuse = max(2, int(round(0.004 * side)))
    weights = np.stack([np.clip(guided_filter(guide, (best == i).astype(np.float32), r_fuse, 1e-4), 0, None)
                        for i in range(k)])
    weights /= np.maximum(weights.sum(0, keepdims=True), 1e-6)
    fused = np.zeros(shape, np.float32)
    for wgt, fr in zip(weights, frames):
        fused += wgt[..., None] * fr.astype(np.float32)
    image = np.clip(fused + 0.5, 0, 255).astype(np.uint8)

    # depth from focus: peak index, smoothed where the focus curve says little (flat areas)
    idx = peak_index(fm)
    conf = (fm.max(0) - fm.mean(0)) / (fm.max(0) + 1e-6)
    conf = conf * (fm.max(0) / (np.percentile(fm.max(0), 95) + 1e-9))
    conf = np.clip(conf, 0, 1).astype(np.float32)
    r = max(2, int(round(smooth * side)))
    num = guided_filter(guide, conf * idx, r, eps)
    den = guided_filter(guide, conf, r, eps)
    idx_s = np.where(den > 1e-4, num / np.maximum(den, 1e-4), idx)
    idx_s = np.clip(idx_s, 0, k - 1).astype(np.float32)
    near = 1.0 - idx_s / (k - 1) if order == "near_first" else idx_s / (k - 1)
    depth = DepthMap(near.astype(np.float32), kind="relative_inverse", source="focus_stack",
                     meta={"frames": k, "order": order})
    return FocusStack(image=image, depth=depth, index=idx_s, confidence=conf)


def focus_stack(paths: Sequence[str | os.PathLike], *, order: str = "near_first", align: bool = True,
                max_pixels: int | None = None, downscale: bool = False) -> tuple[np.ndarray, DepthMap]:
    """One shot: photo files of a focus bracket -> (all-in-focus uint8 RGB, depth-from-focus DepthMap).

    Photos are taken in the order given (see ``order``). The CLI's ``focus-stack`` command calls this.
    """
    from .lib.images import read_image

    frames = [read_image(p, max_pixels=max_pixels, downscale=downscale).rgb for p in paths]
    if frames and any(f.shape != frames[0].shape for f in frames):
        sizes = ", ".join(f"{os.fspath(p)}: {f.shape[1]}x{f.shape[0]}" for p, f in zip(paths, frames))
        raise InputError(f"the photos of a focus bracket must all have the same size ({sizes})")
    res = stack_frames(frames, order=order, align=align)
    return res.image, res.depth
