"""The view-synthesis engine: a photo seen from a moved camera, rendered from its depth.

Stereo views and parallax frames are the same problem, so both go through this module:

1. **Background layer** (computed once per photo). Pixels of near objects that hide background
   a moved camera could reveal (a band beside each depth jump, as wide as the jump) are
   inpainted from background pixels only, with a push-pull pyramid (Gortler et al., "The
   Lumigraph", SIGGRAPH 1996). This is a two-layer "layered depth image" (Shade et al., SIGGRAPH
   1998), the same idea as 3D photo inpainting (Shih et al., CVPR 2020) without the network:
   disocclusions are filled with background that moves with the background, never with
   stretched or smeared foreground, never black.
2. **Visibility** in the new view. Horizontal shifts (stereo) use an exact row rasteriser:
   each source pixel is a footprint spanning half-way to its neighbours, joined to them where
   the surface is continuous (so stretched surfaces have no cracks), splatted in painter's order
   (for the right view of a rectified pair, of two pixels that land on the same spot the one
   further right is nearer: McMillan, "An image-based approach to 3D computer graphics", 1997),
   at sub-pixel precision. Free camera moves use a z-buffered forward splat of inverse depth at
   half resolution, refined per pixel (:class:`ParallaxRenderer`).
3. **Resampling** by backward warping (``cv2.remap``, bicubic for stereo): each output pixel
   reads the photo, or the background layer where it is a disocclusion. The near side of every
   depth jump is extended by a pixel (``near_extend``), the peers' "edge dilation" that keeps
   the anti-aliased edge pixels on the near object; ``edge_dilation`` dilates estimated depth
   further.

Conventions: images are ``uint8`` RGB ``H x W x 3``; disparity is ``float32`` pixels, larger =
nearer, and a left-view pixel at ``x`` appears in the right view at ``x - d``. The ``filled``
mask of every result marks the pixels that were invented (disocclusions), for users who inpaint
elsewhere.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from .errors import ParameterError

INTERP = {"nearest": cv2.INTER_NEAREST, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC,
          "lanczos": cv2.INTER_LANCZOS4}

# Defaults measured on the Middlebury yardstick (one set for every scene, see docs/rendering.md).
JUMP_PX = 1.5  # a disparity step above this between neighbours is a depth edge, not a slope
NEAR_EXTEND = 1.0  # px the near side of an edge extends over the gap (anti-aliased edge pixels)
FAR_EXTEND = 0.25  # px the far side extends (more would stretch the background edge pixel)
HIDDEN_SPREAD = 2.0  # background hidden behind an edge: this many times the jump...
HIDDEN_MARGIN = 16.0  # ...plus this many pixels is inpainted in the background layer
AUTO_CUBIC_PIXELS = 4_000_000  # interpolation "auto": bicubic up to this size, bilinear above


def threads() -> int:
    """Worker threads for row bands (numpy and OpenCV release the GIL on large arrays)."""
    try:
        return max(1, int(os.environ.get("DEPTHCRAFT_THREADS", "0")) or (os.cpu_count() or 1))
    except ValueError:
        return os.cpu_count() or 1


def by_bands(fn, h: int, *, rows: int = 16, workers: int | None = None) -> list:
    """``fn(slice)`` over horizontal bands of ``h`` rows, in parallel; results in band order.
    Row-local work in small bands keeps numpy's temporaries in cache: on a 12 MP image,
    16-row bands run about ten times faster than whole-image array operations."""
    bands = [slice(y, min(y + rows, h)) for y in range(0, h, rows)]
    n = min(threads() if workers is None else workers, len(bands))
    if n <= 1:
        return [fn(b) for b in bands]
    with ThreadPoolExecutor(max_workers=n) as ex:
        return list(ex.map(fn, bands))


# -- inpainting ---------------------------------------------------------------------------------
def push_pull_fill(img: np.ndarray, weight: np.ndarray, *, min_size: int = 4) -> np.ndarray:
    """Fill the pixels of ``img`` where ``weight`` is 0 from those where it is 1.

    ``img``: float32 ``H x W x C`` (or ``H x W``); ``weight``: float32 ``H x W`` in 0..1. Push-pull
    (Gortler et al. 1996): a pyramid of weighted averages is built down to a few pixels, then
    each level's gaps are filled from the level below. Smooth, fast (a few resizes), and it only
    ever averages pixels of weight > 0. Returns float32 of ``img``'s shape.
    """
    squeeze = img.ndim == 2
    c = img[..., None] if squeeze else img
    w = weight.astype(np.float32, copy=False)
    levels = []
    while min(w.shape) > min_size:
        levels.append((c, w))
        h2, w2 = (w.shape[0] + 1) // 2, (w.shape[1] + 1) // 2
        num = cv2.resize(c * w[..., None], (w2, h2), interpolation=cv2.INTER_AREA)
        den = cv2.resize(w, (w2, h2), interpolation=cv2.INTER_AREA)
        if num.ndim == 2:
            num = num[..., None]
        c = num / np.maximum(den, 1e-8)[..., None]
        w = np.minimum(den * 4.0, 1.0)
    if (w <= 0).any():  # nothing known at all in some coarse cell: use the mean of what is known
        tot = float(w.sum())
        mean = (c * w[..., None]).sum((0, 1)) / tot if tot > 0 else np.zeros(c.shape[2], np.float32)
        c = np.where((w > 0)[..., None], c, mean.astype(np.float32))
    for cf, wf in reversed(levels):
        up = cv2.resize(c, (wf.shape[1], wf.shape[0]), interpolation=cv2.INTER_LINEAR)
        if up.ndim == 2:
            up = up[..., None]
        wf3 = wf[..., None]
        c = cf * wf3 + up * (1.0 - wf3)
    return c[..., 0] if squeeze else c


# -- the background layer ----------------------------------------------------------------------
def _hidden_band_right(d: np.ndarray, tau: float, spread: float, margin: float) -> np.ndarray:
    """Near pixels left of a drop in disparity, within ``spread * jump + margin`` of it.

    A drop J = d(x) - d(x+1) > tau opens a gap of J pixels to the right of x in the right view;
    what fills it is background hidden behind the J pixels left of the drop. ``L(x) = max over
    x' >= x of (reach(x') - (x' - x))`` is a running maximum along the reversed row.
    """
    h, w = d.shape
    reach = np.full((h, w), -1e9, np.float32)
    jump = d[:, :-1] - d[:, 1:]
    reach[:, :-1] = np.where(jump > tau, spread * jump + margin, -1e9)
    xs = np.arange(w, dtype=np.float32)[None, :]
    v = reach - xs
    run = np.maximum.accumulate(v[:, ::-1], axis=1)[:, ::-1]
    return (run + xs) > 0


def hidden_mask(disparity: np.ndarray, *, sides: str = "right", tau: float = JUMP_PX,
                spread: float = HIDDEN_SPREAD, margin: float = HIDDEN_MARGIN) -> np.ndarray:
    """Pixels (bool ``H x W``) that hide background a moved camera may reveal.

    ``sides``: ``right`` (revealed by a right-eye view: the right side of near objects),
    ``left``, ``both`` (the two stereo eyes), or ``all`` (any direction, for parallax:
    ``disparity`` is then the largest parallax in pixels each pixel may get).
    """
    d = np.asarray(disparity, np.float32)
    if sides in ("right", "left", "both"):
        def band(sl):
            db = d[sl]
            m = np.zeros(db.shape, bool)
            if sides != "left":
                m |= _hidden_band_right(db, tau, spread, margin)
            if sides != "right":
                m |= _hidden_band_right(np.ascontiguousarray(db[:, ::-1]), tau, spread, margin)[:, ::-1]
            return m
        return np.concatenate(by_bands(band, d.shape[0]), 0)
    if sides != "all":
        raise ParameterError(f"unknown side {sides!r}; right, left, both or all", parameter="sides")
    # 2-D: the largest drop to a 4-neighbour, spread as a set of dilations of doubling radius.
    low = cv2.erode(d, cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3)), borderType=cv2.BORDER_REPLICATE)
    jump = d - low  # the largest drop to a 4-neighbour
    out = np.zeros(d.shape, bool)
    r = 2.0
    top = float(jump.max()) if jump.size else 0.0
    while True:
        edges = (jump > max(tau, r / spread)).astype(np.uint8)
        if not edges.any():
            break
        rad = int(np.ceil(r + margin))
        # square kernels: OpenCV runs them separably, fast at any radius
        k = np.ones((2 * rad + 1, 2 * rad + 1), np.uint8)
        band = cv2.dilate(edges, k).astype(bool)
        out |= band & (d - cv2.erode(d, k) > tau)  # the near side of the edge only
        if r / spread > top:
            break
        r *= 2.0
    return out


@dataclass
class Layers:
    """The photo and its background layer, stacked in one array so that a single ``cv2.remap``
    reads either: rows ``[0, h)`` are the photo, rows ``[offset, offset + h)`` the background.
    ``stack`` has 3 channels (RGB) or 4 (RGB and an unused 255: see :func:`make_layers`)."""

    stack: np.ndarray
    h: int
    offset: int

    @property
    def front(self) -> np.ndarray:
        return self.stack[: self.h, :, :3]

    @property
    def back(self) -> np.ndarray:
        return self.stack[self.offset: self.offset + self.h, :, :3]


def rgb(img: np.ndarray) -> np.ndarray:
    """RGB of a 3- or 4-channel uint8 image (the 4th channel of a 4-channel stack is padding)."""
    return cv2.cvtColor(img, cv2.COLOR_RGBA2RGB) if img.shape[2] == 4 else img


def make_layers(image: np.ndarray, hidden: np.ndarray | None, *, channels: int = 3) -> Layers:
    """Stack ``image`` over its background layer: the ``hidden`` pixels (see
    :func:`hidden_mask`) inpainted from the others by push-pull (computed from half resolution
    up: the fill is smooth anyway).

    ``channels=4`` pads each pixel to RGBA: OpenCV 5's bilinear ``remap`` has a vector path for
    4 channels that runs 2-3x faster than for 3 (measured: 12 MP 98 -> 31 ms CPU, 1080p 14 -> 7 ms);
    its bicubic path is the other way round, so 3 channels stay the default there."""
    src = np.asarray(image)
    h, w = src.shape[:2]
    if channels not in (3, 4):
        raise ParameterError("layers have 3 or 4 channels", parameter="channels")
    img = cv2.cvtColor(src, cv2.COLOR_RGB2RGBA) if channels == 4 else src
    pad = 2  # rows between the layers so that interpolation never mixes them
    stack = np.empty((2 * h + 2 * pad, w, channels), np.uint8)
    stack[:h] = img
    stack[h:h + pad] = img[-1]
    back = stack[h + 2 * pad:]
    back[:] = img
    stack[h + pad:h + 2 * pad] = img[0]
    if hidden is not None and hidden.any():
        # Weighted average of the known pixels at a reduced size (the fill is smooth anyway:
        # half size, or less for photos over ~4 MP), then push-pull and upsample into the holes.
        f = 2
        while (w / f) * (h / f) > 1_000_000:
            f *= 2
        size = (max(1, -(-w // f)), max(1, -(-h // f)))
        known = np.logical_not(hidden).view(np.uint8) * np.uint8(255)
        masked = cv2.bitwise_and(src, src, mask=known)
        num = cv2.resize(masked, size, interpolation=cv2.INTER_AREA).astype(np.float32)
        den = cv2.resize(known, size, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        del masked
        small = push_pull_fill(num / np.maximum(den, 1e-8)[..., None], np.minimum(den * (f * f), 1.0))
        up = cv2.resize(np.clip(small + 0.5, 0, 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_LINEAR)
        if channels == 4:
            up = cv2.cvtColor(up, cv2.COLOR_RGB2RGBA)
        cv2.copyTo(up, hidden.view(np.uint8), back)
    return Layers(stack, h, h + 2 * pad)


def background_layer(image: np.ndarray, hidden: np.ndarray) -> np.ndarray:
    """The photo with the ``hidden`` pixels replaced by inpainted background (uint8 RGB)."""
    return make_layers(image, hidden).back.copy()


def dilate_near(disparity: np.ndarray, radius: int, *, horizontal: bool = False) -> np.ndarray:
    """Grey dilation (max filter) of a larger-is-nearer map: near objects grow by ``radius``
    pixels, so that the blurred or anti-aliased pixels at their edges move with them.
    ``horizontal``: along rows only (stereo, where gaps open sideways); square kernels otherwise
    (OpenCV runs both separably, fast at any radius)."""
    if radius <= 0:
        return disparity
    k = np.ones((1, 2 * radius + 1) if horizontal else (2 * radius + 1, 2 * radius + 1), np.uint8)
    return cv2.dilate(np.asarray(disparity, np.float32), k)


# -- stereo: exact horizontal warps ----------------------------------------------------------------
@dataclass
class View:
    """A synthesised view: ``image`` uint8 RGB, ``filled`` bool (disocclusions that were
    invented), ``disparity`` float32 (each output pixel's disparity, holes: the background's)."""

    image: np.ndarray
    filled: np.ndarray
    disparity: np.ndarray


def _row_sources(d: np.ndarray, tau: float, near_extend: float, far_extend: float,
                 kmax: int = 8) -> np.ndarray:
    """For the view ``t = x - d``: the source x of every output pixel (-inf where nothing lands).

    Every source pixel's footprint runs half-way to each neighbour, linearly joined to it where
    the surface is continuous (``|d(x+1) - d(x)| <= tau``); across a depth edge the near side
    extends ``near_extend`` px and the far side ``far_extend`` px. Footprints are rasterised
    into the output row and, where several land on one pixel, the largest source x wins (it is
    the nearest: two points with x' > x and x' - d' = x - d have d' = d + x' - x > d).
    """
    h, w = d.shape
    f32 = np.float32
    x = np.arange(w, dtype=f32)
    t = x - d
    dd = d[:, 1:] - d[:, :-1]  # across the gap between x and x + 1
    conn = np.abs(dd) <= tau
    # output px per source px across each gap (1 across depth edges), padded with 1 at the row
    # ends: towards x - 1 it is s[:, :-1], towards x + 1 s[:, 1:] (views, no copies)
    s = np.ones((h, w + 1), f32)
    sm = s[:, 1:-1]
    np.subtract(f32(1.0), dd, out=sm, where=conn)
    np.maximum(sm, f32(0.0), out=sm)
    inv = np.maximum(s, f32(1e-3))
    np.divide(f32(1.0), inv, out=inv)
    # reach of the footprint into each gap: half the stretched gap where the surface is
    # continuous; across an edge the near side (larger d) reaches further
    half_gap = sm * f32(0.5)
    right_near = dd < 0  # x is the near side of the gap
    reach_r = np.where(conn, half_gap, np.where(right_near, f32(near_extend), f32(far_extend)))
    reach_l = np.where(conn, half_gap, np.where(right_near, f32(far_extend), f32(near_extend)))
    a = t.copy()  # footprint [a, b) in the output row
    a[:, 1:] -= reach_l
    a[:, 0] -= f32(0.5)
    b = t.copy()
    b[:, :-1] += reach_r
    b[:, -1] += f32(0.5)
    q0 = np.ceil(a)
    n = np.ceil(b, out=b)
    n -= q0  # output pixels q with a <= q < b
    buf = np.full(h * w + 1, -np.inf, f32)  # the last cell swallows off-image writes
    ity = np.int32 if h * w < 2**31 - 1 else np.int64
    kk = int(min(max(float(n.max()) if n.size else 0.0, 0.0), kmax))
    for k in range(kk):
        if k == 0:
            q = q0
            src = np.where(q < t, inv[:, :-1], inv[:, 1:])
            src *= q - t
            src += x
            idx = q.astype(ity)
            idx += (np.arange(h, dtype=ity) * ity(w))[:, None]
            bad = (n < 1) | (q < 0) | (q >= w)
            np.putmask(idx, bad, h * w)
            np.maximum.at(buf, idx.ravel(), src.ravel())
            continue
        sel = np.flatnonzero(n.ravel() > k)  # the few stretched footprints
        if sel.size == 0:
            break
        q = q0.ravel()[sel] + k
        tt = t.ravel()[sel]
        row, col = np.divmod(sel, w)
        xx = col.astype(f32)
        inv_l, inv_r = inv[row, col], inv[row, col + 1]
        src = xx + (q - tt) * np.where(q < tt, inv_l, inv_r)
        ok = (q >= 0) & (q < w)
        idx = row * w + q.astype(np.int64)
        np.maximum.at(buf, idx[ok], src[ok])
    return buf[:-1].reshape(h, w)


def _fill_row_holes(xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Holes (-inf) take the farther (smaller) disparity of the nearest landed pixels left and
    right in their row: a disocclusion shows what is behind. Works on runs of holes (a few per
    row), not pixels. Returns (source x, hole mask); ``xs`` is filled in place."""
    h, w = xs.shape
    hole = np.isneginf(xs)
    if not hole.any():
        return xs, hole
    # runs of holes: a False column on either side of each row keeps runs inside their row
    pad = np.zeros((h, w + 2), np.int8)
    pad[:, 1:-1] = hole
    step = np.diff(pad.ravel())
    starts = np.flatnonzero(step == 1) + 1  # padded flat index of each run's first hole
    stops = np.flatnonzero(step == -1) + 1  # ... and one past its last
    row, c0 = np.divmod(starts, w + 2)
    c0 -= 1  # first hole's column
    c1 = stops - row * (w + 2) - 1  # column after the last hole
    flat = xs.reshape(-1)
    base = row * w
    lv = np.where(c0 > 0, flat[base + np.maximum(c0 - 1, 0)] - (c0 - 1), np.inf)
    rv = np.where(c1 < w, flat[base + np.minimum(c1, w - 1)] - c1, np.inf)
    fill = np.minimum(lv, rv)
    fill[~np.isfinite(fill)] = 0.0
    hy, hx = np.nonzero(hole)
    xs[hy, hx] = hx + np.repeat(fill, c1 - c0)
    return xs, hole


def _row_maps(d: np.ndarray, direction: int, tau: float, near_extend: float, far_extend: float,
              offset: int = 0, *, layers: Layers | None = None, interp: int = cv2.INTER_LINEAR,
              keep_map_y: bool = True):
    """(map_x, map_y, filled, image) of a horizontal warp, computed in row bands; ``map_y``
    points the filled pixels ``offset`` rows down (into the background layer of a
    :class:`Layers`). With ``layers``, each band is also resampled as soon as its maps exist
    (``image``, uint8 RGB; the maps stay in cache, and no full-size ``map_y`` is needed:
    ``keep_map_y=False`` returns None for it)."""
    if direction not in (-1, 1):
        raise ParameterError("direction must be -1 (x - d) or +1 (x + d)", parameter="direction")
    h, w = d.shape
    if layers is not None:
        offset = layers.offset
    map_x = np.empty((h, w), np.float32)
    map_y = np.empty((h, w), np.float32) if keep_map_y else None
    filled = np.empty((h, w), bool)
    image = np.empty((h, w, 3), np.uint8) if layers is not None else None
    four = layers is not None and layers.stack.shape[2] == 4

    def band(sl):
        if direction < 0:
            xs, hole = _fill_row_holes(_row_sources(d[sl], tau, near_extend, far_extend))
        else:  # mirror the rows: x + d becomes x' - d with x' = w - 1 - x
            xs, hole = _fill_row_holes(_row_sources(np.ascontiguousarray(d[sl, ::-1]), tau, near_extend, far_extend))
            xs, hole = (w - 1) - xs[:, ::-1], hole[:, ::-1]
        mx = map_x[sl]
        mx[:] = xs
        filled[sl] = hole
        my = map_y[sl] if map_y is not None else np.empty(mx.shape, np.float32)
        my[:] = np.arange(sl.start, sl.stop, dtype=np.float32)[:, None]
        my += hole * np.float32(offset)  # (np.add(..., where=) is ten times slower)
        if layers is not None:
            if four:
                px = cv2.remap(layers.stack, mx, my, interp, borderMode=cv2.BORDER_REPLICATE)
                cv2.cvtColor(px, cv2.COLOR_RGBA2RGB, dst=image[sl])
            else:
                cv2.remap(layers.stack, mx, my, interp, dst=image[sl], borderMode=cv2.BORDER_REPLICATE)

    by_bands(band, h)
    return map_x, map_y, filled, image


def shift_sources(disparity: np.ndarray, *, direction: int = -1, tau: float = JUMP_PX,
                  near_extend: float = NEAR_EXTEND, far_extend: float = FAR_EXTEND) -> tuple[np.ndarray, np.ndarray]:
    """Backward map of a horizontal warp: ``(source_x, filled)`` for every output pixel.

    ``direction=-1``: a pixel at x moves to ``x - d`` (the right view of a left photo);
    ``+1``: to ``x + d``. Disocclusions (``filled``) read the background at the background's
    disparity.
    """
    mx, _, filled, _ = _row_maps(np.asarray(disparity, np.float32), direction, tau, near_extend, far_extend,
                                 keep_map_y=False)
    return mx, filled


def resolve_interpolation(interpolation: str, pixels: int) -> str:
    """``auto``: bicubic is sharper; on large photos the difference is invisible (and bilinear
    is several times faster)."""
    if interpolation == "auto":
        return "cubic" if pixels <= AUTO_CUBIC_PIXELS else "linear"
    return interpolation


def layer_channels(interpolation: str) -> int:
    """The fastest stack layout for a resampling filter (see :func:`make_layers`)."""
    return 4 if interpolation in ("linear", "nearest") else 3


def shift_view(image: np.ndarray, disparity: np.ndarray, *, direction: int = -1,
               layers: Layers | None = None, interpolation: str = "auto",
               tau: float = JUMP_PX, near_extend: float = NEAR_EXTEND,
               far_extend: float = FAR_EXTEND) -> View:
    """``image`` seen from a camera moved sideways: each pixel moves by ``-d`` (``direction=-1``,
    the right view) or ``+d``; nearer surfaces win; disocclusions are filled from the
    background layer of ``layers`` (built here when not given, see :func:`make_layers`)."""
    img = np.asarray(image)
    d = np.asarray(disparity, np.float32)
    if img.shape[:2] != d.shape:
        raise ParameterError(f"disparity is {d.shape[1]}x{d.shape[0]} but the image is "
                             f"{img.shape[1]}x{img.shape[0]}", parameter="depth")
    interpolation = resolve_interpolation(interpolation, d.size)
    if interpolation not in INTERP:
        raise ParameterError(f"unknown interpolation {interpolation!r}; auto or one of {', '.join(INTERP)}",
                             parameter="interpolation")
    if layers is None:
        sides = "right" if direction < 0 else "left"
        layers = make_layers(img, hidden_mask(d, sides=sides, tau=tau), channels=layer_channels(interpolation))
    mx, _, filled, out = _row_maps(d, direction, tau, near_extend, far_extend, layers=layers,
                                   interp=INTERP[interpolation], keep_map_y=False)
    q = np.arange(d.shape[1], dtype=np.float32)[None, :]
    disp = np.subtract(mx, q, out=mx) if direction < 0 else np.subtract(q, mx, out=mx)
    return View(out, filled, disp)


def resample(layers: Layers, map_x: np.ndarray, map_y: np.ndarray | None, filled: np.ndarray | None,
             interp: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Backward warp: each output pixel reads the photo at (map_x, map_y), or the background
    layer where ``filled``; one ``cv2.remap`` over the stacked layers."""
    h, w = map_x.shape
    if map_y is None:
        my = np.empty((h, w), np.float32)
        my[:] = np.arange(h, dtype=np.float32)[:, None]
    else:
        my = np.clip(map_y, 0, layers.h - 1).astype(np.float32)
    if filled is not None:
        my += filled * np.float32(layers.offset)
    return rgb(cv2.remap(layers.stack, map_x, my, interp, borderMode=cv2.BORDER_REPLICATE))


# -- parallax: free camera moves ---------------------------------------------------------------
@dataclass(frozen=True)
class Pose:
    """Where the camera is for one frame, relative to the photo's camera.

    Depth is the photo's normalised nearness ``w`` (0 = farthest, 1 = nearest), taken as
    inverse depth with the farthest surface far away. ``x``, ``y``: sideways camera offset, as
    the parallax (output pixels) between the nearest and the farthest surface (positive: the
    camera moves right / down, so near things move left / up). ``z``: dolly, the share of the
    distance to the nearest surface the camera moves forward (negative: back). ``zoom``: focal
    length factor. ``focus``: the nearness whose plane stays still under x/y moves (the pivot of
    an orbit). ``pan_x``, ``pan_y``: image-plane shift in output pixels (Ken Burns pans).
    """

    x: float = 0.0
    y: float = 0.0
    z: float = 0.0
    zoom: float = 1.0
    focus: float = 0.5
    pan_x: float = 0.0
    pan_y: float = 0.0

    def offset(self) -> tuple[float, float]:
        """Image shift that keeps the focus plane still (the camera turns to look at it)."""
        k = self.zoom * self.focus / (1.0 - self.z * self.focus)
        return self.x * k, self.y * k


def forward_point(pose: Pose, u: np.ndarray, v: np.ndarray, w: np.ndarray, center: tuple[float, float]):
    """Where source points (``u``, ``v`` pixels from the top-left; nearness ``w``) land in the
    output of ``pose`` (same pixel grid, ``center`` the optical centre)."""
    cx, cy = center
    r = pose.zoom / (1.0 - pose.z * w) if pose.z else np.float32(pose.zoom)
    dx, dy = pose.offset()
    ex, ey = np.float32(cx + dx + pose.pan_x), np.float32(cy + dy + pose.pan_y)
    return (ex + r * ((u - np.float32(cx)) - np.float32(pose.x) * w),
            ey + r * ((v - np.float32(cy)) - np.float32(pose.y) * w))


def _nearest_known(a: np.ndarray, empty: np.ndarray, axis: int, reverse: bool) -> np.ndarray:
    """The value of the nearest non-empty cell along ``axis`` (inf where there is none)."""
    n = a.shape[axis]
    shape = [1, 1]
    shape[axis] = n
    pos = np.arange(n, dtype=np.int32).reshape(shape)
    pos = np.broadcast_to(pos, a.shape)
    if not reverse:
        idx = np.maximum.accumulate(np.where(empty, -1, pos), axis=axis)
        none = idx < 0
    else:
        idx = np.flip(np.minimum.accumulate(np.flip(np.where(empty, n, pos), axis), axis=axis), axis)
        none = idx >= n
    v = np.take_along_axis(a, np.clip(idx, 0, n - 1), axis)
    v[none] = np.inf
    return v


def _min_fill(a: np.ndarray, empty: np.ndarray, *, rows: bool = True, cols: bool = True) -> np.ndarray:
    """Fill ``empty`` cells with the farthest (smallest) of the nearest known values along rows
    (left, right) and/or columns (up, down): a disocclusion lies between a near and a far
    surface, along the direction of motion, and shows the far one (the rule of standard DIBR
    hole filling, in two dimensions). Only the rows / columns that have holes are scanned."""
    if not empty.any():
        return a
    out = a.copy()
    best = np.full(a.shape, np.inf, np.float32)
    for axis, use in ((1, rows), (0, cols)):
        if not use:
            continue
        lines = np.flatnonzero(empty.any(axis=axis))  # rows (axis 1) or columns (axis 0) with holes
        sub_a = a[lines] if axis == 1 else np.ascontiguousarray(a[:, lines].T)
        sub_e = empty[lines] if axis == 1 else np.ascontiguousarray(empty[:, lines].T)
        v = np.minimum(_nearest_known(sub_a, sub_e, 1, False), _nearest_known(sub_a, sub_e, 1, True))
        if axis == 1:
            best[lines] = np.minimum(best[lines], v)
        else:
            best[:, lines] = np.minimum(best[:, lines], v.T)
    if not np.isfinite(best[empty]).all():  # a hole with no known cell on its scan lines
        if rows and cols:
            best[~np.isfinite(best)] = 0.0
        else:
            return _min_fill(a, empty, rows=True, cols=True)
    out[empty] = best[empty]
    return out


class ParallaxRenderer:
    """Renders frames of one photo from moving cameras (:class:`Pose`), at output resolution.

    Built once per photo: the photo and its nearness resized so that one source pixel is one
    output pixel at ``zoom=1`` (covering the output with ``overscan`` to spare), the background
    layer, and the source samples of the forward splat. Per frame: nearness is splatted
    forward at half resolution (z-buffer: the nearest wins), cracks are closed and
    disocclusions take the background's nearness; then every output pixel solves where it comes
    from (the map is affine in nearness), refines that with the true nearness found there, and
    reads the photo or, in disocclusions, the background layer.
    """

    def __init__(self, image: np.ndarray, nearness: np.ndarray, size: tuple[int, int], *,
                 overscan: float = 1.0, max_parallax: float = 0.0, edge_dilation: int = 0,
                 jump: float = JUMP_PX, workers: int | None = None):
        self.workers = workers  # threads per frame (None: all cores; 1 when frames run in parallel)
        img = np.asarray(image)
        wn = np.clip(np.asarray(nearness, np.float32), 0.0, 1.0)
        if img.shape[:2] != wn.shape:
            raise ParameterError("depth and image sizes differ", parameter="depth")
        ow, oh = int(size[0]), int(size[1])
        self.size = (ow, oh)
        ih, iw = img.shape[:2]
        scale = max(ow / iw, oh / ih) * max(1.0, float(overscan))
        bw, bh = max(1, round(iw * scale)), max(1, round(ih * scale))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        # only the part of the photo the moving window can reach is kept (a 4:3 photo behind a
        # 16:9 video loses its top and bottom): less memory, less work per frame
        cw, ch = min(bw, int(np.ceil(ow * max(1.0, overscan))) + 8), min(bh, int(np.ceil(oh * max(1.0, overscan))) + 8)
        x0, y0 = (bw - cw) / (2 * scale), (bh - ch) / (2 * scale)
        crop = (slice(int(y0), min(ih, int(np.ceil(y0 + ch / scale)) + 1)), slice(int(x0), min(iw, int(np.ceil(x0 + cw / scale)) + 1)))
        m = np.array([[scale, 0, (crop[1].start - x0) * scale + 0.5 * scale - 0.5],
                      [0, scale, (crop[0].start - y0) * scale + 0.5 * scale - 0.5]], np.float32)
        if (bw, bh) == (iw, ih) and (cw, ch) == (bw, bh):
            base, wb = img, wn
        else:
            base = cv2.warpAffine(img[crop], m, (cw, ch), flags=interp if interp != cv2.INTER_AREA else cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REPLICATE) if scale >= 1 else \
                cv2.resize(img, (bw, bh), interpolation=interp)[int((bh - ch) / 2):int((bh - ch) / 2) + ch,
                                                                int((bw - cw) / 2):int((bw - cw) / 2) + cw]
            wb = cv2.warpAffine(wn[crop], m, (cw, ch), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE) \
                if scale >= 1 else cv2.resize(wn, (bw, bh), interpolation=cv2.INTER_LINEAR)[
                    int((bh - ch) / 2):int((bh - ch) / 2) + ch, int((bw - cw) / 2):int((bw - cw) / 2) + cw]
        bw, bh = cw, ch
        if edge_dilation > 0:
            wb = dilate_near(wb, int(round(edge_dilation * scale)) or 1)
        self.w = np.ascontiguousarray(wb, np.float32)
        hidden = None
        if max_parallax > 0:
            hidden = hidden_mask(self.w * np.float32(max_parallax), sides="all", tau=jump)
        self.layers = make_layers(base, hidden, channels=4)  # frames are bilinear: see make_layers
        # the output window is centred on the base image
        self.ox = (bw - ow) / 2.0
        self.oy = (bh - oh) / 2.0
        self.center = (bw / 2.0, bh / 2.0)
        # forward-splat samples: every second pixel (the z-buffer is at half resolution); the
        # coordinates as a row and a column (they broadcast against the nearness grid)
        self._su = np.arange(0, bw, 2, dtype=np.float32)[None, :] + np.float32(0.5)
        self._sv = np.arange(0, bh, 2, dtype=np.float32)[:, None] + np.float32(0.5)
        self._sw = np.ascontiguousarray(self.w[0:bh:2, 0:bw:2])
        self.jump_w = float(jump) / max(float(max_parallax), 1e-6) if max_parallax > 0 else 0.05

    def _target_nearness(self, pose: Pose) -> tuple[np.ndarray, np.ndarray]:
        """Nearness seen by ``pose`` on a half-resolution output grid, and its holes."""
        ow, oh = self.size
        gw, gh = (ow + 1) // 2, (oh + 1) // 2
        # forward_point, then the half-resolution cell: (p - o) / 2, as one affine map per axis
        pose_g = Pose(x=pose.x, y=pose.y, z=pose.z, zoom=pose.zoom, focus=pose.focus,
                      pan_x=pose.pan_x - self.ox, pan_y=pose.pan_y - self.oy)
        if pose.z == 0:
            # no dolly: each axis is a row (column) plus a multiple of nearness, cell size folded
            # in (two passes per axis instead of five)
            cx, cy = self.center
            dx, dy = pose_g.offset()
            r = np.float32(0.5 * pose.zoom)
            px = np.multiply(self._sw, np.float32(-0.5 * pose.zoom * pose.x))
            px += np.float32(0.5 * (cx + dx + pose_g.pan_x)) + r * (self._su - np.float32(cx))
            py = np.multiply(self._sw, np.float32(-0.5 * pose.zoom * pose.y))
            py += np.float32(0.5 * (cy + dy + pose_g.pan_y)) + r * (self._sv - np.float32(cy))
        else:
            px, py = forward_point(pose_g, self._su, self._sv, self._sw, self.center)
            px *= np.float32(0.5)
            py *= np.float32(0.5)
        buf = np.full(gw * gh + 1, -1.0, np.float32)  # the last cell swallows off-frame samples
        gx = np.floor(px, out=px).astype(np.int32)
        gy = np.floor(py, out=py).astype(np.int32)
        # off-frame: negative cells wrap to huge unsigned values
        off = (gx.view(np.uint32) >= gw) | (gy.view(np.uint32) >= gh)
        gy *= np.int32(gw)
        gy += gx
        np.putmask(gy, off, gw * gh)
        np.maximum.at(buf, gy.ravel(), self._sw.ravel())
        g = buf[:-1].reshape(gh, gw)
        # Magnified surfaces (zoom, dolly: samples up to 2 cells apart) leave one-cell cracks,
        # empty or showing a farther surface that slipped through: a 3x3 closing (max, then
        # min) fills both, and leaves real disocclusions (wider) empty.
        k = np.ones((3, 3), np.uint8)
        g = cv2.erode(cv2.dilate(g, k), k)
        empty = g < 0
        lateral = abs(pose.x) + abs(pose.y)
        rows = bool(pose.z) or abs(pose.x) >= 0.3 * lateral
        cols = bool(pose.z) or abs(pose.y) >= 0.3 * lateral
        return _min_fill(g, empty, rows=rows, cols=cols), empty

    def render(self, pose: Pose, *, interpolation: str = "linear", channels: int = 3,
               band_sink=None) -> tuple[np.ndarray | None, np.ndarray]:
        """One frame (uint8 RGB of the output size) and its mask of filled-in pixels. The maps
        are built and applied band by band (64 rows), so no full-size map is ever held.
        ``channels=4`` returns the frame as rendered, RGBA (alpha 255), saving a conversion
        when the next step reads 4 channels anyway. ``band_sink(rows, rgba)`` takes each band
        as soon as it is rendered (e.g. to convert it for the encoder), and no frame is
        returned (``None``): a 4K RGBA frame is 33 MB."""
        ow, oh = self.size
        g, holes = self._target_nearness(pose)
        gh, gw = g.shape
        holes8 = holes.view(np.uint8)
        k3 = np.ones((3, 3), np.uint8)

        def upsampled(sl):
            """Rows ``sl`` of the full-resolution nearness estimate (g upsampled 2x, bilinear)
            and of the hole mask (nearest, dilated by a pixel; None if empty): each band upsamples its own rows
            of g with two rows to spare, which gives exactly the rows of a full-size resize
            without ever holding one."""
            k0, k1 = max(sl.start // 2 - 2, 0), min((sl.stop + 1) // 2 + 2, gh)
            y0, y1 = 2 * k0, min(2 * k1, oh)
            w_up = cv2.resize(g[k0:k1], (2 * gw, 2 * (k1 - k0)), interpolation=cv2.INTER_LINEAR)
            r = slice(sl.start - y0, sl.stop - y0)
            if not holes8[k0:k1].any():  # most bands: nothing disoccluded near them
                return w_up[r, :ow], None
            h_up = cv2.resize(holes8[k0:k1], (2 * gw, 2 * (k1 - k0)), interpolation=cv2.INTER_NEAREST)
            h_up = cv2.dilate(h_up[:y1 - y0, :ow], k3)
            return w_up[r, :ow], h_up[r].view(bool)

        cx, cy = self.center
        dx, dy = pose.offset()
        # inverse map, affine in nearness: u = P + w * Q (separable in x and y)
        qx = np.arange(ow, dtype=np.float64) + 0.5 + self.ox
        qy = np.arange(oh, dtype=np.float64) + 0.5 + self.oy
        pxv = cx + (qx - cx - dx - pose.pan_x) / pose.zoom
        pyv = cy + (qy - cy - dy - pose.pan_y) / pose.zoom
        Px = (pxv - 0.5).astype(np.float32)[None, :]  # -0.5: remap samples pixel centres at integers
        Py = (pyv - 0.5).astype(np.float32)[:, None]
        Qx = (pose.x - pose.z * (pxv - cx)).astype(np.float32)[None, :]
        Qy = (pose.y - pose.z * (pyv - cy)).astype(np.float32)[:, None]
        out = np.empty((oh, ow, self.layers.stack.shape[2]), np.uint8) if band_sink is None else None
        filled = np.empty((oh, ow), bool)
        interp = INTERP[interpolation]
        stack = self.layers.stack
        tau = np.float32(self.jump_w)
        off = np.float32(self.layers.offset)
        hmax = np.float32(self.layers.h - 1)
        wsrc = self.w
        rows = 64  # (32-row bands: 3x the GIL hand-offs between the two render threads, +30% CPU)
        # without dolly Q is constant: maps are one cv2.scaleAdd each (a third of numpy's time)
        flat = pose.z == 0
        qx, qy = float(pose.x), float(pose.y)
        Pxb = np.ascontiguousarray(np.broadcast_to(Px, (rows, ow))) if flat else None
        # Rows whose y map cannot leave the photo layer need no clipping (nearness is 0..1, so a
        # row's map lies between P and P + Q): most bands skip it.
        y_lo = (Py + np.minimum(Qy, 0))[:, 0]
        y_hi = (Py + np.maximum(Qy, 0))[:, 0]

        def xmap(w, n):
            return cv2.scaleAdd(w, qx, Pxb[:n]) if flat else Px + w * Qx

        def band(sl):
            w0, hb = upsampled(sl)
            n = w0.shape[0]
            mx = xmap(w0, n)
            Pyb = np.ascontiguousarray(np.broadcast_to(Py[sl], (n, ow))) if flat else None
            my = cv2.scaleAdd(w0, qy, Pyb) if flat else Py[sl] + w0 * Qy[sl]
            # refine: the nearness actually found where the estimate points
            w1 = cv2.remap(wsrc, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            if hb is not None and hb.any():
                # disocclusion: the background's nearness leads onto something nearer
                fill = hb & (w1 - w0 > tau)
                w1 = np.where(fill, w0, w1)
            else:
                fill = False
            mx = xmap(w1, n)
            if flat:
                cv2.scaleAdd(w1, qy, Pyb, dst=my)
            else:
                np.multiply(w1, Qy[sl], out=my)
                my += Py[sl]
            if y_lo[sl].min() < 0.01 or y_hi[sl].max() > hmax - 0.01:
                np.clip(my, 0, hmax, out=my)  # stay inside the layer read
            if fill is not False:
                my += fill * off
            filled[sl] = fill
            if band_sink is None:
                cv2.remap(stack, mx, my, interp, dst=out[sl], borderMode=cv2.BORDER_REPLICATE)
            else:
                band_sink(sl, cv2.remap(stack, mx, my, interp, borderMode=cv2.BORDER_REPLICATE))

        by_bands(band, oh, rows=rows, workers=self.workers)
        if out is None:
            return None, filled
        return (out if channels == 4 else rgb(out)), filled


