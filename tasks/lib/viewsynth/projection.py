"""Camera and projection for free camera moves: the pose of one frame, where source points land
in its output, and the source image fitted to the output (overscan)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


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


def fit_source(img: np.ndarray, wn: np.ndarray, size: tuple[int, int],
               overscan: float) -> tuple[np.ndarray, np.ndarray, float]:
    """The photo (uint8 ``H x W x C``) and its nearness (float32 ``H x W``, 0..1) resized so that
    one source pixel is one output pixel at ``zoom=1``, covering the output ``size``
    ``(width, height)`` with ``overscan`` (>= 1) to spare. Only the part of the photo the moving
    window can reach is kept (a 4:3 photo behind a 16:9 video loses its top and bottom): less
    memory, less work per frame. Returns ``(base, nearness, scale)``."""
    ow, oh = int(size[0]), int(size[1])
    ih, iw = img.shape[:2]
    scale = max(ow / iw, oh / ih) * max(1.0, float(overscan))
    bw, bh = max(1, round(iw * scale)), max(1, round(ih * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
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
    return base, wb, scale
