"""Edge-aware filters guided by the photo: the guided filter and its fast upsampling form.

- :func:`guided_filter`: He, Sun & Tang, "Guided Image Filtering", ECCV 2010 / TPAMI 2013. Output
  is locally an affine function of the guide, so edges of the guide pass into the filtered map.
- :func:`guided_upsample`: He & Sun, "Fast Guided Filter", arXiv:1505.00996 (2015): the affine
  coefficients are computed at low resolution and only applied at full resolution, which keeps a
  12 MP upsampling to a few full-size array operations.

Conventions: guides are float32 gray ``H x W`` in 0..1; maps are float32 ``H x W``.
"""

from __future__ import annotations

import cv2
import numpy as np


def box(a: np.ndarray, r: int) -> np.ndarray:
    """Mean over a ``(2r+1)^2`` window (reflected borders)."""
    return cv2.boxFilter(a, -1, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REFLECT)


def gray01(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB -> float32 gray 0..1."""
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0


def _coefficients(guide: np.ndarray, src: np.ndarray, r: int, eps: float) -> tuple[np.ndarray, np.ndarray]:
    mi, mp = box(guide, r), box(src, r)
    cov = box(guide * src, r) - mi * mp
    var = box(guide * guide, r) - mi * mi
    a = cov / (var + eps)
    b = mp - a * mi
    return box(a, r), box(b, r)


def guided_filter(guide: np.ndarray, src: np.ndarray, r: int = 4, eps: float = 1e-3) -> np.ndarray:
    """Guided filter of ``src`` by ``guide`` (same size), window radius ``r``, regulariser ``eps``."""
    g = np.asarray(guide, dtype=np.float32)
    s = np.asarray(src, dtype=np.float32)
    a, b = _coefficients(g, s, r, eps)
    return (a * g + b).astype(np.float32)


def guided_upsample(low: np.ndarray, guide_full: np.ndarray, *, r: int = 4, eps: float = 1e-3) -> np.ndarray:
    """Upsample ``low`` to the size of ``guide_full`` so that it follows the guide's edges.

    The guide is reduced to ``low``'s size, the filter's affine coefficients are computed there
    (radius ``r`` in low-resolution pixels) and bilinearly enlarged, then applied to the full
    guide (the fast guided filter).
    """
    h, w = guide_full.shape[:2]
    lh, lw = low.shape[:2]
    g_low = cv2.resize(guide_full, (lw, lh), interpolation=cv2.INTER_AREA)
    a, b = _coefficients(g_low, np.asarray(low, dtype=np.float32), r, eps)
    a = cv2.resize(a, (w, h), interpolation=cv2.INTER_LINEAR)
    b = cv2.resize(b, (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.multiply(a, guide_full) + b  # cv2 arithmetic: faster than numpy on 12 MP arrays
