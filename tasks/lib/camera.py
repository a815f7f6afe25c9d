"""Camera motions for parallax videos: named motions, free keyframes, easing, loops.

A motion is a function of the normalised time ``t`` in [0, 1] that returns a
:class:`depthcraft.tasks.lib.viewsynth.Pose`. Looping motions are periodic: the pose at ``t = 1`` equals the
pose at ``t = 0``, and a video of N frames shows ``t = i / N`` so that it closes seamlessly.
Amounts are in users' terms: ``intensity`` is the largest parallax between the nearest and the
farthest surface, as a share of the output width; ``dolly`` the share of the distance to the
nearest surface the camera travels; ``zoom`` the focal-length change.
"""

from __future__ import annotations

import math
from typing import Callable, Literal

from pydantic import Field

from .errors import ParameterError
from .step import StepParams
from .viewsynth import Pose

MotionName = Literal["orbit", "circle", "swing", "swing_vertical", "dolly", "zoom", "ken_burns",
                     "dolly_zoom", "keyframes"]
MOTIONS = ("orbit", "circle", "swing", "swing_vertical", "dolly", "zoom", "ken_burns", "dolly_zoom", "keyframes")
EasingName = Literal["linear", "ease_in", "ease_out", "ease_in_out", "smooth"]


def ease(name: str, t: float) -> float:
    """Easing curves on [0, 1] -> [0, 1] (``smooth``: smootherstep, zero speed and acceleration
    at both ends)."""
    t = min(max(float(t), 0.0), 1.0)
    if name == "linear":
        return t
    if name == "ease_in":
        return t * t
    if name == "ease_out":
        return 1.0 - (1.0 - t) ** 2
    if name == "ease_in_out":
        return 0.5 - 0.5 * math.cos(math.pi * t)
    if name == "smooth":
        return t * t * t * (t * (6.0 * t - 15.0) + 10.0)
    raise ParameterError(f"unknown easing {name!r}; linear, ease_in, ease_out, ease_in_out or smooth",
                         parameter="easing")


class Keyframe(StepParams):
    """One keyframe of a free camera path; values between keyframes are eased."""

    t: float = Field(..., ge=0.0, le=1.0, description="time, as a share of the video (0..1)")
    x: float = Field(0.0, description="sideways camera offset: parallax between nearest and farthest, share of width")
    y: float = Field(0.0, description="vertical camera offset, share of width")
    dolly: float = Field(0.0, gt=-2.0, lt=0.9, description="forward travel, share of the distance to the nearest surface")
    zoom: float = Field(1.0, gt=0.1, description="focal length factor")
    focus: float = Field(0.5, ge=0.0, le=1.0, description="nearness (0 far .. 1 near) of the plane that stays still")
    pan_x: float = Field(0.0, description="image-plane pan, share of width")
    pan_y: float = Field(0.0, description="image-plane pan, share of width")
    easing: EasingName = Field("ease_in_out", description="easing from this keyframe to the next")


def _keyframe_path(keys: list[Keyframe], width: float, loop: bool) -> Callable[[float], Pose]:
    if not keys:
        raise ParameterError("the keyframes motion needs at least one keyframe", parameter="keyframes")
    ks = sorted(keys, key=lambda k: k.t)
    if loop:  # close the path: after the last keyframe, ease back to the first at t = 1
        ks = ks + [ks[0].model_copy(update={"t": 1.0 + ks[0].t})]
        if ks[0].t > 0:
            ks = [ks[-2].model_copy(update={"t": ks[-2].t - 1.0})] + ks

    def pose(t: float) -> Pose:
        if t <= ks[0].t:
            a = b = ks[0]
            u = 0.0
        elif t >= ks[-1].t:
            a = b = ks[-1]
            u = 0.0
        else:
            i = max(j for j in range(len(ks) - 1) if ks[j].t <= t)
            a, b = ks[i], ks[i + 1]
            u = ease(a.easing, (t - a.t) / max(b.t - a.t, 1e-9))
        mix = lambda f: getattr(a, f) + (getattr(b, f) - getattr(a, f)) * u  # noqa: E731
        return Pose(x=mix("x") * width, y=mix("y") * width, z=mix("dolly"), zoom=mix("zoom"), focus=mix("focus"),
                    pan_x=mix("pan_x") * width, pan_y=mix("pan_y") * width)

    return pose


