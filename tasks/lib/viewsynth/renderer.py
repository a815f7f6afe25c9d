"""Parallax frames: one photo rendered from moving cameras, at video rates.

:class:`ParallaxRenderer` puts the parts together: the photo fitted to the output
(:mod:`.projection`), its background layer (:mod:`.holefill`), a z-buffered forward splat of
nearness per frame (:mod:`.raster`), then a backward warp of every output pixel.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

from ..errors import ParameterError
from .common import INTERP, PARALLAX_JUMP_PX, by_bands, rgb
from .holefill import _min_fill, hidden_mask, make_layers
from .projection import Pose, fit_source
from .raster import dilate_near, splat_nearness


EDGE_PX = 1.0  # parallax across a half-resolution cell's neighbourhood that marks a depth edge


# BT.601 limited range, the encoder's input convention (as tasks/lib/video.py's FrameBuilder and
# ffmpeg's swscale for rgb24): rows Y', Cb, Cr and a zero row (4 channels: OpenCV's fast remap),
# columns R, G, B, the stack's padding channel, and the offset.
_RGBA2YUV601 = np.array([[65.481, 128.553, 24.966, 0.0, 16.0 * 255.0],
                         [-37.797, -74.203, 112.0, 0.0, 128.0 * 255.0],
                         [112.0, -93.786, -18.214, 0.0, 128.0 * 255.0],
                         [0.0, 0.0, 0.0, 0.0, 0.0]], np.float32) / np.float32(255.0)
_CHROMA_TAPS = np.array([0.25, 0.5, 0.25], np.float32)  # the 4:2:0 anti-alias filter (see _i420_stacks)

_QUAD_Y = np.array([0, 0, 1, 1])  # the 2x2 output pixels of a half-resolution cell
_QUAD_X = np.array([0, 1, 0, 1])


def _read_points(src: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``src`` (float32 ``H x W``, or ``H x W x C``) at the points
    (``x``, ``y``) (1-D, pixel centres at integers, edges replicated): shape ``(n,)`` or
    ``(n, C)``, ``src``'s dtype. One ``cv2.remap`` over the points laid out in rows (remap
    takes at most 32767 columns)."""
    n = x.size
    if n == 0:
        return np.empty((0,) + src.shape[2:], src.dtype)
    cols = min(n, 4096)
    m = -(-n // cols)
    mx = np.zeros(m * cols, np.float32)
    my = np.zeros(m * cols, np.float32)
    mx[:n] = x
    my[:n] = y
    out = cv2.remap(src, mx.reshape(m, cols), my.reshape(m, cols), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    return out.reshape((-1,) + src.shape[2:])[:n]


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
                 jump: float = PARALLAX_JUMP_PX, workers: int | None = None):
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
        self.layers = make_layers(base, hidden, channels=4, disparity=reach, sides="all", jump=jump)
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
        self._i420 = None  # (luma stack, filtered YCbCr stack): made on the first 4:2:0 frame
        self._i420_lock = threading.Lock()

    def prepare_planes(self, *, keep_rgba: bool = True) -> None:
        """Make what 4:2:0 frames read (:meth:`_i420_stacks`) now, e.g. before worker
        processes fork, so that they share it instead of each making its own. ``keep_rgba=False``
        frees the RGBA stack when every frame will be rendered into planes (a 4K video's stack
        is ~80 MB); rendering RGB or RGBA frames afterwards raises :class:`ParameterError`."""
        self._i420_stacks()
        if not keep_rgba:
            self.layers.stack = None

    def _i420_stacks(self) -> tuple[np.ndarray, np.ndarray]:
        """The layer stack in the encoder's colours, made once per photo: luma (uint8, one
        channel, read at every output pixel) and Y'CbCr with a zero channel, low-passed with a
        [1 2 1]/4 kernel in each layer (read once per 2x2 block of output pixels: the filter
        stands in for the 2x2 average that 4:2:0 subsampling of a rendered frame takes, so fine
        detail does not alias into the chroma)."""
        with self._i420_lock:
            if self._i420 is None:
                st, h, off = self.layers.stack, self.layers.h, self.layers.offset
                if st.shape[2] == 3:
                    st = cv2.cvtColor(st, cv2.COLOR_RGB2RGBA)
                ycc = cv2.transform(st, _RGBA2YUV601)
                luma = np.ascontiguousarray(ycc[..., 0])
                # each layer filtered on its own (edges replicated), the rows between them kept
                for r0 in (0, off):
                    layer = ycc[r0:r0 + h]
                    layer[:] = cv2.sepFilter2D(layer, -1, _CHROMA_TAPS, _CHROMA_TAPS, borderType=cv2.BORDER_REPLICATE)
                pad = (off - h) // 2  # the rows between: each layer's edge row, as in make_layers
                ycc[h:h + pad] = ycc[h - 1]
                ycc[h + pad:off] = ycc[off]
                self._i420 = (luma, ycc)
            return self._i420

    def _target_nearness(self, pose: Pose) -> tuple[np.ndarray, np.ndarray]:
        """Nearness seen by ``pose`` on a half-resolution output grid, and its holes."""
        g = splat_nearness(pose, self._su, self._sv, self._sw, self.center, self.size, (self.ox, self.oy))
        empty = g < 0
        lateral = abs(pose.x) + abs(pose.y)
        rows = bool(pose.z) or abs(pose.x) >= 0.3 * lateral
        cols = bool(pose.z) or abs(pose.y) >= 0.3 * lateral
        return _min_fill(g, empty, rows=rows, cols=cols), empty

    def render(self, pose: Pose, *, interpolation: str = "linear", channels: int = 3,
               band_sink=None, planes: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
               ) -> tuple[np.ndarray | None, np.ndarray]:
        """One frame (uint8 RGB of the output size) and its mask of filled-in pixels. The maps
        are built and applied band by band (64 rows), so no full-size map is ever held.
        ``channels=4`` returns the frame as rendered, RGBA (alpha 255), saving a conversion
        when the next step reads 4 channels anyway. ``band_sink(rows, rgba)`` takes each band
        as soon as it is rendered (e.g. to convert it for the encoder), and no frame is
        returned (``None``): a 4K RGBA frame is 33 MB.

        ``planes``: the frame is rendered straight into the encoder's 4:2:0 format instead,
        BT.601 limited range (the Y' plane, uint8 ``H x W``; Cb and Cr, uint8 ``H/2 x W/2``;
        even ``H`` and ``W``), and ``None`` is returned for the frame. Luma is read through the
        same full-resolution maps; chroma once per 2x2 block, through the half-resolution
        maps that the renderer solves first (a third of the reads and no colour conversion
        per frame: the stack is converted once per photo, see :meth:`_i420_stacks`)."""
        ow, oh = self.size
        if planes is not None and (oh % 2 or ow % 2 or planes[0].shape != (oh, ow)
                                   or planes[1].shape != (oh // 2, ow // 2) or planes[2].shape != (oh // 2, ow // 2)):
            raise ParameterError(f"4:2:0 planes must be {ow}x{oh} and {ow // 2}x{oh // 2}", parameter="planes")
        luma, ycc_stack = self._i420_stacks() if planes is not None else (None, None)
        if luma is None and self.layers.stack is None:
            raise ParameterError("this renderer was prepared for 4:2:0 planes only (prepare_planes(keep_rgba=False))",
                                 parameter="planes")
        g, holes = self._target_nearness(pose)
        gh, gw = g.shape
        cx, cy = self.center
        dx, dy = pose.offset()

        def axis(q, c, d, pan, t):
            """Inverse map of one axis, affine in nearness: source = P + w * Q (``q``: output
            pixel centres in base-image pixels; -0.5: remap samples pixel centres at integers)."""
            p = c + (q - c - d - pan) / pose.zoom
            return (p - 0.5).astype(np.float32), (t - pose.z * (p - c)).astype(np.float32)

        # Refine on the half-resolution grid: each cell (centred between two output pixels)
        # solves where it comes from with the splatted estimate, and takes the nearness actually
        # found there (full-resolution source, so edges land within a cell); disocclusions
        # keep the background's nearness where the source leads onto something nearer.
        # Nearness is smooth, so one bilinear upsampling of the refined grid per band replaces
        # a full-resolution estimate, read and second map (issue 12: a quarter of the reads).
        pxh, qxh = axis(2.0 * np.arange(gw) + 1.0 + self.ox, cx, dx, pose.pan_x, pose.x)
        pyh, qyh = axis(2.0 * np.arange(gh) + 1.0 + self.oy, cy, dy, pose.pan_y, pose.y)
        mxh = g * qxh[None, :]
        mxh += pxh[None, :]
        myh = g * qyh[:, None]
        myh += pyh[:, None]
        wh = cv2.remap(self.w, mxh, myh, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        k3 = np.ones((3, 3), np.uint8)
        fillh = near = None
        if holes.any():
            near = cv2.dilate(holes.view(np.uint8), k3).view(bool)
            fillh = near & (wh - g > np.float32(self.jump_w))
            np.copyto(wh, g, where=fillh)
            fill8 = fillh.view(np.uint8)

        Px, Qx = axis(np.arange(ow, dtype=np.float64) + 0.5 + self.ox, cx, dx, pose.pan_x, pose.x)
        Py, Qy = axis(np.arange(oh, dtype=np.float64) + 0.5 + self.oy, cy, dy, pose.pan_y, pose.y)
        Px, Qx, Py, Qy = Px[None, :], Qx[None, :], Py[:, None], Qy[:, None]
        # Depth edges: cells whose 3x3 neighbourhood spans more than EDGE_PX pixels of parallax
        # (there the 2x upsampling would blur the map: jagged, stretched edges). On smooth
        # surfaces bilinear upsampling errs only by the curvature: invisible.
        qmax = max(float(np.abs(Qx).max()), float(np.abs(Qy).max()), 1e-6)
        # (measured on nearness in 1/255 steps: uint8 morphology is a tenth of float32's time)
        w8 = cv2.convertScaleAbs(wh, alpha=255.0)
        spread = cv2.subtract(cv2.dilate(w8, k3), cv2.erode(w8, k3))
        edge8 = (spread > min(255.0 * EDGE_PX / qmax, 254.0)).view(np.uint8)

        # Pixels near a depth edge are refined at full resolution as every pixel was before
        # (issue 12): the 2x2 pixels of each edge cell (in row order) take the splatted
        # estimate upsampled, read the source's nearness where it points, and near holes keep
        # the estimate where that leads onto something nearer; so edges stay as sharp as the
        # source's. Done for the whole frame at once (few pixels).
        cells = cv2.findNonZero(edge8)  # (x, y) in row order; None if none (a third of numpy's time)
        cells = np.empty((0, 2), np.int32) if cells is None else cells.reshape(-1, 2)
        ey = ((2 * cells[:, 1])[:, None] + _QUAD_Y).ravel()
        ex = ((2 * cells[:, 0])[:, None] + _QUAD_X).ravel()
        ok = (ey < oh) & (ex < ow)
        ey, ex = ey[ok], ex[ok]
        we = _read_points(g, ex * np.float32(0.5) - np.float32(0.25), ey * np.float32(0.5) - np.float32(0.25))
        ew = _read_points(self.w, Px[0, ex] + we * Qx[0, ex], Py[ey, 0] + we * Qy[ey, 0])
        efill = None
        if near is not None:
            efill = near[ey >> 1, ex >> 1] & (ew - we > np.float32(self.jump_w))
            ew = np.where(efill, we, ew)

        def upsampled(sl):
            """Rows ``sl`` of the full-resolution refined nearness (``wh`` upsampled 2x,
            bilinear) and of the fill mask (nearest; None if empty): each band upsamples its own
            rows with two rows to spare, which gives exactly the rows of a full-size resize
            without ever holding one."""
            k0, k1 = max(sl.start // 2 - 2, 0), min((sl.stop + 1) // 2 + 2, gh)
            y0 = 2 * k0
            r = slice(sl.start - y0, sl.stop - y0)
            size = (2 * gw, 2 * (k1 - k0))
            w_up = cv2.resize(wh[k0:k1], size, interpolation=cv2.INTER_LINEAR)[r, :ow]
            f_up = None
            if fillh is not None and fill8[sl.start // 2:(sl.stop + 1) // 2].any():
                f_up = cv2.resize(fill8[k0:k1], size, interpolation=cv2.INTER_NEAREST)[r, :ow].view(bool)
            e0, e1 = np.searchsorted(ey, (sl.start, sl.stop))
            if e1 > e0:  # pixels near a depth edge, refined at full resolution (above)
                i, j = ey[e0:e1] - sl.start, ex[e0:e1]
                w_up[i, j] = ew[e0:e1]
                if efill is not None:
                    if f_up is None:
                        f_up = np.zeros(w_up.shape, bool)
                    f_up[i, j] = efill[e0:e1]
            return w_up, f_up

        out = np.empty((oh, ow, self.layers.stack.shape[2]), np.uint8) if band_sink is None and luma is None else None
        filled = np.empty((oh, ow), bool)
        interp = INTERP[interpolation]
        stack = self.layers.stack
        off = np.float32(self.layers.offset)
        hmax = np.float32(self.layers.h - 1)
        rows = 64  # (32-row bands: 3x the GIL hand-offs between the two render threads, +30% CPU)
        # without dolly Q is constant: maps are one cv2.scaleAdd each (a third of numpy's time)
        flat = pose.z == 0
        qx, qy = float(pose.x), float(pose.y)
        Pxb = np.ascontiguousarray(np.broadcast_to(Px, (rows, ow))) if flat else None
        # Rows whose y map cannot leave the photo layer need no clipping (nearness is 0..1, so a
        # row's map lies between P and P + Q): most bands skip it.
        y_lo = (Py + np.minimum(Qy, 0))[:, 0]
        y_hi = (Py + np.maximum(Qy, 0))[:, 0]

        def band(sl):
            w1, fb = upsampled(sl)
            n = w1.shape[0]
            if flat:
                mx = cv2.scaleAdd(w1, qx, Pxb[:n])
                my = np.empty((n, ow), np.float32)  # each row's constant (scaleAdd takes no per-row term)
                my[:] = Py[sl]
                cv2.scaleAdd(w1, qy, my, dst=my)
            else:
                mx = Px + w1 * Qx
                my = np.multiply(w1, Qy[sl])
                my += Py[sl]
            if y_lo[sl].min() < 0.01 or y_hi[sl].max() > hmax - 0.01:
                np.clip(my, 0, hmax, out=my)  # stay inside the layer read
            if fb is not None:
                my += fb * off
                filled[sl] = fb
            else:
                filled[sl] = False
            if luma is not None:
                cv2.remap(luma, mx, my, interp, dst=planes[0][sl], borderMode=cv2.BORDER_REPLICATE)
            elif band_sink is None:
                cv2.remap(stack, mx, my, interp, dst=out[sl], borderMode=cv2.BORDER_REPLICATE)
            else:
                band_sink(sl, cv2.remap(stack, mx, my, interp, borderMode=cv2.BORDER_REPLICATE))

        by_bands(band, oh, rows=rows, workers=self.workers)
        if luma is not None:
            self._chroma(planes, ycc_stack, wh, fillh, (pxh, qxh, pyh, qyh), interp,
                         (ex, ey, Px[0, ex] + ew * Qx[0, ex], Py[ey, 0] + ew * Qy[ey, 0], efill))
            return None, filled
        if out is None:
            return None, filled
        return (out if channels == 4 else rgb(out)), filled

    def _chroma(self, planes, ycc_stack, wh, fillh, half_maps, interp, edges) -> None:
        """Cb and Cr of a 4:2:0 frame: each 2x2 block of output pixels reads the filtered
        Y'CbCr stack once, at the block's centre, through the refined half-resolution nearness
        ``wh`` (disocclusions, ``fillh``, from the background layer). Blocks on a depth edge
        average the four reads of their pixels instead (``edges``: their columns, rows, source
        positions and fill flags, as refined at full resolution), as 4:2:0 subsampling of the
        rendered frame would: a chroma edge stays where the luma edge is. ``ycc_stack``: the
        filtered stack of :meth:`_i420_stacks`."""
        ch, cw = planes[1].shape
        pxh, qxh, pyh, qyh = half_maps
        hmax = np.float32(self.layers.h - 1)
        off = np.float32(self.layers.offset)
        w = wh[:ch, :cw]
        mx = w * qxh[None, :cw]
        mx += pxh[None, :cw]
        my = w * qyh[:ch, None]
        my += pyh[:ch, None]
        np.clip(my, 0, hmax, out=my)
        if fillh is not None:
            my += fillh[:ch, :cw] * off
        ycc = cv2.remap(ycc_stack, mx, my, interp, borderMode=cv2.BORDER_REPLICATE)
        ex, ey, sx, sy, efill = edges
        if ex.size:  # (even sizes: every edge cell has its 4 pixels, in quad order)
            sy = np.clip(sy, 0, hmax)
            if efill is not None:
                sy += efill * off
            quad = _read_points(ycc_stack, sx.astype(np.float32), sy.astype(np.float32)).reshape(-1, 4, 4)
            cy, cx = ey[::4] >> 1, ex[::4] >> 1
            ycc[cy, cx] = (quad.astype(np.uint16).sum(1) + 2) >> 2
        cv2.extractChannel(ycc, 1, dst=planes[1])
        cv2.extractChannel(ycc, 2, dst=planes[2])
