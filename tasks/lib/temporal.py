"""Temporal stability for depth videos: no pumping, no flicker, no swimming; depth follows motion.

A single-image estimator run on each frame alone gives a depth video that *pumps* (each frame is
normalised by its own min/max, so the whole map brightens and darkens), *flickers* (small
changes of the photo flip regions) and *swims* (the map does not move with the scene). The
:class:`Stabilizer` turns the per-frame estimates into a stable video, one frame at a time, with
a small state (the previous output and frame at working resolution):

1. **Motion.** Dense optical flow (OpenCV's DIS, Kroeger et al., ECCV 2016) from the current
   frame to the previous one, at a working width (``work_width``), warps the previous output
   onto the current frame.
2. **Confidence.** A pixel's history is trusted by how well the warped previous *photo* matches
   the current one (photometric error; occlusions, disocclusions and flow failures fail it),
   and by whether it lies inside the frame.
3. **Global alignment instead of per-frame normalisation.** The current estimate is fitted to
   the warped previous output by a weighted least-squares scale and shift (as in the
   scale-and-shift-invariant alignment of MiDaS, Ranftl et al., TPAMI 2020), with a small leak
   towards the estimate's own range so that the scale cannot drift away over a long shot.
4. **Blend.** The output is the aligned estimate plus a low-resolution correction: where the
   history is trusted, ``history`` of the warped previous output and the rest of the aligned
   estimate (an exponential filter along the motion paths, as in Lang et al., *Practical
   temporal consistency for image-based graphics applications*, SIGGRAPH 2012); full-resolution
   detail comes from the current estimate.
5. **Scene cuts** (:class:`CutDetector`: colour-histogram and pixel change of a thumbnail) reset
   the state.

Segments processed independently join seamlessly when the state is warmed up on a few frames
before the segment (``depthcraft.tasks.clips``): the state forgets its start geometrically
(``history ** k``), so a segment warmed up on ``k`` frames continues where the previous one ends.

Depth maps are float32 ``H x W`` nearness on 0..1 (larger = nearer); frames uint8 RGB.
``enabled=False`` returns each estimate as it is (the frame-by-frame reference).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


PROPAGATE_WIDTH = 640  # columns of the depth carried between keyframes


@dataclass
class TemporalParams:
    """Stabiliser settings (the defaults are used for every provider)."""

    enabled: bool = True
    history: float = 0.8  # weight of the warped previous output where it is trusted
    work_width: int = 320  # flow and blending resolution (columns)
    photo_sigma: float = 12.0  # photometric error (0..255 gray levels) at which trust falls to 1/e
    change_sigma: float = 0.25  # depth change (0..1) at which trust falls to 1/e: real changes come through
    leak: float = 0.5  # per frame pull of the global scale/shift back to the estimate's own
    robust: float = 0.01  # share of pixels clipped at each end when ranging each estimate
    cut_threshold: float = 0.35
    keyframe_interval: int = 1  # estimate every Nth frame; carry the depth along the motion between
    full_size: bool = True  # False: frames between keyframes may come back at PROPAGATE_WIDTH columns


class CutDetector:
    """Scene cuts from a thumbnail: half the L1 distance of normalised colour histograms (0..1)
    combined with the mean absolute pixel change; a cut when both are large."""

    def __init__(self, threshold: float = 0.35, width: int = 96):
        self.threshold, self.width = threshold, width
        self._prev: tuple[np.ndarray, np.ndarray] | None = None

    def score(self, rgb: np.ndarray) -> float:
        h, w = rgb.shape[:2]
        small = cv2.resize(rgb, (self.width, max(8, round(h * self.width / w))), interpolation=cv2.INTER_AREA)
        hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
        hist = cv2.calcHist([hsv], [0, 1, 2], None, [8, 4, 4], [0, 180, 0, 256, 0, 256]).ravel()
        hist /= max(hist.sum(), 1.0)
        gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)
        prev, self._prev = self._prev, (hist, gray)
        if prev is None:
            return 1.0
        hd = 0.5 * float(np.abs(hist - prev[0]).sum())
        pd = float(np.mean(np.abs(gray - prev[1]))) / 64.0
        return min(hd, pd)

    def is_cut(self, rgb: np.ndarray) -> bool:
        return self.score(rgb) > self.threshold

    def reset(self) -> None:
        self._prev = None


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    return np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))


class Stabilizer:
    """Feed frames in order with :meth:`step`; see the module docstring."""

    def __init__(self, params: TemporalParams | None = None):
        self.p = params or TemporalParams()
        self.cuts = CutDetector(self.p.cut_threshold)
        self._dis = None
        self._fgrid = None
        self.reset()
        self.frames = 0
        self.resets = 0

    def reset(self) -> None:
        """Forget the history (a scene cut)."""
        self._gray: np.ndarray | None = None
        self._out: np.ndarray | None = None
        self._full: np.ndarray | None = None
        self._mid: np.ndarray | None = None
        self._grid = None
        self._since = 0

    def _flow(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if self._dis is None:
            self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
        return self._dis.calc(a, b, None)

    def step(self, rgb: np.ndarray, depth) -> np.ndarray:
        """The stable depth of this frame (float32 ``H x W``, 0..1, larger = nearer) from the
        frame (uint8 RGB ``H x W x 3``) and its single-frame estimate (0..1, larger = nearer, the
        frame's size), or a function returning it, called only when an estimate is needed: with
        ``keyframe_interval`` N > 1, on every Nth frame and after a cut; the frames between get
        the previous output carried along the optical flow."""
        self.frames += 1
        if not self.p.enabled:
            return np.asarray(depth() if callable(depth) else depth, np.float32)
        h, w = rgb.shape[:2]
        cut = self.cuts.is_cut(rgb)
        self._since += 1
        if callable(depth):
            if self._out is not None and not cut and self._since < max(1, self.p.keyframe_interval) \
                    and (self._mid is not None or self._full is not None and self._full.shape == (h, w)):
                return self._propagate(rgb)
            depth = depth()
        self._since = 0
        d = np.asarray(depth, np.float32)
        if self.p.robust > 0:  # per-frame robust range: min/max outliers no longer pump the map
            lo, hi = np.percentile(d[::4, ::4], [100 * self.p.robust, 100 * (1 - self.p.robust)])
            if hi - lo > 1e-6:
                d = (d - np.float32(lo)) * np.float32(1.0 / (hi - lo))
        ww = min(self.p.work_width, w)
        wh = max(8, round(h * ww / w))
        gray = self._work(rgb)
        ds = cv2.resize(d, (ww, wh), interpolation=cv2.INTER_AREA)
        if self._out is None or cut or self._out.shape != ds.shape:
            if self._out is not None:
                self.resets += 1
            self._gray, self._out = gray, ds
            self._full = np.clip(d, 0.0, 1.0)
            self._mid = None
            return self._full
        if self._grid is None or self._grid[0].shape != ds.shape:
            self._grid = _grid(wh, ww)
        gx, gy = self._grid
        flow = self._flow(gray, self._gray)  # current -> previous: where each pixel was
        mx, my = gx + flow[..., 0], gy + flow[..., 1]
        warped = cv2.remap(self._out, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        prev_g = cv2.remap(self._gray, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        inside = (mx >= 0) & (mx <= ww - 1) & (my >= 0) & (my <= wh - 1)
        perr = np.abs(prev_g.astype(np.float32) - gray.astype(np.float32))
        perr = cv2.GaussianBlur(perr, (0, 0), 1.0)
        conf = np.exp(-(perr / self.p.photo_sigma) ** 2) * inside
        # global scale and shift of the estimate onto the warped history (weighted least squares)
        wsum = float(conf.sum())
        a, b = 1.0, 0.0
        if wsum > 0.05 * conf.size:
            mx_, my_ = float((conf * ds).sum() / wsum), float((conf * warped).sum() / wsum)
            vx = float((conf * (ds - mx_) ** 2).sum() / wsum)
            cxy = float((conf * (ds - mx_) * (warped - my_)).sum() / wsum)
            if vx > 1e-6:
                a = float(np.clip(cxy / vx, 0.5, 2.0))
                b = my_ - a * mx_
        lk = self.p.leak
        a, b = 1.0 + (a - 1.0) * (1.0 - lk), b * (1.0 - lk)
        aligned_s = a * ds + b
        change = np.abs(aligned_s - warped)
        trust = conf * np.exp(-(change / self.p.change_sigma) ** 2)
        wgt = (self.p.history * trust).astype(np.float32)
        out_s = aligned_s + wgt * (warped - aligned_s)
        self._gray, self._out = gray, out_s.astype(np.float32)
        corr = cv2.resize((out_s - aligned_s).astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        self._full = np.clip(a * d + b + corr, 0.0, 1.0).astype(np.float32)
        self._mid = None
        return self._full

    def _work(self, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        ww = min(self.p.work_width, w)
        wh = max(8, round(h * ww / w))
        return cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (ww, wh), interpolation=cv2.INTER_AREA)

    def _propagate(self, rgb: np.ndarray) -> np.ndarray:
        """No new estimate: the previous output moved along the flow. The carried map is kept at
        ``PROPAGATE_WIDTH`` columns at most (depth is smooth; a 1080p remap per frame is not
        free) and brought back to the frame's size."""
        h, w = rgb.shape[:2]
        gray = self._work(rgb)
        wh, ww = gray.shape
        if self._grid is None or self._grid[0].shape != gray.shape:
            self._grid = _grid(wh, ww)
        flow = self._flow(gray, self._gray)
        gx, gy = self._grid
        self._out = cv2.remap(self._out, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
        self._gray = gray
        if self._mid is None:
            mw = min(w, PROPAGATE_WIDTH)
            mh = max(8, round(h * mw / w))
            self._mid = self._full if mw == w else cv2.resize(self._full, (mw, mh), interpolation=cv2.INTER_AREA)
        mh, mw = self._mid.shape
        fx = cv2.resize(flow, (mw, mh), interpolation=cv2.INTER_LINEAR)
        if self._fgrid is None or self._fgrid[0].shape != (mh, mw):
            self._fgrid = _grid(mh, mw)
        mapx = fx[..., 0] * np.float32(mw / ww) + self._fgrid[0]
        mapy = fx[..., 1] * np.float32(mh / wh) + self._fgrid[1]
        self._mid = cv2.remap(self._mid, mapx, mapy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if not self.p.full_size:  # the caller resizes to what it renders (e.g. a half-width eye)
            self._full = None
            return self._mid
        self._full = self._mid if (mh, mw) == (h, w) else cv2.resize(self._mid, (w, h), interpolation=cv2.INTER_LINEAR)
        return self._full
