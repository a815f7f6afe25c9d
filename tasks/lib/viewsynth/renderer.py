"""Parallax frames: one photo rendered from moving cameras, at video rates.

:class:`ParallaxRenderer` puts the parts together: the photo fitted to the output
(:mod:`.projection`), its background layer (:mod:`.holefill`), a z-buffered forward splat of
nearness per frame (:mod:`.raster`), then a backward warp of every output pixel.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..errors import ParameterError
from .common import INTERP, JUMP_PX, by_bands, rgb
from .holefill import _min_fill, hidden_mask, make_layers
from .projection import Pose, fit_source
from .raster import dilate_near, splat_nearness


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
        base, wb, scale = fit_source(img, wn, size, overscan)
        bh, bw = wb.shape
        if edge_dilation > 0:
            wb = dilate_near(wb, int(round(edge_dilation * scale)) or 1)
        self.w = np.ascontiguousarray(wb, np.float32)
        hidden = reach = None
        if max_parallax > 0:
            reach = self.w * np.float32(max_parallax)
            hidden = hidden_mask(reach, sides="all", tau=jump)
        # frames are bilinear: 4 channels (see make_layers)
        self.layers = make_layers(base, hidden, channels=4, disparity=reach, sides="all")
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
        g = splat_nearness(pose, self._su, self._sv, self._sw, self.center, self.size, (self.ox, self.oy))
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
            if flat:  # each row's constant, as a full band (scaleAdd takes no per-row term)
                Pyb = np.empty((n, ow), np.float32)
                Pyb[:] = Py[sl]
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


