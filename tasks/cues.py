"""Monocular depth cues for the ``classic`` provider, computed on a small working image.

The cue the provider uses is a *geodesic pop-up*: the scene is assumed to be a ground plane
rising from the bottom of the frame to a backdrop at the top (the vertical-position prior used
by Hoiem, Efros & Hebert, "Automatic Photo Pop-up", SIGGRAPH 2005), and objects are the regions
enclosed by strong colour edges. For each pixel we take the geodesic distance (minimum path cost,
Dijkstra over the pixel grid) to the far seeds (the top row and the upper quarter of the side
columns) and to the near seeds (the bottom row), with a step cost of

    squared colour gradient (CIE Lab, after bilateral smoothing)  +  lam / height

and return ``d_far / (d_far + d_near)``. Without edges this is exactly the vertical ramp; a
region walled off by strong edges takes the value of the side it is best connected to, so an
object standing on the ground stays near over its whole height while the backdrop stays far.
Seeding the background from the image border is the boundary prior of geodesic saliency
(Wei, Wen, Zhu & Sun, "Geodesic Saliency Using Background Priors", ECCV 2012).

Cues measured and *not* used (no gain on the Middlebury/KITTI scenes, see docs/depth.md):
defocus from the re-blur gradient ratio (Zhuo & Sim, "Defocus map estimation from a single
image", Pattern Recognition 2011: those photos are sharp everywhere), saturation, brightness,
texture energy, a centre prior, and segment-bottom ground contact (Felzenszwalb segments).

Conventions: input uint8 RGB ``H x W x 3``; outputs float32 at the working size, 0..1, larger =
nearer.
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.graph import MCP_Geometric


def working_image(rgb: np.ndarray, width: int) -> np.ndarray:
    """Area-downscale to ``width`` columns (never upscale)."""
    h, w = rgb.shape[:2]
    if w <= width:
        return rgb
    nh = max(2, int(round(h * width / w)))
    return cv2.resize(rgb, (width, nh), interpolation=cv2.INTER_AREA)


def edge_cost(rgb_small: np.ndarray, *, smooth_passes: int = 3, power: float = 2.0) -> np.ndarray:
    """Colour-gradient magnitude (Lab / 100) after bilateral smoothing, raised to ``power``.

    Bilateral smoothing (Tomasi & Manduchi 1998) flattens texture inside objects while keeping
    their outlines, so the paths cross object boundaries, not texture.
    """
    im = rgb_small
    for _ in range(smooth_passes):
        im = cv2.bilateralFilter(im, 5, 30, 5)
    lab = cv2.cvtColor(im.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab) / 100.0
    gx = cv2.Sobel(lab, cv2.CV_32F, 1, 0, ksize=1)
    gy = cv2.Sobel(lab, cv2.CV_32F, 0, 1, ksize=1)
    g = np.sqrt((gx * gx + gy * gy).sum(axis=2))
    return (g ** power).astype(np.float32)


def geodesic_popup(rgb_small: np.ndarray, *, lam: float = 0.5, side_fraction: float = 0.25,
                   smooth_passes: int = 3, power: float = 2.0) -> np.ndarray:
    """Nearness 0..1 from geodesic distances to the far (top, upper sides) and near (bottom) seeds."""
    h, w = rgb_small.shape[:2]
    cost = edge_cost(rgb_small, smooth_passes=smooth_passes, power=power) + lam / h
    side = int(h * side_fraction)
    far_seeds = [(0, x) for x in range(w)] + [(y, 0) for y in range(side)] + [(y, w - 1) for y in range(side)]
    near_seeds = [(h - 1, x) for x in range(w)]
    d_far, _ = MCP_Geometric(cost).find_costs(far_seeds)
    d_near, _ = MCP_Geometric(cost).find_costs(near_seeds)
    return (d_far / np.maximum(d_far + d_near, 1e-12)).astype(np.float32)


def vertical_ramp(h: int, w: int) -> np.ndarray:
    """0 at the top row, 1 at the bottom row (the ground-plane prior)."""
    return np.repeat(np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None], w, axis=1)
