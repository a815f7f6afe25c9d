"""Disocclusion filling: the background layer a moved camera's holes read from, and the
depth of the holes themselves.

The band of near pixels that hides background a moved camera may reveal (:func:`hidden_mask`:
the occluder only, never the background beside it) is inpainted from background pixels only
by push-pull (Gortler et al., "The Lumigraph", SIGGRAPH 1996) into a second layer
(:func:`make_layers`, a two-layer layered depth image: Shade et al., SIGGRAPH 1998):
depth-guided, with a row exemplar for texture (:func:`background_fill`), never reading the
band itself nor the mixed pixels just beyond it (:func:`source_mask`), which the stereo
background layer also holds the fill on. Holes in a warped depth map take the farther of the nearest surfaces
around them (``_fill_row_holes`` for rows, ``_min_fill`` in two dimensions).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import ParameterError
from .common import HIDDEN_MARGIN, HIDDEN_SPREAD, JUMP_PX, by_bands, put_px, take_px


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
        # cf wf + up (1 - wf), the same operations with two temporaries fewer
        c = cf * wf[..., None]
        up *= (1.0 - wf)[..., None]
        c += up
    return c[..., 0] if squeeze else c


# -- the background layer ----------------------------------------------------------------------
BAND_NEAR_TOL = JUMP_PX  # a band pixel within this of the background past the band is background


def _hidden_band_right(d: np.ndarray, tau: float, spread: float, margin: float,
                       near_tol: float | None = None) -> np.ndarray:
    """Near pixels left of a drop in disparity, within ``spread * jump + margin`` of it.

    A drop J = d(x) - d(x+1) > tau opens a gap of J pixels to the right of x in the right view;
    what fills it is background hidden behind the J pixels left of the drop. ``L(x) = max over
    x' >= x of (reach(x') - (x' - x))``, i.e. the union of the intervals ``(x' - reach(x'), x']``.
    ``near_tol``: keep only the occluder (see :func:`hidden_mask`); None: the whole reach.
    """
    h, w = d.shape
    jump = d[:, :-1] - d[:, 1:]
    # the band is the union of the intervals (x - reach(x), x] of the drops, which are few:
    # merged in order of their starts (flat indices: an interval never leaves its row), its
    # pixels set run by run (the cost follows the drops and the band, not the image)
    e = np.flatnonzero(jump > tau)
    band = np.zeros((h, w), bool)
    if e.size == 0:
        return band
    row, col = np.divmod(e, w - 1)
    reach = spread * jump.reshape(-1)[e].astype(np.float64) + margin
    start = np.floor(col - reach).astype(np.int64) + 1
    np.maximum(start, 0, out=start)
    base = row * w
    s0 = base + start
    o = np.argsort(s0, kind="stable")
    s0 = s0[o]
    reach_end = np.maximum.accumulate((base + col + 1)[o])  # one past the furthest end so far
    first = np.ones(s0.size, bool)
    first[1:] = s0[1:] > reach_end[:-1]  # an interval that starts a new run
    lead = np.flatnonzero(first)
    rs = s0[lead]
    n = reach_end[np.append(lead[1:] - 1, s0.size - 1)] - rs
    if 4 * int(n.sum()) < h * w:
        band.reshape(-1)[np.repeat(rs - np.cumsum(n) + n, n) + np.arange(int(n.sum()))] = True
    else:  # a band over much of the rows (noisy depth): +1 at each run's start, -1 past its end,
        # summed (the runs are apart: every start and end is its own pixel)
        mark = np.zeros(h * w + 1, np.int8)
        mark[rs] = 1
        mark[rs + n] = -1
        band = np.cumsum(mark[:-1], dtype=np.int8).view(bool).reshape(h, w)
    if near_tol is None:
        return band
    # Only the near pixels of the band hide anything: a pixel at (or beyond) the depth of the
    # background just past the band's right end is that background itself (beside a thin
    # occluder, most of the band is), so it stays a source of background and keeps its colour.
    # The occluder itself (the surface continuous with the drop's near side: no depth edge
    # between) always hides background, even where a slant brings it close to that depth.
    # Works on the band's runs along the rows (the cost follows the band, not the image). A
    # band never holds a row's last pixel, so runs are where the flat indices are consecutive
    # and the pixel after each run is in its row.
    fb = band.reshape(-1)
    idx = np.flatnonzero(fb)
    if idx.size == 0:
        return band
    brk = np.flatnonzero(np.diff(idx) != 1)
    end = np.append(brk, idx.size - 1)  # position in idx of each run's last pixel
    n = np.diff(end, prepend=-1)
    flat = d.reshape(-1)
    far = np.repeat(flat[idx[end] + 1], n)
    dv = flat[idx]
    # a depth edge between each band pixel and the next one (the run's last pixel: its drop,
    # not counted); the occluder is what has no edge between it and the drop
    e = np.zeros(idx.size, np.int32)
    e[:-1] = np.abs(dv[1:] - dv[:-1]) > tau
    e[end] = 0
    c = np.cumsum(e, dtype=np.int32)  # (int32 adds: half the memory of the default int64)
    occ = (np.repeat(c[end], n) - c + e) == 0
    fb[idx[~(occ | (dv > far + np.float32(near_tol)))]] = False
    return band


def hidden_mask(disparity: np.ndarray, *, sides: str = "right", tau: float = JUMP_PX,
                spread: float = HIDDEN_SPREAD, margin: float = HIDDEN_MARGIN,
                near_tol: float | None = BAND_NEAR_TOL, edge_far: np.ndarray | None = None) -> np.ndarray:
    """Pixels (bool ``H x W``) that hide background a moved camera may reveal.

    ``sides``: ``right`` (revealed by a right-eye view: the right side of near objects),
    ``left``, ``both`` (the two stereo eyes), or ``all`` (any direction, for parallax:
    ``disparity`` is then the largest parallax in pixels each pixel may get).

    Stereo sides: of the pixels within reach of a drop, only the occluder hides anything: a
    pixel no nearer than ``near_tol`` px of disparity beyond the background just past the
    band, and separated from the drop's near side by a depth edge, is background itself
    (beside a thin occluder, a fence or a lattice, most of the reach is), so it stays a
    source of background and keeps its own colour in the background layer. The surface
    continuous with the drop's near side stays hidden even where a slant brings it close to
    the background's depth. ``near_tol=None``: the whole reach (before issue 12 §3's second
    round). Measured on the Middlebury yardstick: disoccluded PSNR 20.80 -> 20.98 dB, on the
    mirrored scenes 20.29 -> 20.49 dB.

    An object cut by the frame edge that a side moves towards hides background too (see
    :func:`border_far`); ``edge_far``: :func:`edge_far` of ``disparity`` for that side (one
    side only), when the caller has it already.
    """
    d = _finite(disparity)
    if sides in ("right", "left", "both"):
        if edge_far is not None and sides == "both":
            raise ParameterError("edge_far is for one side", parameter="edge_far")

        def band(sl):
            db = d[sl]
            far = edge_far[sl] if edge_far is not None else None
            m = np.zeros(db.shape, bool)
            if sides != "left":
                m |= _hidden_band_right(_with_far_border(db, tau, far), tau, spread, margin, near_tol)[:, :-1]
            if sides != "right":
                m |= _hidden_band_right(_with_far_border(db[:, ::-1], tau, far), tau, spread, margin,
                                        near_tol)[:, -2::-1]
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
        # (a kernel wider than the image covers it all: larger radii add nothing)
        rad = min(int(np.ceil(r + margin)), max(d.shape))
        # square kernels: OpenCV runs them separably, fast at any radius
        k = np.ones((2 * rad + 1, 2 * rad + 1), np.uint8)
        band = cv2.dilate(edges, k).astype(bool)
        out |= band & (d - cv2.erode(d, k) > tau)  # the near side of the edge only
        if r / spread > top or rad >= max(d.shape):
            break
        r *= 2.0
    return out


EDGE_WINDOW = 4  # px averaged on either side of a step when looking for an object at the frame edge


def border_far(d: np.ndarray, tau: float = JUMP_PX) -> np.ndarray:
    """The disparity (float32 ``H``) a moved camera is taken to see just past the photo's
    right edge, where a near object touches it: the row's farthest (smallest) disparity; +inf
    in rows where no object touches the edge.

    What enters a right view at the right edge beside a near object may be what lies behind
    it: the edge is a depth drop to the row's background, the object's pixels at the edge
    hide background (:func:`hidden_mask`) and the holes there read it (``_fill_row_holes``);
    the stereo warp shows the mean of that and the object's edge pixel, since the object may
    as well go on past the edge (``shift._edge_strip``). Stretching the object's edge pixel
    alone smeared it over the entering strip (a bowling pin's red over a wall). An object is
    a surface that begins at a rise of more than ``2 tau`` px in the row (between the means of
    ``EDGE_WINDOW`` px either side: robust to depth noise) and reaches the edge with no drop
    after it; a slanted surface (a floor, a cloth) that merely gets nearer
    towards the edge is no object and keeps its stretch. Measured on the Middlebury
    yardstick and on crops of it: see docs/rendering.md (fourth round, 8)."""
    h, w = d.shape
    out = np.full(h, np.inf, np.float32)
    if w < 2:
        return out
    # Edges between means of EDGE_WINDOW px on either side, above twice ``tau``: a noisy depth
    # map's pixel steps would make the last "edge" of a plain slanted wall a rise in half its
    # rows (disparity noise of 0.35 px: 55 % of rows; now none up to 0.5 px, 16 % at 0.8)
    k = EDGE_WINDOW if w > 2 * EDGE_WINDOW else 1
    m = cv2.blur(d, (k, 1), anchor=(0, 0), borderType=cv2.BORDER_REPLICATE) if k > 1 else d  # mean of d[x..x+k-1]
    step = np.zeros((h, w - 1), np.float32)
    step[:, k - 1:] = m[:, k:] - m[:, :w - k]  # the k px right of each gap less the k px left of it
    # the last edge of each row (edges are few: their flat indices, in row order), and
    # whether it is a rise
    idx = np.flatnonzero(np.abs(step) > 2.0 * tau)
    if idx.size == 0:
        return out
    row = idx // (w - 1)
    last = np.ones(idx.size, bool)
    last[:-1] = row[1:] != row[:-1]
    obj = row[last][step.reshape(-1)[idx[last]] > 0]
    out[obj] = d[obj].min(1)
    return out


def edge_far(disparity: np.ndarray, side: str, tau: float = JUMP_PX) -> np.ndarray:
    """:func:`border_far` (float32 ``H``) of the rows as a view revealing ``side`` moves:
    ``right`` (the right edge), ``left`` (the left edge: the rows mirrored). Computed in row
    bands; :func:`hidden_mask` and the stereo warp of one eye can share it."""
    d = _finite(disparity)
    if side not in ("right", "left"):
        raise ParameterError(f"unknown side {side!r}; right or left", parameter="side")
    rows = by_bands(lambda sl: border_far(d[sl] if side == "right" else d[sl, ::-1], tau), d.shape[0])
    return np.concatenate(rows) if rows else np.zeros(0, np.float32)


def _with_far_border(d: np.ndarray, tau: float, far: np.ndarray | None = None) -> np.ndarray:
    """``d`` (``H x W``) with one more column on the right: :func:`border_far` of each row
    (``far`` when given; the edge pixel's own disparity where no object touches the edge:
    no drop)."""
    out = np.empty((d.shape[0], d.shape[1] + 1), np.float32)
    out[:, :-1] = d
    if far is None:
        far = border_far(d, tau)
    out[:, -1] = np.where(np.isfinite(far), far, d[:, -1] if d.shape[1] else 0.0)
    return out


MAX_DISPARITY = float(2 ** 24)  # |disparity| beyond this (px) is clipped: no photo is that wide


def _finite(disparity: np.ndarray) -> np.ndarray:
    """float32 disparity with NaN and -inf as the farthest finite value, +inf as the nearest
    (0 where nothing is finite), and every value within ``MAX_DISPARITY``: the CLI's depth
    loading removes non-finite values; callers of the library may not, and a float map's
    "no data" sentinel (-3.4e38, float32's lowest) overflowed the fill's cell sums to inf
    ("cannot convert float infinity to integer")."""
    d = np.asarray(disparity, np.float32)
    if d.size == 0:
        return d
    lo, hi = float(d.min()), float(d.max())  # (NaN propagates: two fast reductions)
    if -MAX_DISPARITY <= lo and hi <= MAX_DISPARITY:
        return d
    ok = np.isfinite(d)
    lo, hi = (float(d[ok].min()), float(d[ok].max())) if ok.any() else (0.0, 0.0)
    d = np.nan_to_num(d, nan=lo, posinf=hi, neginf=lo)
    return np.clip(d, -MAX_DISPARITY, MAX_DISPARITY, out=d)


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



def make_layers(image: np.ndarray, hidden: np.ndarray | None, *, channels: int = 3,
                disparity: np.ndarray | None = None, sides: str = "right", jump: float = JUMP_PX) -> Layers:
    """Stack ``image`` over its background layer: the ``hidden`` pixels (see
    :func:`hidden_mask`) inpainted from background pixels only (:func:`background_fill` when
    ``disparity``, float32 ``H x W`` larger = nearer, is given; a plain push-pull of every
    known pixel without it). ``sides``: as for :func:`hidden_mask`, the directions in which
    background is revealed (``all``: the depth-guided push-pull alone, no row exemplars).

    ``jump``: the depth-edge threshold in px of disparity (:func:`background_fill`'s depth
    layers are no finer).

    ``channels=4`` pads each pixel to RGBA: OpenCV 5's bilinear ``remap`` has a vector path for
    4 channels that runs 2-3x faster than for 3 (measured: 12 MP 98 -> 31 ms CPU, 1080p 14 -> 7 ms);
    its bicubic path is the other way round, so 3 channels stay the default there."""
    src = np.asarray(image)
    if src.dtype != np.uint8:
        # a float photo (0..255) was copied into the uint8 stack, but the fill's reduced sums
        # were then made into fresh arrays and never written into: uninitialised memory in
        # the background layer (up to 199 levels off on Middlebury sawtooth as float32)
        if not np.issubdtype(src.dtype, np.floating):
            raise ParameterError(f"the image is {src.dtype}; uint8 RGB (or float 0..255)", parameter="image")
        src = np.clip(np.rint(src), 0, 255).astype(np.uint8)
    h, w = src.shape[:2]
    if channels not in (3, 4):
        raise ParameterError("layers have 3 or 4 channels", parameter="channels")
    pad = 2  # rows between the layers so that interpolation never mixes them
    stack = np.empty((2 * h + 2 * pad, w, channels), np.uint8)
    # the photo is written straight into the stack (a full-size RGBA temporary costs ~0.1 s
    # of page faults at 12 MP: fresh memory is zeroed by the kernel on first touch)
    if channels == 4:
        cv2.cvtColor(src, cv2.COLOR_RGB2RGBA, dst=stack[:h])
    else:
        stack[:h] = src
    img = stack[:h]
    stack[h:h + pad] = img[-1]
    back = stack[h + 2 * pad:]
    stack[h + pad:h + 2 * pad] = img[0]
    if hidden is not None and hidden.any() and disparity is not None:
        disparity = _finite(disparity)
        nonsrc = source_mask(hidden, sides=sides, guard=guard_px(w))
        box = _fill_box(nonsrc) if sides != "all" else None
        if box is not None:
            # a few small bands (an object at the frame edge in a handful of rows): the fill
            # of their surroundings only, not of the whole photo (12 MP: ~0.14 s less per eye)
            part = background_fill(src[box], hidden[box], disparity[box], sides=sides, channels=channels,
                                   nonsource=nonsrc[box], guard=guard_px(w), jump=jump)
            back[box] = part
        else:
            # the fill is made straight in the background layer, then the photo is put back
            # where it is kept (no full-size fill image: ~0.1 s less at 12 MP, the same layer)
            background_fill(src, hidden, disparity, sides=sides, channels=channels, nonsource=nonsrc, out=back,
                            jump=jump)
        # the guard's mixed pixels are no background either: holes that interpolate next to
        # the drop read the fill there, not the occluder's share of colour (Middlebury:
        # disoccluded 20.98 -> 21.00 dB, mirrored 20.485 -> 20.494, visible 32.654 -> 32.668;
        # parallax keeps them, unmeasured there)
        put = nonsrc if sides != "all" else hidden
        cv2.copyTo(img, cv2.threshold(put.view(np.uint8), 0, 255, cv2.THRESH_BINARY_INV)[1], back)
        return Layers(stack, h, h + 2 * pad)
    back[:] = img
    if hidden is not None and hidden.any():
        up = _smooth_fill(src, hidden)
        if channels == 4:
            up = cv2.cvtColor(up, cv2.COLOR_RGB2RGBA)
        cv2.copyTo(up, hidden.view(np.uint8), back)
    return Layers(stack, h, h + 2 * pad)


FILL_BOX_MARGIN = 0.03  # context around small bands for their fill, as a share of the photo's larger side


def _fill_box(nonsource: np.ndarray) -> tuple[slice, slice] | None:
    """The bounding box of ``nonsource`` grown by ``FILL_BOX_MARGIN`` (at least 32 px) when it
    covers under a quarter of the photo, else None (the fill runs on the whole photo)."""
    h, w = nonsource.shape
    rows = np.flatnonzero(cv2.reduce(nonsource.view(np.uint8), 1, cv2.REDUCE_MAX).ravel())
    cols = np.flatnonzero(cv2.reduce(nonsource.view(np.uint8), 0, cv2.REDUCE_MAX).ravel())
    if rows.size == 0:
        return None
    m = max(32, int(round(FILL_BOX_MARGIN * max(h, w))))
    y0, y1 = max(0, int(rows[0]) - m), min(h, int(rows[-1]) + m + 1)
    x0, x1 = max(0, int(cols[0]) - m), min(w, int(cols[-1]) + m + 1)
    if (y1 - y0) * (x1 - x0) >= 0.25 * h * w:
        return None
    return slice(y0, y1), slice(x0, x1)


def _reduction(h: int, w: int) -> int:
    """The fill is smooth: it is computed at half size, or less for photos over ~4 MP."""
    f = 2
    while (w / f) * (h / f) > 1_000_000:
        f *= 2
    return f


def _smooth_fill(src: np.ndarray, hidden: np.ndarray) -> np.ndarray:
    """Push-pull of every known pixel into the ``hidden`` ones (uint8 RGB, full size; valid
    where ``hidden``): the weighted average of the known pixels at a reduced size, then
    push-pull and upsample."""
    h, w = hidden.shape
    f = _reduction(h, w)
    size = (max(1, -(-w // f)), max(1, -(-h // f)))
    known = np.logical_not(hidden).view(np.uint8) * np.uint8(255)
    masked = cv2.bitwise_and(src, src, mask=known)
    num = cv2.resize(masked, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    den = cv2.resize(known, size, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    del masked
    small = push_pull_fill(num / np.maximum(den, 1e-8)[..., None], np.minimum(den * (f * f), 1.0))
    return cv2.resize(np.clip(small + 0.5, 0, 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_LINEAR)


FILL_BINS = 6  # depth layers of the depth-guided push-pull (at most)
EXEMPLAR_WEIGHT = 0.25  # share of the row exemplar in the fill, the rest is the depth-guided average (0.15 scores
# as high on the mirrored scenes with the fifth round's stretches, but keeps less of the background's texture)
NEAR_SOURCE_SIGMA = 0.6  # sources nearer than a depth layer's centre weigh exp(-x^2 / 2), x = their excess
# disparity over (this many layer steps + the jump threshold); stereo only (issue 12 §3, seventh round:
# 0.75, mirrored scenes 20.94 -> 20.96 dB, no set lower; eighth round: 0.6 with the row lean, mirrored
# +0.009, shared -0.004)
GUARD_PX_PER_1500 = 1.0  # background pixels beside a drop that are not a fill source, per 1500 px of width


def source_mask(hidden: np.ndarray, *, sides: str = "right", guard: int = 1) -> np.ndarray:
    """Pixels (bool ``H x W``) that are no source of background: the ``hidden`` band, the
    ``guard`` pixels just beyond it on the background side, and as many above and below it.

    A band of :func:`hidden_mask` ends at a depth drop, and the first pixels of background
    beyond the drop are mixed pixels: a camera's blur and anti-aliasing mix the occluder's
    colour into them, and a depth map's edge is seldom exact to the pixel. Measured on the
    Middlebury yardstick, dropping one such pixel from the sources raises the disoccluded
    PSNR by 0.14 dB on the shared scenes and on their mirror images; two pixels lower it (at
    3x the resolution, three pixels are best).
    ``sides``: as for :func:`hidden_mask` (``right``: beyond the right end of each run of
    hidden pixels, ``left``: the left end, ``both``; ``all``: every direction). One dilation
    of the mask (a few milliseconds at 12 MP); the pixels it also takes from the near side
    of a band are never background."""
    if guard <= 0:
        return hidden
    g = int(guard)
    if sides == "all":
        k = np.ones((2 * g + 1, 2 * g + 1), np.uint8)
        anchor = (g, g)
    elif sides in ("right", "left", "both"):
        # along the row beyond the drop (the background side), and up and down: the rows just
        # above and below an occluder are as mixed, and a depth edge one row short of the
        # photo's edge labels a row of occluder colour as background (it leaked into the fill:
        # a red square's fill was 694 of 720 pixels red; shared scenes 21.12 -> 21.16 dB,
        # mirrored 20.61 -> 20.54)
        k = np.zeros((2 * g + 1, 2 * g + 1), np.uint8)
        k[:, g] = 1
        k[g, :] = 1
        if sides == "right":
            k[g, g + 1:] = 0  # dst(x) = max src(x - g .. x): the band grows to the right
        elif sides == "left":
            k[g, :g] = 0
        anchor = (g, g)
    else:
        raise ParameterError(f"unknown side {sides!r}; right, left, both or all", parameter="sides")
    return cv2.dilate(hidden.view(np.uint8), k, anchor=anchor).view(bool)


def guard_px(width: int) -> int:
    """Mixed pixels beyond a drop (see :func:`source_mask`): one per 1500 pixels of width, at
    least one (blur grows with resolution)."""
    return max(1, int(round(GUARD_PX_PER_1500 * width / 1500.0)))


def _reduce_sources(src: np.ndarray, d: np.ndarray, nonsource: np.ndarray, f: int,
                    size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sources (pixels not in ``nonsource``) over ``f x f`` cells, each a mean over the
    whole cell with the other pixels counted as 0: colour (float32 ``h x w x 3``, rounded to
    uint8 as before), share of sources (0..1), disparity (float32); ``size`` = (w, h) of the
    reduced grid. Where the photo divides into
    whole cells this runs in row bands (the masked copies stay in cache and no full-size
    temporaries are made: ~0.1 s of page faults less at 12 MP; INTER_AREA at an integer
    factor is a plain cell mean, so the result is the same); otherwise on the whole photo."""
    h, w = nonsource.shape
    sw, sh = size
    if h % f or w % f or sw * f != w or sh * f != h:
        known8 = cv2.threshold(nonsource.view(np.uint8), 0, 255, cv2.THRESH_BINARY_INV)[1]
        masked = cv2.copyTo(src, known8)  # (a third faster than bitwise_and with a mask)
        num = cv2.resize(masked, size, interpolation=cv2.INTER_AREA).astype(np.float32)
        den = cv2.resize(known8, size, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        del masked
        dk = cv2.resize(cv2.copyTo(d, known8), size, interpolation=cv2.INTER_AREA)
        return num, den, dk
    num8 = np.empty((sh, sw, 3), np.uint8)
    den8 = np.empty((sh, sw), np.uint8)
    dk = np.empty((sh, sw), np.float32)

    def band(sl):
        known8 = cv2.threshold(nonsource[sl].view(np.uint8), 0, 255, cv2.THRESH_BINARY_INV)[1]
        ss = slice(sl.start // f, sl.stop // f)
        bw = (sw, ss.stop - ss.start)
        cv2.resize(cv2.copyTo(src[sl], known8), bw, dst=num8[ss], interpolation=cv2.INTER_AREA)
        cv2.resize(known8, bw, dst=den8[ss], interpolation=cv2.INTER_AREA)
        cv2.resize(cv2.copyTo(d[sl], known8), bw, dst=dk[ss], interpolation=cv2.INTER_AREA)

    by_bands(band, h, rows=16 * f)
    return num8.astype(np.float32), den8.astype(np.float32) / 255.0, dk


def background_fill(image: np.ndarray, hidden: np.ndarray, disparity: np.ndarray, *,
                    sides: str = "right", bins: int = FILL_BINS,
                    exemplar: float = EXEMPLAR_WEIGHT, guard: int | None = None,
                    channels: int = 3, nonsource: np.ndarray | None = None,
                    out: np.ndarray | None = None, jump: float = JUMP_PX,
                    near_sigma: float | None = None) -> np.ndarray:
    """Background for the ``hidden`` pixels, from background pixels only (uint8 RGB ``H x W x 3``,
    valid where ``hidden`` and on the guard, i.e. wherever ``nonsource`` is set; the other
    pixels are unspecified). ``channels=4``: RGBA (alpha 255), the layout of a 4-channel
    :class:`Layers` stack, made at the reduced size (a full-size conversion costs ~30 ms at
    12 MP). ``nonsource``: bool ``H x W``, :func:`source_mask` of ``hidden`` when the caller
    has it already (None: computed here with ``guard``). ``out``: uint8 ``H x W x channels``
    to write the fill into (every pixel; returned), e.g. the background layer itself.
    ``jump``: the depth-edge threshold (px of disparity): depth layers are no finer.

    0. **Sources**: the known pixels, less the ``guard`` pixels of background just beyond
       each depth drop (:func:`source_mask`: mixed with the occluder's colour by blur and
       anti-aliasing); ``guard=None``: one per 1500 pixels of width (:func:`guard_px`), 0: none.
    1. **Which background**: each hidden pixel takes the farthest (smallest) disparity of the
       nearest known pixels along its row and column: the surface a moved camera reveals
       there (the rule of standard DIBR hole filling, in two dimensions: a surface farther
       than the row's may show above or below the occluder).
    2. **Depth-guided average**: the known pixels are split into up to ``bins`` depth layers
       (a layer holds the pixels within two layer steps of its disparity); each hidden pixel
       is push-pulled (Gortler et al. 1996) from the layer of its background disparity only,
       so a near object next to the hole never bleeds into it (depth-guided inpainting in the
       spirit of Daribo and Pesquet-Popescu, "Depth-aided image inpainting for novel view
       synthesis", MMSP 2010). ``near_sigma`` (None: :data:`NEAR_SOURCE_SIGMA` for the stereo
       sides, 0 for ``all``): inside a layer, a source nearer than the layer's centre by x px
       weighs exp(-x^2 / 2 s^2), s = ``near_sigma`` layer steps + ``jump`` (it is likelier the
       side of something in front of the background); 0: every layer source weighs alike.
    3. **Row exemplar** (stereo sides only): along the epipolar line, a pixel ``k`` pixels
       behind the edge copies the background on the far side of the edge: the mean of the
       first background pixel past the guard (the surface continued) and the one ``k``
       pixels further (its mirror image, which carries the background's texture), mixed in
       with weight ``exemplar``.

    Only background pixels are ever read: the hidden band (the occluder) and the guard are
    excluded from every source, so no occluder colour reaches the fill.

    Everything is computed from the source view, so a parallax video's holes show the same
    background, moving with the scene, in every frame (no boiling). ``disparity`` is float32
    ``H x W`` (larger = nearer; for parallax the largest parallax each pixel may get)."""
    if channels not in (3, 4):
        raise ParameterError("the fill has 3 or 4 channels", parameter="channels")
    if near_sigma is None:
        near_sigma = NEAR_SOURCE_SIGMA if sides != "all" else 0.0
    src = np.asarray(image)[..., :3]
    d = np.asarray(disparity, np.float32)
    h, w = hidden.shape
    f = _reduction(h, w)
    size = (max(1, -(-w // f)), max(1, -(-h // f)))
    if guard is None:
        guard = guard_px(w)
    # 255 where a pixel is a source (one threshold: cheaper than numpy's not-and-scale)
    if nonsource is None:
        nonsource = source_mask(hidden, sides=sides, guard=guard)
    num, den, dk = _reduce_sources(src, d, nonsource, f, size)
    if not (den > 0).any():
        # every pixel is in the band or its guard (a fence of 1-px posts): the guard is read
        # after all, and with nothing outside the band either, the photo itself (an invented
        # colour from the picture, never black)
        for fallback in (hidden, np.zeros_like(hidden)):
            num, den, dk = _reduce_sources(src, d, fallback, f, size)
            if (den > 0).any():
                break
    col = num / np.maximum(den, 1e-8)[..., None]
    wgt = np.minimum(den * (f * f), 1.0)
    # disparity of the known pixels per cell (their average), and of the background each
    # hidden cell shows
    dk /= np.maximum(den, 1e-8)
    hid_s = den < 0.5
    target = _min_fill(dk, den <= 0, rows=True, cols=True)
    # Cells with half their pixels known or more keep the mean of those (exactly what a plain
    # push-pull returns there); the others take their depth layer's push-pull below, or the
    # plain push-pull of every source, computed only when some cell still needs it.
    small = col.copy()
    todo = hid_s.copy()
    if hid_s.any():
        t = target[hid_s]
        lo, hi = float(t.min()), float(t.max())
        n = max(1, min(int(bins), int(np.ceil((hi - lo) / jump))))
        step = (hi - lo) / n
        for i in range(n):
            c = lo + (i + 0.5) * step
            sel = hid_s & (np.abs(target - c) <= 0.5 * step + 1e-3)
            if not sel.any():
                continue
            layer = wgt * (np.abs(dk - c) <= 2.0 * step + jump)
            if float(layer.sum()) < 16:
                continue  # too little of that depth is visible: the plain average
            # the layer's push-pull starts at the cells' bounding box (plus a margin): the
            # far background a hole shows is seldom more than a few cells away
            ys, xs = np.nonzero(sel)
            m = 16
            y0, y1 = max(0, ys.min() - m), min(sel.shape[0], ys.max() + m + 1)
            x0, x1 = max(0, xs.min() - m), min(sel.shape[1], xs.max() + m + 1)
            box = (slice(y0, y1), slice(x0, x1))
            if float(layer[box].sum()) < 16:
                box = (slice(None), slice(None))
            lb = layer[box]
            if near_sigma > 0:
                # a source nearer than the layer's centre is more likely the side of something in
                # front of the background than the background itself: it counts less, the nearer
                # the less (Gaussian in disparity; farther sources keep their weight)
                dd = dk[box] - np.float32(c)
                np.maximum(dd, 0, out=dd)
                np.nan_to_num(dd, copy=False, nan=0.0, posinf=0.0)  # (such a source is outside the layer: weight 0)
                dd *= np.float32(1.0 / max(near_sigma * step + jump, 1e-6))
                np.square(dd, out=dd)
                dd *= np.float32(-0.5)
                lb = lb * np.exp(dd, out=dd)
            part = push_pull_fill(col[box], lb)
            small[box][sel[box]] = part[sel[box]]
            todo &= ~sel
    if todo.any():
        small[todo] = push_pull_fill(col, wgt)[todo]
    small8 = np.clip(small + 0.5, 0, 255).astype(np.uint8)
    if channels == 4:
        small8 = cv2.cvtColor(small8, cv2.COLOR_RGB2RGBA)
    up = cv2.resize(small8, (w, h), dst=out, interpolation=cv2.INTER_LINEAR)
    if exemplar > 0 and sides != "all":
        by_bands(lambda sl: _row_exemplar(src[sl], hidden[sl], d[sl], up[sl], exemplar, margin=max(1, guard)),
                 h, rows=128)
    return up


def row_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The runs of True along the rows of ``mask`` (bool ``H x W``), in row-major order:
    ``(row, c0, c1)``, int arrays, each run covering columns ``c0 .. c1 - 1``. One pass over the
    mask (a False column on either side keeps runs in their row), then work per run, not per
    pixel."""
    h, w = mask.shape
    pad = np.zeros((h, w + 2), np.int8)
    pad[:, 1:-1] = mask
    # the changes alternate, a run's start then its stop (the padding closes every run in its
    # row): one scan finds both
    ends = np.flatnonzero(np.diff(pad.ravel()))
    starts = ends[0::2] + 1  # padded flat index of each run's first pixel
    stops = ends[1::2] + 1  # ... and one past its last
    row, c0 = np.divmod(starts, w + 2)
    c0 -= 1
    return row, c0, stops - row * (w + 2) - 1


def _row_exemplar(src: np.ndarray, hidden: np.ndarray, d: np.ndarray, out: np.ndarray, weight: float,
                  margin: int = 1) -> None:
    """Mix the background-side row exemplar (see :func:`background_fill`) into ``out`` (uint8
    RGB or RGBA, in place) on the ``hidden`` pixels. Works on runs of hidden pixels along the rows:
    each run takes the side (left or right neighbour) of smaller disparity, the background. The
    pixels are taken run by run from the background's edge inwards (the ``k``-th mixes the
    first background pixel past the guard with the one ``k - 1`` further), only as many as
    have that mirror in the row: per-run work where it can be, int32 indices."""
    h, w = hidden.shape
    row, c0, c1 = row_runs(hidden)  # c0: the run's first hidden column, c1: the column after it
    if row.size == 0:
        return
    base = row * w
    flat_d = d.reshape(-1)
    dl = np.where(c0 > 0, flat_d[base + np.maximum(c0 - 1, 0)], np.inf)
    dr = np.where(c1 < w, flat_d[base + np.minimum(c1, w - 1)], np.inf)
    right = dr <= dl  # the background is on the right of the run
    # per run: the first background pixel (edge), the first one past the guard (a): the pixel
    # k from the edge mixes a with its mirror a + (k - 1) away from the run
    sgn = np.where(right, 1, -1)
    edge = np.where(right, c1, c0 - 1)
    a = edge + sgn * margin
    # the pixels k = 1 .. m of a run whose mirror stays in the row (b = a + sgn (k - 1))
    m = np.minimum(c1 - c0, np.where(right, w - a, a + 1))
    ok = np.isfinite(np.minimum(dl, dr)) & (a >= 0) & (a < w) & (m > 0)
    flat_h = hidden.reshape(-1)
    ok[ok] = ~flat_h[(base + a)[ok]]
    if not ok.any():
        return
    m, sgn = m[ok], sgn[ok]
    ity = np.int32 if hidden.size < 2**31 - 1 else np.int64
    fe = (base + edge)[ok].astype(ity)
    fa = (base + a)[ok].astype(ity)
    nn = int(m.sum())
    # sgn * k for every pixel: run by run k = 1 .. m
    sk = np.ones(nn, ity)
    starts = np.cumsum(m) - m
    sk[starts[1:]] = 1 - m[:-1]  # (a running sum restarts at 1 at each run)
    np.cumsum(sk, out=sk)
    s_rep = np.repeat(sgn.astype(ity), m)
    sk *= s_rep
    ft = np.repeat(fe, m)
    ft -= sk
    fb = np.repeat(fa - sgn.astype(ity), m)
    fb += sk
    keep = ~flat_h[fb]
    run = np.repeat(np.arange(m.size, dtype=ity), m)
    fa_p, fb, ft = fa[run[keep]], fb[keep], ft[keep]
    s3 = src.reshape(-1, 3)
    if not s3.flags.c_contiguous:  # (the RGB of an RGBA photo)
        s3 = np.ascontiguousarray(s3)
    ex = take_px(s3, fa_p).astype(np.float32)
    ex += take_px(s3, fb)
    ex *= np.float32(0.5 * weight)
    op = out.reshape(-1, out.shape[2])  # RGB, or RGBA: its alpha written back as it was
    px = take_px(op, ft)
    ex += px[:, :3] * np.float32(1.0 - weight)
    ex += np.float32(0.5)
    px[:, :3] = ex.astype(np.uint8)
    if np.shares_memory(op, out):
        put_px(op, ft, px)
    else:
        op[ft] = px
        out[...] = op.reshape(out.shape)


def background_layer(image: np.ndarray, hidden: np.ndarray) -> np.ndarray:
    """The photo with the ``hidden`` pixels replaced by inpainted background (uint8 RGB)."""
    return make_layers(image, hidden).back.copy()


def _fill_row_holes(xs: np.ndarray, far_edge: np.ndarray | None = None,
                    runs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Holes (-inf) take the farther (smaller) disparity of the nearest landed pixels left and
    right in their row: a disocclusion shows what is behind. A run of holes that reaches the
    row's right end takes the farther of its left neighbour's and ``far_edge`` (float32 ``H``,
    the disparity past the edge: :func:`border_far`; None: its left neighbour's). Works on
    runs of holes (a few per row), not pixels. Returns (source x, hole mask); ``xs`` is
    filled in place. ``runs``: :func:`row_runs` of the holes, when the caller has them."""
    h, w = xs.shape
    hole = np.isneginf(xs)
    if not hole.any():
        return xs, hole
    row, c0, c1 = row_runs(hole) if runs is None else runs  # c0: a run's first hole, c1: the column after its last
    flat = xs.reshape(-1)
    base = row * w
    lv = np.where(c0 > 0, flat[base + np.maximum(c0 - 1, 0)] - (c0 - 1), np.inf)
    rv = np.where(c1 < w, flat[base + np.minimum(c1, w - 1)] - c1, np.inf)
    if far_edge is not None:
        rv = np.where(c1 < w, rv, np.asarray(far_edge, np.float32)[row])
    fill = np.minimum(lv, rv)
    fill[~np.isfinite(fill)] = 0.0
    # expand the runs to their pixels (cheaper than scanning the mask again with np.nonzero)
    lens = c1 - c0
    offs = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
    hx = np.repeat(c0, lens) + offs
    idx = np.repeat(base + c0, lens) + offs
    if np.shares_memory(flat, xs):
        flat[idx] = hx + np.repeat(fill, lens)
    else:  # reshape made a copy: xs is not C-contiguous
        xs[np.divmod(idx, w)] = hx + np.repeat(fill, lens)
    return xs, hole



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


def _run_min(a: np.ndarray, empty: np.ndarray) -> np.ndarray:
    """For every ``empty`` cell (row-major order), the smaller of the two known values that
    bound its run of empty cells along the row (inf where the run reaches the row's end on
    that side). Works on runs (a few per row), not cells."""
    h, w = a.shape
    row, c0, c1 = row_runs(empty)  # c0: a run's first empty column, c1: the column after it
    flat = a.reshape(-1)
    base = row * w
    lv = np.where(c0 > 0, flat[base + np.maximum(c0 - 1, 0)], np.inf)
    rv = np.where(c1 < w, flat[base + np.minimum(c1, w - 1)], np.inf)
    return np.repeat(np.minimum(lv, rv).astype(np.float32), c1 - c0)


def _min_fill(a: np.ndarray, empty: np.ndarray, *, rows: bool = True, cols: bool = True) -> np.ndarray:
    """Fill ``empty`` cells with the farthest (smallest) of the nearest known values along rows
    (left, right) and/or columns (up, down): a disocclusion lies between a near and a far
    surface, along the direction of motion, and shows the far one (the rule of standard DIBR
    hole filling, in two dimensions). ``a``: float32 ``H x W``; ``empty``: bool ``H x W``.
    Works on runs of empty cells (columns as the rows of the transposed arrays), so the cost
    follows the holes, not the image: twice as fast as a scan of every line."""
    if not empty.any():
        return a
    best = _run_min(a, empty) if rows else None
    if cols:
        et = cv2.transpose(empty.view(np.uint8)).view(bool)
        full = np.full(et.shape, np.inf, np.float32)
        full[et] = _run_min(cv2.transpose(a), et)
        v = cv2.transpose(full)[empty]
        best = v if best is None else np.minimum(best, v)
    if not np.isfinite(best).all():  # a hole with no known cell on its scan lines
        if rows and cols:
            best[~np.isfinite(best)] = 0.0
        else:
            return _min_fill(a, empty, rows=True, cols=True)
    out = a.copy()
    out[empty] = best
    return out
