"""Rasterising: where the pixels of a photo land in a moved camera's view.

Horizontal shifts (stereo) use an exact row rasteriser (:func:`_row_sources`): each source
pixel is a footprint spanning half-way to its neighbours, joined to them where the surface is
continuous, splatted in painter's order (McMillan, "An image-based approach to 3D computer
graphics", 1997). Free camera moves splat inverse depth into a z-buffer (:func:`splat_nearness`).
"""

from __future__ import annotations

import cv2
import numpy as np

from .projection import Pose, forward_point


def dilate_near(disparity: np.ndarray, radius: int, *, horizontal: bool = False) -> np.ndarray:
    """Grey dilation (max filter) of a larger-is-nearer map: near objects grow by ``radius``
    pixels, so that the blurred or anti-aliased pixels at their edges move with them.
    ``horizontal``: along rows only (stereo, where gaps open sideways); square kernels otherwise
    (OpenCV runs both separably, fast at any radius)."""
    if radius <= 0:
        return disparity
    k = np.ones((1, 2 * radius + 1) if horizontal else (2 * radius + 1, 2 * radius + 1), np.uint8)
    return cv2.dilate(np.asarray(disparity, np.float32), k)



def _row_sources(d: np.ndarray, tau: float, near_extend: float, far_extend: float,
                 kmax: int = 8, gap_extend: float | None = None) -> np.ndarray:
    """For the view ``t = x - d``: the source x of every output pixel (-inf where nothing lands).

    Every source pixel's footprint runs half-way to each neighbour, linearly joined to it where
    the surface is continuous (``|d(x+1) - d(x)| <= tau``); across a depth edge the near side
    extends ``near_extend`` px and the far side ``far_extend`` px; where the near side is on
    the left (a drop: the gap a disocclusion opens) it extends ``gap_extend`` px (None:
    ``near_extend``), the photo's soft edge moving with the occluder. Footprints are rasterised
    into the output row and, where several land on one pixel, the largest source x wins (it is
    the nearest: two points with x' > x and x' - d' = x - d have d' = d + x' - x > d).
    """
    h, w = d.shape
    f32 = np.float32
    x = np.arange(w, dtype=f32)
    t = x - d
    dd = d[:, 1:] - d[:, :-1]  # across the gap between x and x + 1
    # depth edges (|dd| > tau) are few: found once, and patched by index below
    edge = np.flatnonzero(np.logical_not(np.abs(dd) <= tau))  # (NaN: an edge, as before)
    near_r = dd.ravel()[edge] < 0  # at each edge: is x (the left pixel) the near side?
    # output px per source px across each gap: 1 - dd, at least 0 (1 across depth edges)
    sm = np.subtract(f32(1.0), dd)
    sm.ravel()[edge] = f32(1.0)
    np.maximum(sm, f32(0.0), out=sm)
    # its inverse, padded with 1 at the row ends: towards x - 1 it is inv[:, :-1], towards
    # x + 1 inv[:, 1:] (views, no copies)
    inv = np.empty((h, w + 1), f32)
    inv[:, 0] = inv[:, -1] = f32(1.0)
    np.maximum(sm, f32(1e-3), out=inv[:, 1:-1])
    np.divide(f32(1.0), inv, out=inv)
    # reach of the footprint into each gap: half the stretched gap where the surface is
    # continuous; across an edge the near side (larger d) reaches further
    half_gap = np.multiply(sm, f32(0.5), out=sm)
    # footprint [a, b) in the output row, and the output pixels q with a <= q < b: from q0 = ceil(a)
    a = np.empty((h, w), f32)
    np.subtract(t[:, 1:], half_gap, out=a[:, 1:])
    a[:, 0] = t[:, 0] - f32(0.5)
    b = np.empty((h, w), f32)
    np.add(t[:, :-1], half_gap, out=b[:, :-1])
    b[:, -1] = t[:, -1] + f32(0.5)
    if edge.size:
        row, col = np.divmod(edge, w - 1)
        fl, fr = row * w + col, row * w + col + 1  # flat index of x and of x + 1
        ne, fe = f32(near_extend), f32(far_extend)
        ge = ne if gap_extend is None else f32(gap_extend)
        a.ravel()[fr] = t.ravel()[fr] - np.where(near_r, fe, ne)
        b.ravel()[fl] = t.ravel()[fl] + np.where(near_r, ge, fe)
    q0 = np.ceil(a, out=a)
    n = np.ceil(b, out=b)
    n -= q0  # output pixels q with a <= q < b
    buf = np.full(h * w + 1, -np.inf, f32)  # the last cell swallows off-image writes
    ity = np.int32 if h * w < 2**31 - 1 else np.int64
    kk = int(min(max(float(n.max()) if n.size else 0.0, 0.0), kmax))
    for k in range(kk):
        if k == 0:
            q = q0
            off = q - t  # (its sign is that of q - t: IEEE differences are 0 only for equals)
            src = np.where(off < 0, inv[:, :-1], inv[:, 1:])
            src *= off
            src += x
            idx = q.astype(ity)
            idx += (np.arange(h, dtype=ity) * ity(w))[:, None]
            bad = (n < 1) | (q < 0) | (q >= w)
            np.putmask(idx, bad, h * w)
            np.maximum.at(buf, idx.ravel(), src.ravel())
            continue
        # the few stretched footprints (those of the step before, narrowed: one scan of the band)
        sel = np.flatnonzero(n.ravel() > k) if k == 1 else sel[n.ravel()[sel] > k]
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


