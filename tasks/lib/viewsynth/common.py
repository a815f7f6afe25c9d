"""What every part of the view-synthesis engine shares: the tuned defaults, the resampling
filters, and the row-band thread pool."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

INTERP = {"nearest": cv2.INTER_NEAREST, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC,
          "lanczos": cv2.INTER_LANCZOS4}

# Defaults measured on the Middlebury yardstick (one set for every scene, see docs/rendering.md).
JUMP_PX = 1.0  # a disparity step above this between neighbours is a depth edge, not a slope (stereo;
# issue 12 §3: 1.5 before; the same at full size, +0.2-1.1 dB disoccluded on half- and quarter-size scenes)
PARALLAX_JUMP_PX = 1.5  # the same for parallax frames (measured there at 1.5; not re-measured)
NEAR_EXTEND = 0.75  # px the near side of an edge covers the far side fully (its anti-aliased edge pixels)...
NEAR_SOFT = 1.5  # ...then fading out until this far (issue 12 §3, fifth round: a hard 1.0 px before)
GAP_EXTEND = 0.5  # ...and over a disocclusion: its own half pixel fully (1.75 px, hard, before the fifth round)...
GAP_SOFT = 3.5  # ...then its soft edge fading out until 3.5 px past it (see shift._soft_edges, docs/rendering.md)
ROW_SOFT = 0.4  # share of a near surface's edge in the filled pixel just above or below it (shift._soft_rows)
FAR_EXTEND = 0.0  # px the far side extends: none (issue 12 §3: 0.25 read the occluder into the pixel beside a hole)
FAR_STRETCH = 0.0  # share of the background's first clean pixel in a hole's last pixel (0.15 until the
# eighth round of issue 12 §3, where ROW_LEAN took its place)...
FAR_STRETCH_PX = 12.0  # ...fading to none this many px into the hole (shift._background_stretch)
FAR_DEMIX = 0.3  # ...and in the first visible background pixel, mixed with the occluder that has moved away
ROW_LEAN = 0.2  # share of the visible background at a run of holes' ends in its pixels next to them...
ROW_LEAN_PX = 10.0  # ...weight ROW_LEAN * P / (P + k - 1) at k px from the end (shift._row_lean)...
ROW_LEAN_REACH = 24  # ...none past this many px (6 % there; 32 scores the same, 16 0.003 dB lower)...
ROW_LEAN_ROWS = 2  # ...each end averaged over this many rows above and below
COLUMN_STRETCH = 0.2  # share of the visible background just above or below a hole in its pixels...
COLUMN_STRETCH_PX = 6  # ...fading to none past this many rows (shift._column_stretch)
HIDDEN_SPREAD = 2.0  # background hidden behind an edge: this many times the jump...
HIDDEN_MARGIN = 16.0  # ...plus this many pixels is inpainted in the background layer
AUTO_CUBIC_PIXELS = 4_000_000  # interpolation "auto": bicubic up to this size, bilinear above


def threads() -> int:
    """Worker threads for row bands (numpy and OpenCV release the GIL on large arrays):
    ``DEPTHCRAFT_THREADS`` (unset, empty or ``0``: every core). Not a whole number >= 0:
    :class:`~depthcraft.tasks.lib.errors.ParameterError` naming the variable (a typo is said,
    not silently replaced by every core)."""
    from ..settings import env_number

    n = env_number("DEPTHCRAFT_THREADS", 0, least=0, units="threads", whole=True,
                   hint="e.g. DEPTHCRAFT_THREADS=4 (0 or unset: every core)")
    return n or (os.cpu_count() or 1)


def by_bands(fn, h: int, *, rows: int = 16, workers: int | None = None) -> list:
    """``fn(slice)`` over horizontal bands of ``h`` rows, in parallel; results in band order.
    Row-local work in small bands keeps numpy's temporaries in cache: on a 12 MP image,
    16-row bands run about ten times faster than whole-image array operations."""
    bands = [slice(y, min(y + rows, h)) for y in range(0, h, rows)]
    n = min(threads() if workers is None else workers, len(bands))
    if n <= 1:
        return [fn(b) for b in bands]
    with ThreadPoolExecutor(max_workers=n) as ex:
        return list(ex.map(fn, bands))


def rgb(img: np.ndarray) -> np.ndarray:
    """RGB of a 3- or 4-channel uint8 image (the 4th channel of a 4-channel stack is padding)."""
    return cv2.cvtColor(img, cv2.COLOR_RGBA2RGB) if img.shape[2] == 4 else img



def resolve_interpolation(interpolation: str, pixels: int) -> str:
    """``auto``: bicubic is sharper; on large photos the difference is invisible (and bilinear
    is several times faster)."""
    if interpolation == "auto":
        return "cubic" if pixels <= AUTO_CUBIC_PIXELS else "linear"
    return interpolation


def layer_channels(interpolation: str) -> int:
    """The fastest stack layout for a resampling filter (see :func:`make_layers`)."""
    return 4 if interpolation in ("linear", "nearest") else 3



def take_px(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The pixels ``a[idx]`` of a C-contiguous ``N x C`` array (an image's pixels as rows), as
    ``np.take``: several times faster than fancy indexing on rows of three bytes."""
    return np.take(a, idx, axis=0)


def put_px(a: np.ndarray, idx: np.ndarray, v: np.ndarray) -> None:
    """``a[idx] = v`` for a C-contiguous ``N x C`` uint8 array and distinct ``idx``: each pixel
    written as one item (twice as fast as fancy assignment of rows)."""
    c = a.shape[1]
    np.put(a.view(f"V{c}").reshape(-1), idx, np.ascontiguousarray(v, a.dtype).view(f"V{c}").reshape(-1))