def motion_path(motion: str, *, width: float, intensity: float = 0.03, dolly: float = 0.25,
                zoom: float = 0.15, focus: float = 0.5, loop: bool = True, easing: str = "ease_in_out",
                keyframes: list[Keyframe] | None = None) -> Callable[[float], Pose]:
    """The pose at each normalised time for a named motion (``width``: output width, px).

    Looping motions (``loop=True``) go out and come back (or round) so that t = 1 equals t = 0;
    otherwise they travel one way with ``easing``.
    """
    a = intensity * width
    two_pi = 2.0 * math.pi

    def there_and_back(t: float) -> float:  # 0 -> 1 -> 0, smooth at both ends
        return 0.5 - 0.5 * math.cos(two_pi * t) if loop else ease(easing, t)

    if motion in ("orbit", "circle"):
        # the camera circles the focus plane: near and far swap sides around the subject
        ry = 0.5 if motion == "orbit" else 1.0
        return lambda t: Pose(x=a * math.cos(two_pi * t) if loop else a * (2 * ease(easing, t) - 1),
                              y=a * ry * math.sin(two_pi * t), focus=focus)
    if motion == "swing":
        return lambda t: Pose(x=a * (math.sin(two_pi * t) if loop else 2 * ease(easing, t) - 1), focus=focus)
    if motion == "swing_vertical":
        return lambda t: Pose(y=a * (math.sin(two_pi * t) if loop else 2 * ease(easing, t) - 1), focus=focus)
    if motion == "dolly":
        # forward, with a touch of rise so that the ground plane opens up
        return lambda t: Pose(z=dolly * there_and_back(t), y=-0.15 * a * there_and_back(t), focus=focus)
    if motion == "zoom":
        return lambda t: Pose(zoom=1.0 + zoom * there_and_back(t), focus=focus)
    if motion == "ken_burns":
        # slow push-in with a diagonal pan and a little parallax
        def kb(t: float) -> Pose:
            u = there_and_back(t)
            return Pose(zoom=1.0 + zoom * u, pan_x=-0.04 * width * (u - 0.5), pan_y=-0.02 * width * (u - 0.5),
                        x=0.6 * a * (u - 0.5), z=0.3 * dolly * u, focus=focus)
        return kb
    if motion == "dolly_zoom":
        # vertigo: move in while zooming out so that the focus plane keeps its size
        def dz(t: float) -> Pose:
            z = dolly * there_and_back(t)
            return Pose(z=z, zoom=1.0 - z * focus, focus=focus)
        return dz
    if motion == "keyframes":
        return _keyframe_path(list(keyframes or []), width, loop)
    raise ParameterError(f"unknown motion {motion!r}; one of {', '.join(MOTIONS)}", parameter="motion")


def frame_times(n: int, loop: bool) -> list[float]:
    """Normalised times of ``n`` frames: a loop never shows t = 1 (it is frame 0 again)."""
    if n <= 1:
        return [0.0]
    return [i / n for i in range(n)] if loop else [i / (n - 1) for i in range(n)]


def needed_overscan(poses: list[Pose], size: tuple[int, int], *, cap: float = 1.6) -> float:
    """How much larger than the output the source must be so that no pose sees past its edges
    (checked at the frame corners for the nearest and farthest surfaces)."""
    w, h = size
    cx, cy = w / 2.0, h / 2.0
    need = 1.0
    for p in poses:
        dx, dy = p.offset()
        for qx in (0.0, float(w)):
            for qy in (0.0, float(h)):
                px = cx + (qx - cx - dx - p.pan_x) / p.zoom
                py = cy + (qy - cy - dy - p.pan_y) / p.zoom
                for wv in (0.0, 1.0):
                    ux = px + wv * (p.x - p.z * (px - cx))
                    uy = py + wv * (p.y - p.z * (py - cy))
                    need = max(need, abs(ux - cx) / cx, abs(uy - cy) / cy)
    return min(need * 1.01, cap)
