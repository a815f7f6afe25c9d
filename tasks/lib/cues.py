"""Monocular depth cues for the ``classic`` provider, computed on a small working image.

The cue the provider uses is a *geodesic pop-up*: the scene is assumed to be a ground plane
rising from the bottom of the frame to a backdrop at the top (the vertical-position prior used
by Hoiem, Efros & Hebert, "Automatic Photo Pop-up", SIGGRAPH 2005), and objects are the regions
enclosed by strong colour edges. For each pixel we take the geodesic distance (minimum path cost,
Dijkstra over the pixel grid) to the far seeds (the top row and the upper quarter of the side
columns) and to the near seeds (the bottom row), with a step cost of

    colour gradient ** 1.5 (CIE Lab, after bilateral smoothing)  +  lam / height

and return ``d_far / (d_far + d_near)``. Without edges this is exactly the vertical ramp; a
region walled off by strong edges takes the value of the side it is best connected to, so an
object standing on the ground stays near over its whole height while the backdrop stays far.
Seeding the background from the image border is the boundary prior of geodesic saliency
(Wei, Wen, Zhu & Sun, "Geodesic Saliency Using Background Priors", ECCV 2012).

:func:`nearness` adds a tenth of a *figure/ground* map to the pop-up: the geodesic edge cost of
reaching the left or right border (boundary connectivity, Zhu et al. 2014), so objects walled
off from the sides (a doll, a plant, a motorbike in front of a backdrop that reaches the floor)
come forward even where they merge with the backdrop below. The sum is blurred a little (more
planar maps fit real depth better); the guided upsampling restores the outlines. On the nine
Middlebury scenes this lowers the ordinal error from 0.169 to 0.165 and AbsRel from 0.213 to
0.208 (docs/depth.md).

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


def edge_cost(rgb_small: np.ndarray, *, smooth_passes: int = 3, power: float = 1.5) -> np.ndarray:
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
                   smooth_passes: int = 3, power: float = 1.5, cost: np.ndarray | None = None) -> np.ndarray:
    """Nearness 0..1 from geodesic distances to the far (top, upper sides) and near (bottom) seeds.

    ``cost``: the edge cost of :func:`edge_cost`, when the caller already has it.
    """
    h, w = rgb_small.shape[:2]
    if cost is None:
        cost = edge_cost(rgb_small, smooth_passes=smooth_passes, power=power)
    cost = cost + lam / h
    side = int(h * side_fraction)
    far_seeds = [(0, x) for x in range(w)] + [(y, 0) for y in range(side)] + [(y, w - 1) for y in range(side)]
    near_seeds = [(h - 1, x) for x in range(w)]
    d_far, _ = MCP_Geometric(cost).find_costs(far_seeds)
    d_near, _ = MCP_Geometric(cost).find_costs(near_seeds)
    return (d_far / np.maximum(d_far + d_near, 1e-12)).astype(np.float32)


def side_figure(cost: np.ndarray) -> np.ndarray:
    """Figure/ground map 0..1 (1 = figure): geodesic distance to the left and right borders.

    The boundary prior of geodesic saliency (Wei et al., ECCV 2012) and of boundary connectivity
    (Zhu, Liang, Wei & Sun, "Saliency Optimization from Robust Background Detection", CVPR 2014):
    what is walled off from the image sides by strong edges is an object in front of the
    backdrop. Only the sides are seeds: the top is already far in the pop-up, and the bottom is
    where objects stand (a figure touches it). The path cost is the edge cost alone, with no
    length term: a photo without edges has no figure (a length term would be a centre prior).
    """
    h, w = cost.shape
    seeds = [(y, 0) for y in range(h)] + [(y, w - 1) for y in range(h)]
    d, _ = MCP_Geometric(cost).find_costs(seeds)
    return (d / max(float(d.max()), 1e-12)).astype(np.float32)


def nearness(rgb_small: np.ndarray, *, figure: float = 0.1, smooth: float = 4.0, power: float = 1.5,
             smooth_passes: int = 3, lam: float = 0.5) -> np.ndarray:
    """The classic provider's cue at the working size: pop-up + ``figure`` x side figure map.

    The sum is blurred by a Gaussian of ``smooth`` working pixels: the pop-up is piecewise flat
    with steps at strong colour edges, and softer, more planar maps fit real depth better (lower
    AbsRel); the full-size guided upsampling puts the outlines back on the photo's edges.
    Larger = nearer; not normalised.
    """
    cost = edge_cost(rgb_small, smooth_passes=smooth_passes, power=power)
    near = geodesic_popup(rgb_small, lam=lam, cost=cost)
    if figure:
        near = near + figure * side_figure(cost)
    if smooth > 0:
        near = cv2.GaussianBlur(near, (0, 0), smooth)
    return near.astype(np.float32)


def vertical_ramp(h: int, w: int) -> np.ndarray:
    """0 at the top row, 1 at the bottom row (the ground-plane prior)."""
    return np.repeat(np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None], w, axis=1)


# -- perspective: vanishing lines -----------------------------------------------------------------
# Lines that converge on one point inside (or near) the frame are the strongest single-image depth
# evidence that exists without learning: a corridor, a road, a room seen along its length. Distance
# from the vanishing point then orders depth on every plane that recedes to it (the "box" room
# layout of Hedau, Hoiem & Forsyth, "Recovering the Spatial Layout of Cluttered Rooms", ICCV 2009,
# and the ground plane of Hoiem et al. 2005). Photos without such lines (close-ups, portraits,
# the Middlebury scenes) get a low confidence and are left to the pop-up.
VP_WIDTH = 640  # line detection runs on a copy this wide: LSD needs more than the 300 px cue image
VP_GRID = 48  # candidate vanishing points per axis, over the frame and a quarter beyond each side
VP_SIGMA_DEG = 2.0  # angular tolerance of a segment pointing at a candidate


def line_segments(gray: np.ndarray, *, min_len: float = 0.04) -> np.ndarray:
    """Straight segments ``N x 4`` (x0, y0, x1, y1; float32 pixels) of a uint8 gray image.

    LSD (von Gioi et al., "LSD: a Fast Line Segment Detector with a False Detection Control",
    IPOL 2012), keeping segments longer than ``min_len`` x the longer image side.
    """
    lines = cv2.createLineSegmentDetector().detect(gray)[0]
    if lines is None:
        return np.zeros((0, 4), np.float32)
    seg = lines.reshape(-1, 4)
    length = np.hypot(seg[:, 2] - seg[:, 0], seg[:, 3] - seg[:, 1])
    return seg[length >= min_len * max(gray.shape)].astype(np.float32)


def _oblique(seg: np.ndarray):
    d = seg[:, 2:] - seg[:, :2]
    length = np.hypot(d[:, 0], d[:, 1]) + 1e-9
    u = d / length[:, None]
    ang = np.degrees(np.arctan2(np.abs(u[:, 1]), np.abs(u[:, 0])))  # 0 horizontal .. 90 vertical
    # Horizontal and vertical lines of an upright camera meet at infinity, not at the depth VP.
    keep = (ang > 8) & (ang < 80)
    return (seg[:, :2] + seg[:, 2:])[keep] / 2, u[keep], length[keep]


def _pointing(mid, u, length, p, sigma_deg):
    """Weight of each segment pointing at point(s) ``p`` (``G x 2``): ``G x N``."""
    v = p[:, None, :] - mid[None]
    dist = np.linalg.norm(v, axis=2) + 1e-6
    sin = np.abs(v[..., 0] * u[None, :, 1] - v[..., 1] * u[None, :, 0]) / dist
    beyond = dist > 0.5 * length[None]  # the point lies past the segment's ends, not on it
    return np.exp(-0.5 * (sin / np.sin(np.radians(sigma_deg))) ** 2) * beyond


def vanishing_layout(rgb: np.ndarray) -> dict | None:
    """The dominant vanishing point of a uint8 RGB photo, and what recedes to it.

    Returns ``None`` (fewer than three oblique segments) or a dict: ``vp`` (x, y) in pixels of
    ``rgb``; ``confidence`` 0..1, the share of the oblique segments' length that points at it
    (about 0.8 for a corridor or a road, under 0.35 on the Middlebury close-ups); ``walls``,
    true when supporting segments lie above the VP too (ceiling and wall tops: a room or a
    street between buildings, where the sides are near), false for a ground plane alone
    (a road, a field: the sides at the horizon are far). Voting over a grid of candidates,
    each segment weighted by its length and its angle to the candidate (Rother, "A new approach
    to vanishing point detection in architectural environments", IVC 2002).
    """
    small = working_image(rgb, VP_WIDTH)
    scale = rgb.shape[1] / small.shape[1]
    h, w = small.shape[:2]
    mid, u, length = _oblique(line_segments(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)))
    if len(mid) < 3:
        return None
    xs = np.linspace(-0.25 * w, 1.25 * w, VP_GRID)
    ys = np.linspace(-0.25 * h, 1.25 * h, VP_GRID)
    cand = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
    score = (_pointing(mid, u, length, cand, VP_SIGMA_DEG) * length[None]).sum(1)
    i = int(np.argmax(score))
    best = cand[i]
    conf = float(score[i] / length.sum())
    gy, gx = divmod(i, VP_GRID)
    # A best candidate on the grid's border stands for nearly parallel lines (a frontal texture,
    # a tilted page): no finite vanishing point. One below the frame is no horizon of an upright
    # camera looking ahead (a pavement seen from above): not a depth cue we can read either.
    if gx in (0, VP_GRID - 1) or gy in (0, VP_GRID - 1) or best[1] > h:
        conf = 0.0
    support = _pointing(mid, u, length, best[None], 2 * VP_SIGMA_DEG)[0] > 0.5
    above = float(length[support & (mid[:, 1] < best[1])].sum())
    return {"vp": (float(best[0] * scale), float(best[1] * scale)), "confidence": conf,
            "walls": above > 0.05 * (h + w)}


def perspective_nearness(h: int, w: int, layout: dict, *, scale: float = 1.0) -> np.ndarray:
    """Nearness 0..1 (float32 ``h x w``) from a :func:`vanishing_layout`: distance from the VP.

    On a ground plane seen by an upright camera, disparity is proportional to the row distance
    below the horizon (the VP's row); on walls and ceilings receding to the VP it is proportional
    to the distance from the VP across them. ``walls`` false: the ground term alone (above the
    horizon is left flat, for the other cues to order); true: the nearest of the ground, wall and
    ceiling terms, which is a square corridor. ``scale`` maps the layout's pixels to this grid.
    """
    vx, vy = layout["vp"][0] * scale, layout["vp"][1] * scale
    f = float(max(h, w))
    dy = (np.arange(h, dtype=np.float32)[:, None] - vy) / f
    dx = (np.arange(w, dtype=np.float32)[None, :] - vx) / f
    n = np.maximum(dy, 0.0) * np.ones((1, w), np.float32)
    if layout["walls"]:
        n = np.maximum(np.maximum(n, np.abs(dx)), -dy)
    return (n / max(float(n.max()), 1e-6)).astype(np.float32)


def perspective_weight(layout: dict | None, *, strength: float = 0.9, lo: float = 0.4, hi: float = 0.7) -> float:
    """Share of the fused map given to the perspective cue: 0 below ``lo`` confidence, ``strength`` above ``hi``."""
    if layout is None:
        return 0.0
    return float(strength * np.clip((layout["confidence"] - lo) / (hi - lo), 0.0, 1.0))
