"""Stereo: exact horizontal warps of a photo by its disparity.

Each output pixel's source x comes from the row rasteriser (:mod:`.raster`); disocclusions
take the farther side's disparity and read the background layer (:mod:`.holefill`); the
photo is resampled by backward warping (``cv2.remap``), one remap over the stacked layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import ParameterError
from .common import (COLUMN_STRETCH, COLUMN_STRETCH_PX, FAR_DEMIX, FAR_EXTEND, FAR_STRETCH, FAR_STRETCH_PX,
                     GAP_EXTEND, GAP_SOFT, INTERP, JUMP_PX, NEAR_EXTEND, NEAR_SOFT, ROW_LEAN, ROW_LEAN_PX,
                     ROW_LEAN_REACH, ROW_LEAN_ROWS, ROW_SOFT, by_bands, layer_channels, put_px,
                     resolve_interpolation, rgb, take_px)
from .holefill import Layers, _fill_row_holes, _finite, border_far, guard_px, hidden_mask, make_layers, row_runs
from .holefill import edge_far as _edge_far
from .raster import _row_sources


@dataclass
class View:
    """A synthesised view: ``image`` uint8 RGB, ``filled`` bool (disocclusions that were
    invented), ``disparity`` float32 (each output pixel's disparity, holes: the background's)."""

    image: np.ndarray
    filled: np.ndarray
    disparity: np.ndarray


def _row_maps(d: np.ndarray, direction: int, tau: float, near_extend: float, far_extend: float,
              offset: int = 0, *, layers: Layers | None = None, interp: int = cv2.INTER_LINEAR,
              keep_map_y: bool = True, as_disparity: bool = False, gap_extend: float | None = None,
              edge_far: np.ndarray | None = None, gap_soft: float | None = None, near_soft: float | None = None,
              far_stretch: float = 0.0, far_stretch_px: float = FAR_STRETCH_PX, far_demix: float = 0.0,
              row_lean: float = 0.0):
    """(map_x, map_y, filled, image) of a horizontal warp, computed in row bands; ``map_y``
    points the filled pixels ``offset`` rows down (into the background layer of a
    :class:`Layers`). With ``layers``, each band is also resampled as soon as its maps exist
    (``image``, uint8 RGB; the maps stay in cache, and no full-size ``map_y`` is needed:
    ``keep_map_y=False`` returns None for it). ``as_disparity``: ``map_x`` holds each output
    pixel's disparity (the source's distance from it) instead of its source x. ``edge_far``:
    :func:`~.holefill.edge_far` of ``d`` for this view's side, when the caller has it.
    ``row_lean``: the share of :func:`_row_lean` (with ``layers``; 0: none)."""
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
    q = np.arange(w, dtype=np.float32)[None, :]
    off = np.float32(offset)

    def band(sl):
        # the edge the view moves towards is a drop to the row's background (border_far)
        dm = d[sl] if direction < 0 else np.ascontiguousarray(d[sl, ::-1])  # mirrored: x + d is x' - d
        far = edge_far[sl] if edge_far is not None else border_far(dm, tau)
        xs = _row_sources(dm, tau, near_extend, far_extend, gap_extend=gap_extend)
        runs = row_runs(np.isneginf(xs))  # (once for the fill and the stretch)
        xs, hole = _fill_row_holes(xs, far, runs)
        # the soft edges of near surfaces (holes as -inf: what they may draw over)
        soft = (_soft_edges(dm, np.where(hole, -np.inf, xs), tau,
                            None if gap_soft is None or gap_extend is None else (gap_extend, gap_soft),
                            None if near_soft is None else (near_extend, near_soft))
                if layers is not None and (gap_soft is not None or near_soft is not None) else None)
        stretch = (_background_stretch(hole, xs, far_stretch, far_stretch_px, far_demix, runs)
                   if layers is not None and (far_stretch > 0 or far_demix > 0) else None)
        # the strip that enters beside an object cut by the edge (the run of holes that ends
        # each object row): see _edge_strip
        strip = _edge_strip(hole, far) if layers is not None else None
        ends = _lean_ends(xs, runs, sl.start, tau, far) if layers is not None and row_lean > 0 else None
        if direction > 0:
            xs, hole = (w - 1) - xs[:, ::-1], hole[:, ::-1]
            strip = strip[:, ::-1] if strip is not None else None
        if not as_disparity:
            map_x[sl] = xs
        elif direction < 0:
            np.subtract(xs, q, out=map_x[sl])
        else:
            np.subtract(q, xs, out=map_x[sl])
        filled[sl] = hole
        if map_y is None and layers is None:
            return
        my = map_y[sl] if map_y is not None else np.empty(xs.shape, np.float32)
        np.multiply(hole, off, out=my)  # (np.add(..., where=) is ten times slower)
        my += np.arange(sl.start, sl.stop, dtype=np.float32)[:, None]
        if layers is not None:  # (xs: this band's map, contiguous and in cache)
            stack = layers.stack
            if stack.shape[0] >= REMAP_MAX:  # a photo over 16383 rows: its rows of both layers alone
                n = sl.stop - sl.start
                stack = np.concatenate([stack[sl], stack[sl.start + layers.offset:sl.stop + layers.offset]])
                my = hole * np.float32(n) + np.arange(n, dtype=np.float32)[:, None]
            if four:
                px = cv2.remap(stack, xs, my, interp, borderMode=cv2.BORDER_REPLICATE)
                cv2.cvtColor(px, cv2.COLOR_RGBA2RGB, dst=image[sl])
            else:
                cv2.remap(stack, xs, my, interp, dst=image[sl], borderMode=cv2.BORDER_REPLICATE)
            if soft is not None:  # the occluder's soft edge, faded over what the warp drew there
                r, c, src, wgt = soft
                if direction > 0:
                    c, src = (w - 1) - c, (w - 1) - src
                _blend(image[sl], layers, r, c, src, wgt, sl.start, interp)
                fb = filled[sl].reshape(-1)  # (flat indices: a view of the band's rows)
                fb[(r * w + c)[wgt > 0.5]] = False  # mostly the photo: not invented
            if stretch is not None:  # the background's first clean pixel, a little way into each hole
                r, c, src, wgt, edge = stretch
                if direction > 0:
                    c, src = (w - 1) - c, (w - 1) - src
                still = filled[sl].reshape(-1)[r * w + c] | edge  # (not where the soft edge drew mostly the photo)
                _blend(image[sl], layers, r[still], c[still], src[still], wgt[still], sl.start, interp)
            if strip is not None and strip.any():
                ys, xx = np.nonzero(strip)
                edge = layers.stack[sl.start + ys, w - 1 if direction < 0 else 0, :3].astype(np.uint16)
                o3, f = image[sl].reshape(-1, 3), ys * w + xx
                put_px(o3, f, ((take_px(o3, f) + edge + 1) >> 1).astype(np.uint8))
        return ends

    ends = [e for e in by_bands(band, h) if e is not None]
    if ends:
        # the runs of holes lean towards the background at their ends: the runs of every band
        # together, in chunks of LEAN_RUNS in parallel (the work per call, not per pixel, is
        # what costs; each run writes only its own pixels)
        ends = [np.concatenate(a) for a in zip(*ends)]
        o3, fl = image.reshape(-1, 3), filled.reshape(-1)

        def lean(k):
            got = _row_lean(*(a[k] for a in ends), d=d, photo=layers.stack, direction=direction, tau=tau,
                            weight=row_lean)
            if got is None:
                return
            r, c, tgt, wgt = got
            if direction > 0:
                c = (w - 1) - c
            f = r * w + c
            wgt *= fl[f]  # (not where the soft edge drew mostly the photo: unchanged)
            px = take_px(o3, f).astype(np.float32)
            tgt -= px  # px + wgt (tgt - px), rounded
            tgt *= wgt[:, None]
            px += tgt
            px += np.float32(0.5)
            put_px(o3, f, np.clip(px, 0, 255).astype(np.uint8))

        by_bands(lean, ends[0].size, rows=LEAN_RUNS)
    return map_x, map_y, filled, image


def _soft_edges(d: np.ndarray, xs: np.ndarray, tau: float, gap: tuple[float, float] | None,
                near: tuple[float, float] | None = None):
    """The soft edges of near surfaces beyond their hard footprint: ``(rows, cols, src, weight)``
    of the output pixels they reach, each to be drawn as ``weight`` x the photo at ``src`` over
    what the hard warp drew there (for the view ``t = x - d``; ``d`` float32 ``H x W``, ``xs``
    the source x of every output pixel of the hard warp, -inf for holes), or None.

    ``gap`` = ``(hard, soft)``: over a disocclusion (the near pixel left of a drop), the edge
    fades linearly from ``hard`` px past the near pixel's position (weight 1) to ``soft`` px
    (weight 0); ``near``: the same over the far side at a rise (the near pixel on the right).
    Where several edges reach one pixel the nearest wins; a pixel the hard warp drew from a
    nearer surface is left alone. A real edge is not a step: blur and anti-aliasing spread it
    over a few pixels, and where it lies to the pixel is uncertain; the fade draws it with the
    coverage a box ``soft - hard`` px wide would give (boundary matting with a linear alpha:
    Zitnick et al., "High-quality video view interpolation using a layered representation",
    SIGGRAPH 2004)."""
    h, w = d.shape
    parts = []
    rise = d[:, 1:] - d[:, :-1]  # (once for both sides: a drop is a rise below -tau)
    for which, sign in ((gap, 1), (near, -1)):
        if which is None or which[1] <= which[0]:
            continue
        hard, soft = which
        e = np.flatnonzero(rise < -tau if sign > 0 else rise > tau)  # gap: drops, the near pixel on the left
        if e.size == 0:
            continue
        row, x = np.divmod(e, w - 1)
        if sign < 0:
            x = x + 1  # the near pixel is on the right of a rise
        t = x - d[row, x]
        # the first output pixel the hard part does not cover, then outwards
        q0 = np.ceil(t + hard).astype(np.int64) if sign > 0 else np.ceil(t - hard).astype(np.int64) - 1
        for k in range(int(np.ceil(soft - hard)) + 1):
            q = q0 + sign * k
            u = (q - t) * sign
            ok = (u < soft) & (q >= 0) & (q < w)
            if ok.any():
                parts.append((row[ok], q[ok], (x[ok] + sign * u[ok]).astype(np.float32),
                              ((soft - u[ok]) / (soft - hard)).astype(np.float32)))
    if not parts:
        return None
    rows, cols, src, wgt = (np.concatenate(a) for a in zip(*parts))
    flat = rows * w + cols
    # the nearest edge wins each pixel (the largest source x: see raster._row_sources), the
    # first one listed among equals; the pixels in row-major order (a scatter of the maxima,
    # then of the first index that reaches one: no sort)
    n = flat.size
    best = np.full(h * w, -np.inf, np.float32)
    np.maximum.at(best, flat, src)
    win = np.flatnonzero(src == best[flat])
    first = np.full(h * w, n, np.int64)
    np.minimum.at(first, flat[win], win)
    flat = np.flatnonzero(first < n)
    pick = first[flat]
    src, wgt = src[pick], wgt[pick]
    keep = src > xs.reshape(-1)[flat]  # a hole (-inf), or a farther surface the hard warp drew
    if not keep.any():
        return None
    r, c = np.divmod(flat[keep], w)
    return r, c, src[keep], wgt[keep]


LEAN_RUNS = 32768  # runs of holes per chunk of _row_lean (in parallel)
BLEND_COLS = 4096  # points per row of _blend's remap grid
SOFT_ROWS_BATCH = 16384  # points per batch of _soft_rows' blend (a remap each, the batches in parallel)
COLUMN_BAND_HOLES = 16384  # holes per row band of _column_stretch (at least 16 rows)
REMAP_MAX = 32767  # cv2.remap: source and maps under this many rows and columns (SHRT_MAX)


def _blend(out: np.ndarray, layers: Layers, r: np.ndarray, c: np.ndarray, src: np.ndarray, wgt: np.ndarray,
           row0: int, interp: int, rows: tuple[int, int] | None = None) -> None:
    """``out[r, c]`` (uint8 RGB, a band starting at photo row ``row0``) moved ``wgt`` of the way
    towards the photo at ``(src, row0 + r)``, in place. ``rows``: the photo rows ``(first,
    last)`` the read is clamped to (its border replicated past them); None: the points' own."""
    if r.size == 0:
        return
    # the points as a grid of BLEND_COLS columns: cv2.remap's maps are under 32767 a side, and
    # a band of noisy depth (or a 64 x 20000 strip) has more soft-edge pixels than that
    n = r.size
    cols = min(n, BLEND_COLS)
    nrows = -(-n // cols)
    mx = np.zeros(nrows * cols, np.float32)
    my = np.full(nrows * cols, np.float32(row0), np.float32)
    mx[:n] = src
    my[:n] = row0 + r
    # (the photo's rows read, alone: with the background layer under it a tall photo's stack
    # is over remap's 32767 rows; only those the filters reach, lanczos 4 rows either way, and
    # within the clamp, so that a point reads the same pixels in whichever batch it comes)
    ylo, yhi = int(my[:n].min()), int(my[:n].max())
    top, bottom = (ylo, yhi) if rows is None else rows
    top, bottom = max(top, ylo - 4), min(bottom, yhi + 4)
    my -= np.float32(top)
    px = cv2.remap(layers.stack[top:bottom + 1], mx.reshape(nrows, cols), my.reshape(nrows, cols),
                   interp, borderMode=cv2.BORDER_REPLICATE).reshape(nrows * cols, -1)[:n, :3].astype(np.float32)
    # (flat indices into the band's pixels: a third of the time of (row, column) pairs)
    o3 = out.reshape(-1, out.shape[2]) if out.flags.c_contiguous else None
    flat = r * out.shape[1] + c if o3 is not None else None
    under = (take_px(o3, flat) if o3 is not None else out[r, c]).astype(np.float32)
    px -= under  # under + wgt (px - under) + 0.5, rounded: the same operations in place
    px *= wgt[:, None]
    px += under
    px += np.float32(0.5)
    np.clip(px, 0, 255, out=px)
    if o3 is not None:
        put_px(o3, flat, px.astype(np.uint8))
    else:
        out[r, c] = px.astype(np.uint8)


def _background_stretch(hole: np.ndarray, xs: np.ndarray, weight: float, length: float, edge_weight: float = 0.0,
                        runs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None):
    """Each run of holes (for the view ``t = x - d``: the background is on its right) leans
    towards the background's first clean pixel, the photo one pixel past what the first
    visible pixel beside it reads (that one is mixed with the occluder: see
    :func:`~.holefill.source_mask`): ``weight`` at the hole's last pixel, fading to none
    ``length`` px into it. The fill is the local average of the background; next to its edge
    the background's own pixel is the likelier colour (the stretch of DIBR hole filling, iw3's
    too, mixed in rather than alone). ``edge_weight``: the same share in the first visible
    pixel itself, the mixed one: the occluder that tinted it has moved away in the new view
    (the ghost contours that view synthesis's boundary filtering removes). ``(rows, cols, src,
    weight, edge)`` of the pixels (``edge``: that first visible pixel), or None. ``runs``:
    :func:`~.holefill.row_runs` of ``hole``, when the caller has them. The default ``weight``
    (``FAR_STRETCH``) is 0 since the eighth round: :func:`_row_lean` took its place."""
    h, w = hole.shape
    row, c0, c1 = row_runs(hole) if runs is None else runs  # c1: the first visible pixel after each run
    keep = c1 < w
    row, c0, c1 = row[keep], c0[keep], c1[keep]
    if row.size == 0:
        return None
    m = int(np.ceil(length)) if weight > 0 else 0  # (weight 0, the default: the edge pixels only)
    n = np.minimum(c1 - c0, m)  # the run's last n pixels
    run = np.repeat(np.arange(n.size), n)
    k = np.arange(run.size) - np.repeat(np.cumsum(n) - n, n) + 1  # 1 = the hole's last pixel
    if edge_weight > 0:  # and the first visible pixel itself (k = 0)
        run = np.concatenate([run, np.arange(n.size)])
        k = np.concatenate([k, np.zeros(n.size, k.dtype)])
    r, cc = row[run], c1[run]
    src = (xs[r, cc] + np.float32(1.0)).astype(np.float32)
    wgt = (np.float32(weight) * np.clip(1.0 - (k - 1) / np.float32(length), 0.0, 1.0)).astype(np.float32)
    wgt[k == 0] = edge_weight
    ok = wgt > 0
    return r[ok], (cc - k)[ok], src[ok], wgt[ok], (k == 0)[ok]


# the occluder's share (a) over which _unmixed goes from the pixel to the clean one: a camera's
# edge (Gaussian blur sigma 0.5 px) leaves ~16 % of the occluder in the first background pixel,
# which 0.05 .. 0.25 kept at 45 % (a white occluder's fill 2 levels brighter than a black one's);
# 0.03 .. 0.12 reads it clean, the texture's noise (a ~0.03 at 6 levels) still the pixel
MIXED_FROM, MIXED_TO = 0.03, 0.12


def _unmixed(occ: np.ndarray, px: np.ndarray, clean: np.ndarray, mixed: np.ndarray) -> np.ndarray:
    """``px`` (float32 ``N x 3``), or where it is mixed with the occluder beside it, the
    ``clean`` background pixel past it: the occluder's share ``a`` in ``px`` is the projection
    of ``px - clean`` on ``occ - clean`` (the colour line through the occluder and the
    background, as in alpha matting: Levin et al., "A closed-form solution to natural image
    matting", CVPR 2006); the result moves from ``px`` (``a`` <= ``MIXED_FROM``) to ``clean``
    (``a`` >= ``MIXED_TO``), only where ``mixed`` (bool ``N``: the pixel beside it is nearer).
    Always a mix of the two background pixels, never a colour of its own: subtracting the
    estimated share instead (``px - a (occ - clean)``) put the occluder's complementary hue
    into a textured grey background (chroma 7 behind a magenta object). On an anti-aliased
    edge (``a`` about 0.5) this reads the clean pixel, so a white and a black occluder give the
    same fill; on a sharp edge, the nearest background there is."""
    step = occ - clean
    a = ((px - clean) * step).sum(1) / np.maximum((step * step).sum(1), np.float32(1e-6))
    b = np.clip((a - np.float32(MIXED_FROM)) / np.float32(MIXED_TO - MIXED_FROM), 0, 1)
    b *= mixed
    return px + b[:, None] * (clean - px)


def _read_row(photo: np.ndarray, w: int, y: np.ndarray, x: np.ndarray, direction: int) -> tuple[np.ndarray, np.ndarray]:
    """The photo (its pixels as rows: uint8 ``H*W x C``, C >= 3, row-major; ``w`` its width) at
    rows ``y`` (int) and columns ``x`` (float32, in the frame of :func:`_row_maps`' rows:
    mirrored when ``direction > 0``), read linearly along the row and clamped to it: ``(rgb
    float32 N x 3, the nearest photo column)``."""
    x0 = np.floor(x)
    f = (x - x0).astype(np.float32)[:, None]
    a = np.clip(x0, 0, w - 1).astype(np.int64)
    b = np.clip(x0 + 1, 0, w - 1).astype(np.int64)
    n = np.clip(np.rint(x), 0, w - 1).astype(np.int64)
    if direction > 0:
        a, b, n = (w - 1) - a, (w - 1) - b, (w - 1) - n
    base = y * w
    pa = take_px(photo, base + a)[:, :3].astype(np.float32)
    pa += f * (take_px(photo, base + b)[:, :3].astype(np.float32) - pa)
    return pa, n


def _lean_ends(xs: np.ndarray, runs: tuple[np.ndarray, np.ndarray, np.ndarray], row0: int, tau: float,
               far: np.ndarray | None = None):
    """The runs of holes of a band of :func:`_row_maps` (``xs``: the source x of every output
    pixel, holes filled; ``runs``: :func:`~.holefill.row_runs` of the holes; for the view
    ``t = x - d``) and the ends of each that :func:`_row_lean` may read: ``(rows, c0, c1,
    disparity, right source x, left source x, right counts, left counts)``, ``rows`` in the
    photo (the band starts at ``row0``). An end counts where the visible pixel beside the run
    is on the run's surface (disparity within ``tau``); its source x is where it reads the
    photo. ``far``: :func:`~.holefill.border_far` of the band's rows; the strip that enters
    beside an object cut by the frame edge (:func:`_edge_strip`) keeps its mean of the
    object and the background, and does not lean."""
    h, w = xs.shape
    row, c0, c1 = runs
    flat = xs.reshape(-1)
    base = row * w
    dh = flat[base + c0] - c0  # the run's disparity (the background's: _fill_row_holes)
    t32 = np.float32(tau)
    sr = flat[base + np.minimum(c1, w - 1)]
    sl = flat[base + np.maximum(c0 - 1, 0)]
    on_r = (c1 < w) & (np.abs(sr - np.minimum(c1, w - 1) - dh) <= t32)
    on_l = (c0 > 0) & (np.abs(sl - np.maximum(c0 - 1, 0) - dh) <= t32)
    if far is not None:
        on_l &= (c1 < w) | ~np.isfinite(far[row])
    keep = on_r | on_l
    if not keep.any():
        return None
    return row[keep] + row0, c0[keep], c1[keep], dh[keep], sr[keep], sl[keep], on_r[keep], on_l[keep]


def _row_lean(row: np.ndarray, c0: np.ndarray, c1: np.ndarray, dh: np.ndarray, src_r: np.ndarray,
              src_l: np.ndarray, on_r: np.ndarray, on_l: np.ndarray, *, d: np.ndarray, photo: np.ndarray,
              direction: int, tau: float, weight: float, length: float = ROW_LEAN_PX, rows: int = ROW_LEAN_ROWS,
              reach: int = ROW_LEAN_REACH):
    """Each run of holes leans towards the visible background at its ends: ``(rows, cols,
    target float32 N x 3, weight float32 N)`` of the hole pixels, or None; the runs and their
    ends as :func:`_lean_ends` gives them (for the view ``t = x - d``, columns mirrored when
    ``direction > 0``); ``d`` the photo's disparity, float32 ``H x W``, unmirrored; ``photo``
    uint8 ``H' x W x C`` (C >= 3, C-contiguous) whose first ``H`` rows are the photo (the
    :class:`Layers` stack).

    An end counts where the visible pixel beside the run is on the run's own surface
    (disparity within ``tau``): the background's side of a disocclusion, and the other side
    too where the hole lies inside one surface; never an occluder. Its colour is the photo
    where that pixel is read, the nearest background to the hole, or where a colour step
    says it is mixed with the occluder beside it, the first clean pixel past it (``guard_px``
    further: :func:`_unmixed`), averaged over ``rows`` rows above and below where the photo
    is that surface with no nearer pixel between the clean pixel and the hole (single rows'
    texture averaged out). The run's pixels take the inverse-distance mean of the ends that
    count, ``weight * length / (length + k - 1)`` of the way, ``k`` px from the nearest such
    end: the background beside a hole is the likelier colour near it, and it goes on further
    into the hole than the fill's local average says (a share of the stretch of DIBR hole
    filling, iw3's too; the sixth round's row interpolation, which read the first visible
    pixel as it is and so took in the occluder's share: docs/rendering.md, eighth round).
    Per run, then per hole pixel (its inverse-distance mix): the cost follows the holes."""
    if row.size == 0:
        return None
    h, w = d.shape
    photo = photo.reshape(-1, photo.shape[-1])[:h * w]  # (its pixels as rows: np.take is fast)
    g = guard_px(w)
    t32 = np.float32(tau)
    n = row.size
    # the ends that count (the runs' right ends, then their left ones), all at once
    which = np.flatnonzero(np.concatenate([on_r, on_l]))  # (index into [right ends, left ends])
    er = row[which % n]
    src = np.concatenate([src_r, src_l])[which]
    dr = dh[which % n]
    side = np.where(which < n, 1, -1)
    # every row within ``rows`` of each end, as one flat array (rows x ends), narrowed to the
    # points whose clean pixel passes before any colour is read (noisy depth: most rows beside
    # an end are another surface)
    k = er.size
    nr = 2 * rows + 1
    y = (er[None, :] + np.arange(-rows, rows + 1)[:, None]).reshape(-1)
    p = np.flatnonzero((y >= 0) & (y < h))  # (the points: index into rows x ends)
    e = p % k  # (each point's end)
    y, sd, dv = y[p], side[e], dr[e]
    sf = sd.astype(np.float32)
    cx = src[e] + sf * np.float32(g)  # the clean pixel
    # the clean pixel: both its columns on the surface, none nearer between it and the hole
    df = d.reshape(-1)
    x0 = np.floor(cx).astype(np.int64)
    s0 = np.where(sd > 0, x0, x0 + 1)  # its column nearer the hole (kk = 0); kk px further from it
    base = y * w
    ok = np.ones(y.size, bool)
    for kk in (0, 1, *range(-1, -g - 1, -1)):  # (kk < 0: the g columns before it, towards the hole)
        xk = s0 + kk * sd
        np.clip(xk, 0, w - 1, out=xk)
        if direction > 0:
            np.subtract(w - 1, xk, out=xk)
        xk += base
        dk = np.take(df, xk)
        dk -= dv
        ok &= (np.abs(dk) <= t32) if kk >= 0 else (dk <= t32)
    p, e, y, sd, dv, sf, cx = p[ok], e[ok], y[ok], sd[ok], dv[ok], sf[ok], cx[ok]
    col, _ = _read_row(photo, w, y, cx, direction)
    # the end's own pixel where this row has it on the surface (unless mixed), else the clean one
    xs_ = src[e]
    npx = np.clip(np.rint(xs_), 0, w - 1).astype(np.int64)
    on = np.abs(np.take(df, y * w + ((w - 1) - npx if direction > 0 else npx)) - dv) <= t32
    if on.any():
        yo, xo, so, do = y[on], xs_[on], sf[on], dv[on]
        px, _ = _read_row(photo, w, yo, xo, direction)
        occ, nocc = _read_row(photo, w, yo, xo - so, direction)
        col[on] = _unmixed(occ, px, col[on], np.take(df, yo * w + nocc) > do + t32)
    cnt = np.bincount(e, minlength=k)
    valid = np.zeros(k, bool)
    valid[e[p // k == rows]] = True  # the end's own row
    tgt = np.stack([np.bincount(e, weights=col[:, c], minlength=k) for c in range(3)], 1).astype(np.float32)
    tgt /= np.maximum(cnt, 1)[:, None].astype(np.float32)
    # per run: the colour of each end that counts
    okr = np.zeros(2 * n, bool)
    okr[which[valid]] = True
    ends = np.zeros((2 * n, 3), np.float32)
    ends[which[valid]] = tgt[valid]
    use = okr[:n] | okr[n:]
    if not use.any():
        return None
    rr, a, b = row[use], c0[use], c1[use]
    okR, okL = okr[:n][use], okr[n:][use]
    tR, tL = ends[:n][use], ends[n:][use]
    # the pixels within ``reach`` of an end that counts: from the left end, then from the right
    # one those not taken yet (each run's pixels once); k: the distance to that end
    m = b - a
    nl = np.where(okL, np.minimum(m, reach), 0)
    cnt = nl + np.where(okR, np.minimum(m - nl, reach), 0)
    run_px = np.repeat(np.arange(m.size), cnt)
    k = np.arange(run_px.size) - np.repeat(np.cumsum(cnt) - cnt - 1, cnt)  # 1 .. cnt within each run
    nlr = nl[run_px]
    left = k <= nlr
    k[~left] -= nlr[~left]
    q = np.where(left, a[run_px] - 1 + k, b[run_px] - k)  # each pixel's column
    both = okR & okL
    if not both.any():  # (one end per run: its colour)
        target = np.repeat(np.where(okR[:, None], tR, tL), cnt, axis=0)
        near = k
    else:  # the inverse-distance mean: the share of the right end (1 or 0 where one end counts)
        dR = (b[run_px] - q).astype(np.float32)  # px to the right end (1 at the run's last pixel)
        dL = (q - a[run_px] + 1).astype(np.float32)
        bp = both[run_px]
        sR = np.where(bp, dL / (dL + dR), okR[run_px]).astype(np.float32)
        target = np.repeat(tL, cnt, axis=0)
        target += sR[:, None] * np.repeat(tR - tL, cnt, axis=0)
        near = np.where(bp, np.minimum(dR, dL).astype(k.dtype), k)
    table = (np.float32(weight * length) / (np.float32(length - 1) + np.arange(1, reach + 1, dtype=np.float32)))
    return np.repeat(rr, cnt), q, target, table[near - 1]


def _edge_strip(hole: np.ndarray, far: np.ndarray) -> np.ndarray:
    """The run of holes that ends each row where an object touches the edge (``far`` finite,
    :func:`~.holefill.border_far`): bool, the shape of ``hole``.

    What enters there is either the background behind the object (the object ends just past
    the edge) or more of the object (it goes on): the photo cannot tell. The strip shows the
    mean of the two, the background layer's read and the object's edge pixel. Measured on
    the Middlebury pairs as photographed and cropped at 12 columns each (objects cut by the
    crop go on past it; `bench/bench_frame_crops.py`), the mean beats either alone on the
    strip: crops 16.89 dB pooled against 14.71 for the background and 16.06 for the object,
    as photographed 18.23 against 17.39 and 17.12. The yardstick's disoccluded pixels only
    count strip pixels whose truth is background: 21.38 dB mean there, against 21.48 for the
    background alone and 21.33 for the object."""
    rows = np.isfinite(far)
    out = np.zeros(hole.shape, bool)
    if rows.any():
        r = hole[rows, ::-1]
        out[rows] = np.logical_and.accumulate(r, axis=1)[:, ::-1]
    return out


def shift_sources(disparity: np.ndarray, *, direction: int = -1, tau: float = JUMP_PX,
                  near_extend: float = NEAR_EXTEND, far_extend: float = FAR_EXTEND,
                  gap_extend: float = GAP_EXTEND) -> tuple[np.ndarray, np.ndarray]:
    """Backward map of a horizontal warp: ``(source_x, filled)`` for every output pixel.

    ``direction=-1``: a pixel at x moves to ``x - d`` (the right view of a left photo);
    ``+1``: to ``x + d``. Disocclusions (``filled``) read the background at the background's
    disparity.
    """
    mx, _, filled, _ = _row_maps(_finite(disparity), direction, tau, near_extend, far_extend,
                                 keep_map_y=False, gap_extend=gap_extend)
    return mx, filled



def shift_view(image: np.ndarray, disparity: np.ndarray, *, direction: int = -1,
               layers: Layers | None = None, interpolation: str = "auto",
               tau: float = JUMP_PX, near_extend: float = NEAR_EXTEND,
               far_extend: float = FAR_EXTEND, gap_extend: float = GAP_EXTEND,
               edge_far: np.ndarray | None = None, gap_soft: float | None = GAP_SOFT,
               near_soft: float | None = NEAR_SOFT, row_soft: float = ROW_SOFT,
               far_stretch: float = FAR_STRETCH, far_demix: float = FAR_DEMIX,
               column_stretch: float = COLUMN_STRETCH, row_lean: float = ROW_LEAN,
               column_nearest: bool = True) -> View:
    """``image`` seen from a camera moved sideways: each pixel moves by ``-d`` (``direction=-1``,
    the right view) or ``+d``; nearer surfaces win; disocclusions are filled from the
    background layer of ``layers`` (built here when not given, see :func:`make_layers`).
    ``edge_far``: :func:`~.holefill.edge_far` of ``disparity`` for the side this view
    reveals (``right`` for ``direction=-1``), when the caller has it (computed otherwise).
    The shares that the filled pixels lean towards the visible background around them:
    ``row_lean`` (:func:`_row_lean`), ``far_stretch`` (:func:`_background_stretch`),
    ``column_stretch`` (:func:`_column_stretch`; ``column_nearest``: it reads the nearest
    visible row where it is not mixed with the occluder, False: always the row past it);
    ``far_demix``: the share of the clean pixel in the visible pixel beside a hole. Measured
    on the Middlebury yardstick: docs/rendering.md.

    ``image``: RGB, ``H x W x 3`` (uint8; other dtypes are read as 0..255 levels);
    ``disparity``: float ``H x W``, px. Raises :class:`ParameterError` for another shape
    (grey, RGBA), mismatched sizes, a side of 32767 px or more, an unknown interpolation."""
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:  # (grey or RGBA was a numpy broadcast error deep in make_layers)
        raise ParameterError(f"image must be RGB, H x W x 3; got shape {img.shape}", parameter="image",
                             hint="convert grey with np.dstack([g] * 3); composite RGBA over a background first")
    d = _finite(disparity)  # (NaN: the farthest, inf: the nearest; callers of the library may pass them)
    if img.shape[:2] != d.shape:
        raise ParameterError(f"disparity is {d.shape[1]}x{d.shape[0]} but the image is "
                             f"{img.shape[1]}x{img.shape[0]}", parameter="depth")
    if max(d.shape) >= REMAP_MAX:  # (cv2.remap's limit; a taller photo is warped by bands)
        raise ParameterError(f"image is {d.shape[1]}x{d.shape[0]}; view synthesis takes at most {REMAP_MAX - 1} px "
                             "a side (downscale it)", parameter="image")
    interpolation = resolve_interpolation(interpolation, d.size)
    if interpolation not in INTERP:
        raise ParameterError(f"unknown interpolation {interpolation!r}; auto or one of {', '.join(INTERP)}",
                             parameter="interpolation")
    if layers is None:
        sides = "right" if direction < 0 else "left"
        if edge_far is None:
            edge_far = _edge_far(d, sides, tau)
        layers = make_layers(img, hidden_mask(d, sides=sides, tau=tau, edge_far=edge_far),
                             channels=layer_channels(interpolation),
                             disparity=d, sides=sides, jump=tau)  # (the fill's depth layers: the same threshold)
    disp, _, filled, out = _row_maps(d, direction, tau, near_extend, far_extend, layers=layers,
                                     interp=INTERP[interpolation], keep_map_y=False, as_disparity=True,
                                     gap_extend=gap_extend, edge_far=edge_far, gap_soft=gap_soft,
                                     near_soft=near_soft, far_stretch=far_stretch, far_demix=far_demix,
                                     row_lean=row_lean)
    if row_soft:
        _soft_rows(out, filled, disp, layers, direction, tau, row_soft, INTERP[interpolation])
    if column_stretch > 0:
        _column_stretch(out, filled, disp, tau, column_stretch, COLUMN_STRETCH_PX, far_demix,
                        photo=layers.stack if column_nearest else None, source_d=d, direction=direction)
    return View(out, filled, disp)


def _column_stretch(out: np.ndarray, filled: np.ndarray, disp: np.ndarray, tau: float, weight: float,
                    length: int, demix: float = 0.0, *, photo: np.ndarray | None = None,
                    source_d: np.ndarray | None = None, direction: int = -1) -> None:
    """Filled pixels lean towards the visible background just above or below them, in place:
    the nearest pixel up and down the column within ``length`` rows that is not filled, and the
    one just past it, both on the hole's own surface (disparity within ``tau``), with ``weight``
    at the first row fading to none past ``length`` (the two sides averaged, the share at most
    ``weight``). The columns' counterpart of :func:`_row_lean`: a surface seen just above a
    hole usually goes on into it. With ``photo`` (uint8 ``H' x W x C``, C >= 3, C-contiguous,
    whose first ``H`` rows are the photo: the :class:`Layers` stack), its
    disparity ``source_d`` (float32 ``H x W``) and the view's ``direction``, the nearest pixel
    is read where it is clean and the one past it where a colour step says it is mixed with
    the occluder next to it in the photo (:func:`_unmixed`: a depth edge a row short labels a
    row of the occluder's colour as background, and the rows just above and below an occluder
    are blurred into it); without, always the one past it (as the fill's guard skips the
    first row; the eighth round's change: docs/rendering.md). ``demix``: the share of the
    pixel past it that the nearest row takes (it is tinted by the occluder that has moved
    away, as ``FAR_DEMIX`` along the rows). ``out`` uint8 RGB, ``filled`` bool, ``disp``
    float32 ``H x W``.

    Row bands in parallel, each reading the rows within ``length + 1`` of it; every pixel is
    read before any is written (the demixed pixels are read as clean ones by other holes)."""
    h, w = filled.shape
    near = _near_visible_rows(filled, length)
    t32 = np.float32(tau)
    # (the weights as the scalar loop made them: float64, then float32)
    wj = {j: np.float32(weight * (1.0 - (j - 1) / length)) for j in range(1, length + 1)}
    o3 = out.reshape(-1, 3)  # (a view of shift_view's image; a copy, written back, otherwise)
    if photo is not None:  # (pixels as rows: np.take is fast)
        ph, sdf = photo.reshape(-1, photo.shape[-1])[:h * w], source_d.reshape(-1)

    def band(sl):
        ys, xs = np.nonzero(near[sl])
        if ys.size == 0:
            return None
        ys += sl.start
        p = ys * w + xs  # flat indices of the holes
        fl, dv = filled.reshape(-1), disp.reshape(-1)
        own = dv[p]
        acc = np.zeros((ys.size, 3), np.float32)
        tot = np.zeros(ys.size, np.float32)
        dm = []
        for dy in (1, -1):
            cur = np.arange(ys.size)  # the holes whose pixels between are all still holes
            for j in range(1, length + 1):
                ny = ys[cur] + dy * j
                inside = (ny >= 0) & (ny < h)
                if not inside.all():
                    cur, ny = cur[inside], ny[inside]
                if cur.size == 0:
                    break
                q = p[cur] + dy * j * w
                nh = fl[q]
                hit, q, ny = cur[~nh], q[~nh], ny[~nh]  # the first visible pixel this way, and the
                ok = (ny + dy >= 0) & (ny + dy < h)  # one past it
                hit, q = hit[ok], q[ok]
                c = q + dy * w
                ok = ~fl[c]
                ok &= np.abs(dv[c] - own[hit]) <= t32
                ok &= np.abs(dv[q] - own[hit]) <= t32
                same, q, c = hit[ok], q[ok], c[ok]
                if same.size:
                    val = take_px(o3, c).astype(np.float32)
                    if photo is not None:  # the nearest pixel, unless mixed with the photo's pixel
                        # on the hole's side of its source (the occluder, where it is nearer)
                        qy, qx = np.divmod(q, w)
                        sx = qx + dv[q] if direction < 0 else qx - dv[q]
                        a = np.clip(qy - dy, 0, h - 1) * w + np.clip(np.rint(sx), 0, w - 1).astype(np.int64)
                        val = _unmixed(take_px(ph, a)[:, :3].astype(np.float32), take_px(o3, q).astype(np.float32),
                                       val, np.take(sdf, a) > own[same] + t32)
                    acc[same] += wj[j] * val
                    tot[same] += wj[j]
                    if j == 1 and demix > 0:  # the first visible row, beside the hole's top or bottom
                        dm.append((q, c))
                cur = cur[nh]
        m = tot > 0
        if not m.any():
            return None
        share = np.minimum(tot[m], np.float32(weight))[:, None]
        f = p[m]
        under = take_px(o3, f).astype(np.float32)
        new = np.clip(under + share * (acc[m] / tot[m][:, None] - under) + 0.5, 0, 255).astype(np.uint8)
        if dm:  # (a visible pixel is demixed at most once: from the hole above it, its pixel below
            # clean, or from the hole below it, that pixel a hole)
            v, c = (np.concatenate(a) for a in zip(*dm))
            seen = take_px(o3, v).astype(np.float32)
            dm = (v, np.clip(seen + np.float32(demix) * (take_px(o3, c) - seen) + 0.5, 0, 255).astype(np.uint8))
        return f, new, dm or None

    # bands of about COLUMN_BAND_HOLES holes (at least 16 rows): the per-band steps cost more than the
    # pixels where the holes are few
    rows = max(16, int(h * COLUMN_BAND_HOLES / max(1, np.count_nonzero(near))))
    done = [r for r in by_bands(band, h, rows=rows) if r is not None]
    for f, new, dm in done:  # (read before anything is written: the clean pixels are never filled ones)
        if dm is not None:
            put_px(o3, dm[0], dm[1])
        put_px(o3, f, new)
    if done and not np.shares_memory(o3, out):
        out[...] = o3.reshape(out.shape)


def _near_visible_rows(filled: np.ndarray, rows: int) -> np.ndarray:
    """The filled pixels with a pixel that is not filled within ``rows`` rows above or below
    (bool ``H x W``): a vertical erosion, so that the cost follows the holes' top and bottom
    rows, not their area (a sixth of a 12 MP photo filled behind near blocks)."""
    k = np.ones((2 * rows + 1, 1), np.uint8)
    f8 = filled.view(np.uint8)
    inner = cv2.erode(f8, k, borderType=cv2.BORDER_CONSTANT, borderValue=1)
    return np.greater(f8, inner)  # (filled and not inner, in one pass)


def _soft_rows(out: np.ndarray, filled: np.ndarray, disp: np.ndarray, layers: Layers, direction: int, tau: float,
               weight: float, interp: int) -> None:
    """The soft edge of a near surface above or below a disocclusion, in place: a filled pixel
    whose neighbour in the row above or below is a nearer surface (by more than ``tau`` px of
    disparity) takes ``weight`` of the photo where that surface's pixel is read, in the filled
    pixel's own row (what lies just beyond the surface's edge in the photo, its blurred or
    anti-aliased border, moves with it). ``out`` uint8 RGB, ``filled`` bool and ``disp``
    float32 (each output pixel's disparity) ``H x W``, as :func:`shift_view` makes them. The
    rows' counterpart of :func:`_soft_edges` (measured: docs/rendering.md, fifth round).

    In parallel: the pixels are found in row bands (``filled`` and ``disp`` are only read),
    then blended in batches, each pixel of ``out`` read and written by its batch alone."""
    h, w = filled.shape
    t32 = np.float32(tau)
    near = _near_visible_rows(filled, 1)
    fl, dv = filled.reshape(-1), disp.reshape(-1)

    def find(sl):
        # the nearer neighbour's disparity, above or below (-inf: none, or a filled one): on the
        # band's holes beside a visible row, by index where they are few, else on every pixel
        y0, y1 = sl.start, sl.stop
        ys, xs = np.nonzero(near[sl])
        if ys.size == 0:
            return None
        if 8 * ys.size < (y1 - y0) * w:
            p = (ys + y0) * w + xs
            nd = np.full(ys.size, -np.inf, np.float32)
            for dy in (1, -1):
                ok = (ys + (y0 + dy) >= 0) & (ys + (y0 + dy) < h)
                q = p[ok] + dy * w
                ok[ok] = ~fl[q]
                v = np.full(ys.size, -np.inf, np.float32)
                v[ok] = dv[p[ok] + dy * w]
                np.maximum(nd, v, out=nd)
            sel = nd > dv[p] + t32
            ys, xs, nd = ys[sel], xs[sel], nd[sel]
        else:
            nd = np.full((y1 - y0, w), -np.inf, np.float32)
            for dy in (1, -1):
                a, b = max(y0 + dy, 0), min(y1 + dy, h)  # the neighbours' rows that exist
                if a >= b:
                    continue
                v = np.where(filled[a:b], np.float32(-np.inf), disp[a:b])
                np.maximum(nd[a - dy - y0:b - dy - y0], v, out=nd[a - dy - y0:b - dy - y0])
            sel = nd > disp[sl] + t32
            sel &= filled[sl]
            ys, xs = np.nonzero(sel)
            nd = nd[ys, xs]
        if ys.size == 0:
            return None
        # (int64 columns and float32 disparity add in float64, then round, as they always did)
        src = (xs + nd if direction < 0 else xs - nd).astype(np.float32)
        return ys + y0, xs, src

    hit = [f for f in by_bands(find, h) if f is not None]
    if not hit:
        return
    # every read is clamped to the rows of all the points together (as one batch would be)
    rows = (int(hit[0][0].min()), int(hit[-1][0].max()))
    # the bands' points in batches of about SOFT_ROWS_BATCH (a remap and a blend each), in parallel: each
    # batch writes only its own points
    batches, cur, n = [], [], 0
    for f in hit:
        cur.append(f)
        n += f[0].size
        if n >= SOFT_ROWS_BATCH:
            batches.append(cur)
            cur, n = [], 0
    if cur:
        batches.append(cur)
    wgt = np.float32(weight)

    def blend(k):  # (k: a slice of the batches)
        for b in batches[k]:
            ys, xs, src = (np.concatenate(a) for a in zip(*b))
            _blend(out, layers, ys, xs, src, np.full(ys.size, wgt, np.float32), 0, interp, rows)

    by_bands(blend, len(batches), rows=1)


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
