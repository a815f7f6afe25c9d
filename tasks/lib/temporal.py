"""Temporal stability for depth videos: no pumping, no flicker, no swimming; depth follows motion.

A single-image estimator run on each frame alone gives a depth video that *pumps* (each frame is
normalised by its own min/max, so the whole map brightens and darkens), *flickers* (small
changes of the photo flip regions) and *swims* (the map does not move with the scene). The
:class:`Stabilizer` turns the per-frame estimates into a stable video, one frame at a time, with
a small state (the previous frame in gray at ``work_width`` columns, the previous output at
``state_width`` columns):

1. **Motion.** Dense optical flow (OpenCV's DIS, Kroeger et al., ECCV 2016) from the current
   frame to the previous one, at a working width (``work_width``; DIS's finest pyramid level
   ``flow_scale`` at keyframes, the coarser default between them), resampled to the state and
   used to warp the previous output onto the current frame.
2. **Confidence.** A pixel's history is trusted by how well the warped previous *photo* matches
   the current one after compensating a global exposure change (photometric error; occlusions,
   disocclusions and flow failures fail it), and by whether it lies inside the frame.
3. **Global alignment instead of per-frame normalisation.** The current estimate is fitted to
   the warped previous output by a weighted least-squares scale and shift (as in the
   scale-and-shift-invariant alignment of MiDaS, Ranftl et al., TPAMI 2020), with a small leak
   towards the estimate's own range so that the scale cannot drift away over a long shot.
4. **Blend.** At the state resolution (640 columns: the whole frame for clips up to that
   width), where the history is trusted, ``history`` of the warped previous output and the rest
   of the aligned estimate (an exponential filter along the motion paths, as in Lang et al.,
   *Practical temporal consistency for image-based graphics applications*, SIGGRAPH 2012); for
   wider frames the correction is upsampled onto the aligned full-size estimate, so only detail
   finer than the state comes from the current estimate alone.
5. **Scene cuts** (:class:`CutDetector`: colour-histogram and pixel change of a thumbnail) reset
   the state.

Segments processed independently join seamlessly when the state is warmed up on a few frames
before the segment (``depthcraft.tasks.clips``): the state forgets its start geometrically
(at most ``history ** k`` for the blend, ``(1 - leak) ** k`` for the scale), so a segment warmed
up on ``k`` frames continues where the previous one ends (``WARMUP_FRAMES`` in the clip engine).

Depth maps are float32 ``H x W`` nearness on 0..1 (larger = nearer); frames uint8 RGB.
``enabled=False`` returns each estimate as it is (the frame-by-frame reference).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


PROPAGATE_WIDTH = 640  # columns of the stable depth state (blending, and carrying between keyframes)


@dataclass
class TemporalParams:
    """Stabiliser settings (the defaults are used for every provider)."""

    enabled: bool = True
    history: float = 0.88  # weight of the warped previous output where it is trusted
    work_width: int = 320  # flow and photometric-check resolution (columns)
    state_width: int = PROPAGATE_WIDTH  # blending resolution (columns): the finest the flicker is filtered at
    flow_scale: int = 1  # DIS finest pyramid level at keyframes (0 = work_width itself; 2 = a quarter)
    photo_sigma: float = 12.0  # photometric error (0..255 gray levels) at which trust falls to 1/e
    change_sigma: float = 0.25  # depth change (0..1) at which trust falls to 1/e: real changes come through
    leak: float = 0.2  # per frame pull of the global scale/shift back to the estimate's own
    robust: float = 0.01  # share of pixels clipped at each end when ranging each estimate
    cut_threshold: float = 0.35
    keyframe_interval: int = 1  # estimate every Nth frame; carry the depth along the motion between
    full_size: bool = True  # False: frames between keyframes may come back at state_width columns


class CutDetector:
    """Scene cuts from a thumbnail: half the L1 distance of normalised colour histograms (0..1)
    combined with the mean absolute pixel change; a cut when both are large."""

    def __init__(self, threshold: float = 0.35, width: int = 96):
        self.threshold, self.width = threshold, width
        self._prev: tuple[np.ndarray, np.ndarray] | None = None

    def score(self, rgb: np.ndarray) -> float:
        h, w = rgb.shape[:2]
        # a strided view first: area-averaging a whole 720p+ frame down to a thumbnail costs
        # more than the rest of the detector (every frame of every clip goes through here)
        s = max(1, w // (4 * self.width))
        small = cv2.resize(rgb[::s, ::s], (self.width, max(8, round(h * self.width / w))), interpolation=cv2.INTER_AREA)
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


PROPAGATE_FLOW_SCALE = 2  # DIS finest level between keyframes: the fast path of the rendering steps


class Stabilizer:
    """Feed frames in order with :meth:`step`; see the module docstring."""

    def __init__(self, params: TemporalParams | None = None):
        self.p = params or TemporalParams()
        self.cuts = CutDetector(self.p.cut_threshold)
        self._dis: dict[int, cv2.DISOpticalFlow] = {}
        self._grids: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self.reset()
        self.frames = 0
        self.resets = 0

    def reset(self) -> None:
        """Forget the history (a scene cut)."""
        self._gray: np.ndarray | None = None  # previous frame, gray, at work_width
        self._out: np.ndarray | None = None  # previous stable depth at state_width (unclipped)
        self._since = 0

    def _sizes(self, h: int, w: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """(rows, columns) of the work (flow) and state (blending) resolutions of an ``h x w`` frame."""
        ww = min(self.p.work_width, w)
        sw = min(max(self.p.state_width, ww), w)
        return (max(8, round(h * ww / w)), ww), (h if sw == w else max(8, round(h * sw / w)), sw)

    def _grid(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        g = self._grids.get(shape)
        if g is None:
            g = self._grids[shape] = _grid(*shape)
        return g

    def _flow(self, a: np.ndarray, b: np.ndarray, finest: int) -> np.ndarray:
        if min(a.shape) < 16:  # DIS crashes the process on images smaller than its patches
            return np.zeros((*a.shape, 2), np.float32)
        dis = self._dis.get(finest)
        if dis is None:
            dis = self._dis[finest] = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
            dis.setFinestScale(int(finest))
        return dis.calc(a, b, None)

    def _maps(self, flow: np.ndarray, work: tuple[int, int], state: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Sampling maps at the state resolution from a work-resolution flow (current -> previous)."""
        gx, gy = self._grid(state)
        if state == work:
            return gx + flow[..., 0], gy + flow[..., 1]
        (wh, ww), (sh, sw) = work, state
        f = cv2.resize(flow, (sw, sh), interpolation=cv2.INTER_LINEAR)
        return f[..., 0] * np.float32(sw / ww) + gx, f[..., 1] * np.float32(sh / wh) + gy

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
        work, state = self._sizes(h, w)
        (wh, ww), (sh, sw) = work, state
        cut = self.cuts.is_cut(rgb)
        self._since += 1
        if callable(depth):
            if self._out is not None and not cut and self._out.shape == state \
                    and self._since < max(1, self.p.keyframe_interval):
                return self._propagate(rgb, work, state)
            depth = depth()
        self._since = 0
        d = np.asarray(depth, np.float32)
        if self.p.robust > 0:  # per-frame robust range: min/max outliers no longer pump the map
            lo, hi = np.percentile(d[::4, ::4], [100 * self.p.robust, 100 * (1 - self.p.robust)])
            if hi - lo > 1e-6:
                d = (d - np.float32(lo)) * np.float32(1.0 / (hi - lo))
        gray = self._work(rgb, work)
        if state == (h, w):
            ds = d.copy() if d is depth else d  # the state must not share the caller's array
        else:
            ds = cv2.resize(d, (sw, sh), interpolation=cv2.INTER_AREA)
        if self._out is None or cut or self._out.shape != state:
            if self._out is not None:
                self.resets += 1
            self._gray, self._out = gray, ds
            return np.clip(d, 0.0, 1.0)
        # motion: where each pixel of this frame was in the previous one
        flow = self._flow(gray, self._gray, self.p.flow_scale)
        gx, gy = self._grid(work)
        mx, my = gx + flow[..., 0], gy + flow[..., 1]
        prev_g = cv2.remap(self._gray, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
        inside = (mx >= 0) & (mx <= ww - 1) & (my >= 0) & (my <= wh - 1)
        g32 = gray.astype(np.float32)
        # a global exposure change (auto exposure, a fade) is not a failed match
        prev_g *= np.float32(max(float(g32.mean()), 1.0) / max(float(prev_g.mean()), 1.0))
        perr = cv2.GaussianBlur(np.abs(prev_g - g32), (0, 0), 1.0)
        conf = (np.exp(-(perr / np.float32(self.p.photo_sigma)) ** 2) * inside).astype(np.float32)
        sx, sy = self._maps(flow, work, state)
        warped = cv2.remap(self._out, sx, sy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if state != work:
            conf = cv2.resize(conf, (sw, sh), interpolation=cv2.INTER_LINEAR)
        # global scale and shift of the estimate onto the warped history (weighted least squares,
        # on every other pixel: a global fit needs no more)
        cs, xs, ys = conf[::2, ::2], ds[::2, ::2], warped[::2, ::2]
        wsum = float(cs.sum())
        a, b = 1.0, 0.0
        if wsum > 0.05 * cs.size:
            mx_, my_ = float((cs * xs).sum() / wsum), float((cs * ys).sum() / wsum)
            vx = float((cs * (xs - mx_) ** 2).sum() / wsum)
            cxy = float((cs * (xs - mx_) * (ys - my_)).sum() / wsum)
            if vx > 1e-6:
                a = float(np.clip(cxy / vx, 0.5, 2.0))
                b = my_ - a * mx_
        lk = self.p.leak
        a, b = 1.0 + (a - 1.0) * (1.0 - lk), b * (1.0 - lk)
        aligned = ds * np.float32(a) + np.float32(b)
        diff = warped - aligned
        trust = conf * np.exp(-(diff * np.float32(1.0 / self.p.change_sigma)) ** 2)
        corr = (np.float32(self.p.history) * trust) * diff
        out = aligned + corr
        self._gray, self._out = gray, out
        if state == (h, w):
            return np.clip(out, 0.0, 1.0)
        # detail finer than the state: the current estimate's, under the state's correction
        corr = cv2.resize(corr, (w, h), interpolation=cv2.INTER_LINEAR)
        return np.clip(d * np.float32(a) + np.float32(b) + corr, 0.0, 1.0)

    def _work(self, rgb: np.ndarray, work: tuple[int, int]) -> np.ndarray:
        return cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (work[1], work[0]), interpolation=cv2.INTER_AREA)

    def _propagate(self, rgb: np.ndarray, work: tuple[int, int], state: tuple[int, int]) -> np.ndarray:
        """No new estimate: the state moved along the (fast) flow. The state is kept at
        ``state_width`` columns at most (depth is smooth; a 1080p remap per frame is not free) and
        brought back to the frame's size unless ``full_size`` is off."""
        h, w = rgb.shape[:2]
        gray = self._work(rgb, work)
        flow = self._flow(gray, self._gray, PROPAGATE_FLOW_SCALE)
        sx, sy = self._maps(flow, work, state)
        self._out = cv2.remap(self._out, sx, sy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        self._gray = gray
        out = np.clip(self._out, 0.0, 1.0)
        if not self.p.full_size or state == (h, w):  # the caller resizes to what it renders (e.g. a half-width eye)
            return out
        return cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR)