_U16 = 32767.5  # nearness -1..1 <-> uint16 0..65535


def splat_nearness(pose: Pose, su: np.ndarray, sv: np.ndarray, sw: np.ndarray, center: tuple[float, float],
                   size: tuple[int, int], origin: tuple[float, float]) -> np.ndarray:
    """Z-buffered forward splat of nearness onto a half-resolution grid of the output of ``pose``.

    ``su`` (float32 ``1 x n``), ``sv`` (float32 ``m x 1``): the source samples' pixel coordinates
    in the base image; ``sw`` (float32 ``m x n``): their nearness in 0..1; ``center``: the optical
    centre; ``size``: the output ``(width, height)``; ``origin``: the output window's top-left in
    the base image. Returns float32 ``ceil(h/2) x ceil(w/2)``: the nearest nearness that landed
    in each cell, closed over one-cell cracks (3x3 max then min), -1 where nothing landed.
    """
    ow, oh = size
    ox, oy = origin
    gw, gh = (ow + 1) // 2, (oh + 1) // 2
    # forward_point, then the half-resolution cell: (p - o) / 2, as one affine map per axis
    pose_g = Pose(x=pose.x, y=pose.y, z=pose.z, zoom=pose.zoom, focus=pose.focus,
                  pan_x=pose.pan_x - ox, pan_y=pose.pan_y - oy)
    # the z-buffer has a spare column and row that swallow off-frame samples: cells are
    # clamped to them (negative cells wrap to huge unsigned values, so one minimum does it)
    buf = np.full((gh + 1) * (gw + 1), -1.0, np.float32)
    if pose.z == 0:
        # No dolly: each axis is a row (column) of positions plus a multiple of nearness, cell
        # size folded in: one cv2.addWeighted per axis straight to the integer cell, in bands
        # of sample rows that stay in cache (a third of the time of numpy's five passes).
        # floor(v) is taken as round(v - 0.5): the two differ only where v is an exact
        # integer (ties round to even), a few samples in a million, one cell over.
        cx, cy = center
        dx, dy = pose_g.offset()
        r = 0.5 * pose.zoom
        ax, ay = -0.5 * pose.zoom * pose.x, -0.5 * pose.zoom * pose.y
        bx = 0.5 * (cx + dx + pose_g.pan_x) - r * cx - 0.5
        by = 0.5 * (cy + dy + pose_g.pan_y) - r * cy - 0.5
        m, n = sw.shape
        rows = 64
        sub = np.ascontiguousarray(np.broadcast_to(su, (min(rows, m), n)))
        for i in range(0, m, rows):
            k = min(rows, m - i)
            w = sw[i:i + k]
            svb = np.ascontiguousarray(np.broadcast_to(sv[i:i + k], (k, n)))
            gx = cv2.addWeighted(w, ax, sub[:k], r, bx, dtype=cv2.CV_32S).view(np.uint32)
            gy = cv2.addWeighted(w, ay, svb, r, by, dtype=cv2.CV_32S).view(np.uint32)
            np.minimum(gx, np.uint32(gw), out=gx)
            np.minimum(gy, np.uint32(gh), out=gy)
            gy *= np.uint32(gw + 1)
            gy += gx
            np.maximum.at(buf, gy.ravel(), w.ravel())
    else:
        px, py = forward_point(pose_g, su, sv, sw, center)
        px *= np.float32(0.5)
        py *= np.float32(0.5)
        gx = np.floor(px, out=px).astype(np.int32).view(np.uint32)
        gy = np.floor(py, out=py).astype(np.int32).view(np.uint32)
        np.minimum(gx, np.uint32(gw), out=gx)
        np.minimum(gy, np.uint32(gh), out=gy)
        gy *= np.uint32(gw + 1)
        gy += gx
        np.maximum.at(buf, gy.ravel(), sw.ravel())
    g = buf.reshape(gh + 1, gw + 1)[:gh, :gw]
    # Magnified surfaces (zoom, dolly: samples up to 2 cells apart) leave one-cell cracks,
    # empty or showing a farther surface that slipped through: a 3x3 closing (max, then
    # min) fills both, and leaves real disocclusions (wider) empty.
    # (on nearness -1..1 in 16-bit steps of 1/32767.5: uint16 morphology is a fifth of
    # float32's time; -1, empty, comes back exactly)
    k = np.ones((3, 3), np.uint8)
    u = cv2.addWeighted(g, _U16, g, 0.0, _U16, dtype=cv2.CV_16U)
    u = cv2.erode(cv2.dilate(u, k), k)
    return cv2.addWeighted(u, 1.0 / _U16, u, 0.0, -1.0, dtype=cv2.CV_32F)
