"""The ``classic`` provider: single-image depth with no weights and no network.

Method (details and citations in ``tasks/lib/cues.py``): the photo is reduced to a small working
image (300 px wide), a *geodesic pop-up* nearness is computed there (ground-plane ramp from the
bottom of the frame, broken into regions by strong colour edges; Hoiem et al. 2005, Wei et al.
2012), a little of a figure/ground map is added (regions walled off from the image sides are
objects in front of the backdrop; Zhu et al. 2014), the sum is smoothed, and the result is
brought back to full size with the fast guided filter (He & Sun 2015) so that the map follows
the photo's edges. Output: ``relative_inverse`` normalised 0..1,
larger = nearer.

It is a prior, not a trained model: it knows "lower in the frame is nearer" and "things enclosed
by strong edges are objects standing on the ground". It fails on photos taken looking down or
up, on ceilings and overhangs (top of frame that is near), on skies that reach the bottom, and on
objects with weak outlines; see docs/depth.md for measured figures.
"""

from __future__ import annotations

import numpy as np

from ..lib.cues import (VP_WIDTH, nearness, perspective_nearness, perspective_weight, vanishing_layout,
                        vertical_ramp, working_image)
from ..lib.depthmap import DepthMap
from ..lib.errors import InputError
from ..lib.guided import gray01, guided_upsample
from .base import DepthRequest

VERSION = "3"  # 3: perspective (vanishing-point) cue fused with the pop-up
WORK_WIDTH = 300  # working resolution of the cue (columns)
GUIDE_RADIUS = 2  # guided upsampling window radius, in working-image pixels
GUIDE_EPS = 1e-3


def estimate_classic(rgb: np.ndarray, *, work_width: int = WORK_WIDTH) -> np.ndarray:
    """Relative inverse depth (float32 ``H x W``, 0..1, larger = nearer) of a uint8 RGB photo."""
    a = np.asarray(rgb)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise InputError(f"classic needs a uint8 RGB image, got {a.dtype} {a.shape}")
    return _estimate(a, work_width)[0]


def _estimate(a: np.ndarray, work_width: int) -> tuple[np.ndarray, dict]:
    h, w = a.shape[:2]
    # One pass over the full photo: the line detector's copy, then the cue image from it.
    mid = working_image(a, VP_WIDTH)
    small = working_image(mid, work_width)
    near = nearness(small)
    layout = vanishing_layout(mid)
    weight = perspective_weight(layout)
    if weight > 0:
        # Robust fusion: both cues brought to 0..1 (the pop-up by its 1st..99th percentiles),
        # then mixed by the perspective cue's confidence.
        lo, hi = np.percentile(near, [1, 99])
        persp = perspective_nearness(*near.shape, layout, scale=near.shape[1] / mid.shape[1])
        near = (1 - weight) * (near - lo) / max(float(hi - lo), 1e-9) + weight * persp
    # A faint ramp breaks exact ties (flat patches) so that every pair of rows is ordered.
    near = near + 1e-3 * vertical_ramp(*near.shape)
    full = guided_upsample(near, gray01(a), r=GUIDE_RADIUS, eps=GUIDE_EPS) if (h, w) != near.shape else near
    lo, hi = float(full.min()), float(full.max())
    out = (full - lo) / max(hi - lo, 1e-12)
    info = {"perspective_weight": round(weight, 3)}
    if layout is not None:
        f = w / mid.shape[1]  # photo pixels
        info["vanishing_point"] = [round(layout["vp"][0] * f, 1), round(layout["vp"][1] * f, 1)]
        info["vanishing_confidence"] = round(layout["confidence"], 3)
        info["walls"] = layout["walls"]
    return np.clip(out, 0.0, 1.0).astype(np.float32), info


class ClassicProvider:
    """Embedded default provider (see module docstring)."""

    name = "classic"

    def identity(self) -> dict:
        return {"provider": "classic", "version": VERSION}

    def estimate(self, req: DepthRequest) -> DepthMap:
        a = np.asarray(req.image)
        if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
            raise InputError(f"classic needs a uint8 RGB image, got {a.dtype} {a.shape}")
        data, info = _estimate(a, WORK_WIDTH)
        return DepthMap(data=data, kind="relative_inverse", source=f"classic-{VERSION}",
                        meta={"method": "geodesic pop-up + side figure map + vanishing-point perspective "
                                        "+ guided upsampling", **info})
