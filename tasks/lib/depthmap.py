"""The in-memory depth type and every conversion between depth kinds.

A :class:`DepthMap` is a ``float32 H x W`` array plus what its values mean (``kind``):

- ``relative_inverse``: larger = nearer, scale and shift unknown (what monocular models and
  the ``classic`` provider produce; normalised to 0..1 by convention).
- ``disparity``: pixels, larger = nearer; a left pixel at x appears in the right view at
  ``x - d`` (the Middlebury convention).
- ``depth``: larger = farther, in unknown units (a user's depth file).
- ``metric``: larger = farther, in meters.

All conversions live here so that no other module guesses a convention.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .errors import ParameterError

KINDS = ("relative_inverse", "disparity", "depth", "metric")
NEAR_IS_LARGER = {"relative_inverse": True, "disparity": True, "depth": False, "metric": False}

# User-facing ``--depth-kind`` values and the kinds they mean.
USER_KINDS = {"disparity": "disparity", "depth": "depth", "metric": "metric",
              "relative": "relative_inverse", "inverse": "relative_inverse"}


@dataclass
class DepthMap:
    data: np.ndarray
    kind: str = "relative_inverse"
    source: str = "unknown"
    fov_deg: float | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ParameterError(f"unknown depth kind {self.kind!r}; one of {', '.join(KINDS)}",
                                 parameter="depth_kind")
        a = np.asarray(self.data, dtype=np.float32)
        if a.ndim == 3 and a.shape[2] >= 1:
            a = a[..., 0]
        if a.ndim != 2:
            raise ParameterError(f"depth must be a 2-D array, got shape {a.shape}", parameter="depth")
        self.data = np.ascontiguousarray(a)

    @property
    def shape(self) -> tuple[int, int]:
        return self.data.shape  # type: ignore[return-value]

    def with_data(self, data: np.ndarray, **changes) -> "DepthMap":
        return replace(self, data=np.asarray(data, dtype=np.float32), **changes)

    def describe(self) -> dict:
        """Metadata that travels with a stored depth artifact (JSON-safe)."""
        d = {"kind": self.kind, "source": self.source, "near_is_larger": NEAR_IS_LARGER[self.kind]}
        if self.fov_deg is not None:
            d["fov_deg"] = float(self.fov_deg)
        d.update({k: v for k, v in self.meta.items() if isinstance(v, (str, int, float, bool))})
        return d


def _finite_fill(a: np.ndarray) -> np.ndarray:
    """Replace NaN/inf by the median of the finite values (so that filters never see them)."""
    ok = np.isfinite(a)
    if ok.all():
        return a
    out = a.copy()
    out[~ok] = float(np.median(a[ok])) if ok.any() else 0.0
    return out


def nearness(dm: DepthMap, *, eps: float = 1e-6) -> np.ndarray:
    """A map where larger = nearer, affine in inverse depth where the kind allows it.

    ``disparity`` and ``relative_inverse`` are returned as they are; ``depth`` and ``metric``
    become ``1 / depth``. Non-finite values are filled with the median.
    """
    a = _finite_fill(dm.data)
    if NEAR_IS_LARGER[dm.kind]:
        return a
    return 1.0 / np.maximum(a, eps)


def normalized_nearness(dm: DepthMap, *, robust: float = 0.0) -> np.ndarray:
    """Nearness scaled to 0..1 (1 = nearest). ``robust`` clips that share at each end first."""
    a = np.asarray(nearness(dm), np.float32)  # (read only below: no copy needed)
    if robust > 0:
        lo, hi = percentiles(a, [100 * robust, 100 * (1 - robust)])
    else:
        lo, hi = float(a.min()), float(a.max())
    if hi - lo < 1e-12:
        return np.zeros_like(a)
    if a.ndim != 2:
        return np.clip((a - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    out = np.empty(a.shape, np.float32)

    def band(y0: int) -> None:
        # the plain expression's float64 arithmetic, 64 rows at a time: whole-image float64
        # temporaries (96 MB each at 12 MP) cost more than the arithmetic
        sl = slice(y0, y0 + 64)
        out[sl] = np.clip((a[sl] - lo) / (hi - lo), 0.0, 1.0)

    _on_cores(band, range(0, a.shape[0], 64))
    return out


def _on_cores(fn, items) -> None:
    """``fn`` over ``items`` on all cores, or ``DEPTHCRAFT_THREADS`` of them (as the view
    synthesis's row bands; numpy releases the GIL on these band operations)."""
    from concurrent.futures import ThreadPoolExecutor

    from .viewsynth.common import threads

    items = list(items)
    cores = threads()  # (DEPTHCRAFT_THREADS that is not a whole number >= 0: a ParameterError)
    n = min(cores, len(items))
    if n <= 1:
        for i in items:
            fn(i)
        return
    with ThreadPoolExecutor(max_workers=n) as ex:
        list(ex.map(fn, items))


def percentiles(a: np.ndarray, q) -> np.ndarray:
    """``np.percentile(a, q)`` (linear method, float64 results, bit for bit) for finite float
    arrays, several times faster on large ones: instead of partitioning the whole array, the
    order statistics needed are bracketed from a sorted sample, the values below each bracket
    counted, and only the values inside it partitioned. Falls back to ``np.percentile`` when a
    bracket misses (it cannot give a wrong answer) and for small or non-finite input."""
    a = np.asarray(a)
    qs = np.true_divide(np.asarray(q, np.float64), 100)
    n = a.size
    if n < 1_000_000 or a.dtype.kind != "f" or qs.ndim != 1 or not np.isfinite(qs).all() \
            or (qs < 0).any() or (qs > 1).any():
        return np.percentile(a, q)
    flat = a.reshape(-1)
    if np.isnan(flat.max()):  # NaN propagates through max: numpy's answer is NaN
        return np.percentile(a, q)
    # numpy's virtual index for method "linear", its neighbours and weight
    virtual = (n - 1) * qs
    prev = np.floor(virtual)
    nxt = prev + 1
    above = virtual >= n - 1
    prev[above] = n - 1
    nxt[above] = n - 1
    prev, nxt = prev.astype(np.intp), np.minimum(nxt, n - 1).astype(np.intp)
    gamma = np.asanyarray(virtual - np.floor(virtual), dtype=virtual.dtype)
    gamma[above] = virtual[above] - (n - 1)
    step = max(1, n // 200_000)
    sample = np.sort(flat[::step])
    m = sample.size
    margin = 8.0 * np.sqrt(m) + 16  # sample ranks: ~16 standard deviations
    values: dict[int, float] = {}
    for r0, r1 in zip(prev.tolist(), nxt.tolist()):
        j0, j1 = r0 / max(n - 1, 1) * (m - 1) - margin, r1 / max(n - 1, 1) * (m - 1) + margin
        lo_v = sample[int(j0)] if j0 > 0 else -np.inf
        hi_v = sample[int(j1) + 1] if j1 + 1 < m else np.inf
        below = int(np.count_nonzero(flat < lo_v))
        inside = flat[(flat >= lo_v) & (flat <= hi_v)]
        k0, k1 = r0 - below, r1 - below
        if not (0 <= k0 and k1 < inside.size):
            return np.percentile(a, q)
        part = np.partition(inside, [k0, k1])
        values[r0], values[r1] = part[k0], part[k1]
    pv = np.array([values[int(i)] for i in prev], a.dtype)
    nv = np.array([values[int(i)] for i in nxt], a.dtype)
    # numpy's _lerp
    diff = nv - pv
    res = np.add(pv, diff * gamma)
    np.subtract(nv, diff * (1 - gamma), out=res, where=gamma >= 0.5, casting="unsafe", dtype=res.dtype.type)
    return res


def to_disparity(dm: DepthMap, *, scale: float | None = None, max_disparity: float | None = None) -> np.ndarray:
    """Pixel disparity (larger = nearer) for view synthesis.

    - kind ``disparity``: ``data * scale`` (``scale`` defaults to 1): the exact mode.
    - other kinds: normalised nearness (0..1) times ``max_disparity`` pixels.
    """
    if dm.kind == "disparity" and max_disparity is None:
        return (_finite_fill(dm.data) * (1.0 if scale is None else float(scale))).astype(np.float32)
    if max_disparity is None:
        raise ParameterError("a relative depth map needs a maximum disparity (divergence) to make a view",
                             parameter="divergence")
    return (normalized_nearness(dm) * float(max_disparity) * (1.0 if scale is None else float(scale))).astype(np.float32)


def to_metric(dm: DepthMap, *, near_m: float | None = None, far_m: float | None = None,
              known_m: float | None = None, known_xy: tuple[int, int] | None = None) -> DepthMap:
    """Meters (larger = farther) from any kind and a user-given scale.

    Give ``near_m`` and ``far_m`` (the nearest and farthest distances in the scene: inverse
    depth is mapped affinely between them, the usual assumption for relative inverse depth), or
    one known distance ``known_m`` at pixel ``known_xy`` (x, y) (scale only: inverse depth is
    taken as proportional to nearness). A ``metric`` map is returned unchanged. A pixel with
    no depth (NaN, inf) stays NaN in meters: a hole is not a distance (metric_mm stores it as 0);
    a known distance at such a pixel is a :class:`ParameterError`.
    """
    if dm.kind == "metric":
        return dm
    holes = ~np.isfinite(dm.data)
    if known_m is not None and known_xy is not None:
        x, y = known_xy
        if 0 <= y < holes.shape[0] and 0 <= x < holes.shape[1] and holes[y, x]:
            raise ParameterError(f"pixel ({x}, {y}) has no depth in the map; give the known distance of another pixel",
                                 parameter="known_xy")
    if holes.any():
        out = to_metric(dm.with_data(_finite_fill(dm.data)), near_m=near_m, far_m=far_m, known_m=known_m,
                        known_xy=known_xy)
        return out.with_data(np.where(holes, np.float32(np.nan), out.data))
    if dm.kind == "depth" and known_m is not None and known_xy is not None:
        x, y = known_xy
        s = known_m / max(float(dm.data[y, x]), 1e-9)
        return dm.with_data(dm.data * s, kind="metric")
    n = normalized_nearness(dm)
    if near_m is not None and far_m is not None:
        if not (0 < near_m < far_m):
            raise ParameterError(f"need 0 < near ({near_m}) < far ({far_m})", parameter="near/far")
        inv = 1.0 / far_m + n * (1.0 / near_m - 1.0 / far_m)
        return dm.with_data(1.0 / inv, kind="metric", meta={**dm.meta, "near_m": near_m, "far_m": far_m})
    if known_m is not None and known_xy is not None:
        x, y = known_xy
        h, w = n.shape
        if not (0 <= x < w and 0 <= y < h):
            raise ParameterError(f"pixel ({x}, {y}) is outside the {w}x{h} map", parameter="known_xy")
        raw = nearness(dm)
        k = known_m * float(raw[y, x])
        return dm.with_data(k / np.maximum(raw, 1e-6), kind="metric", meta={**dm.meta, "known_m": known_m})
    raise ParameterError("metric depth needs near and far distances, or one known distance at a pixel",
                         parameter="near/far", hint="e.g. near: 0.5, far: 10 (meters)")


def resize_depth(dm: DepthMap, size: tuple[int, int]) -> DepthMap:
    """Resize to ``(w, h)``; values kept in their units except disparity, which scales with width."""
    import cv2

    w, h = size
    if (w, h) == (dm.shape[1], dm.shape[0]):
        return dm
    interp = cv2.INTER_AREA if w < dm.shape[1] else cv2.INTER_LINEAR
    a = cv2.resize(_finite_fill(dm.data), (w, h), interpolation=interp)
    if dm.kind == "disparity":
        a = a * (w / dm.shape[1])
    return dm.with_data(a)


def downscale_depth(dm: DepthMap, size: tuple[int, int]) -> DepthMap:
    """A depth map made for a full-size photo, fitted to that photo downscaled to ``size``
    (``(w, h)``, as ``--downscale`` does it: area average).

    Area average, as the photo itself: a pixel's value is the mean over the full-size pixels it
    covers, as its colour is their mean colour (nearest sampling would pick one of them and shift
    edges by up to half a pixel against the photo's). Invalid values (NaN, inf) stay out of the
    means; a pixel most of whose area was invalid stays NaN. Units: a disparity is a shift in
    pixels, so it is multiplied by the width ratio (``w / W``); relative nearness, depth and
    meters are kept as they are.
    """
    import cv2

    w, h = size
    if (w, h) == (dm.shape[1], dm.shape[0]):
        return dm
    a = np.asarray(dm.data, np.float32)
    ok = np.isfinite(a)
    if ok.all():
        out = cv2.resize(a, (w, h), interpolation=cv2.INTER_AREA)
    else:
        s = cv2.resize(np.where(ok, a, np.float32(0)), (w, h), interpolation=cv2.INTER_AREA)
        c = cv2.resize(ok.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(c >= 0.5, s / np.maximum(c, np.float32(1e-6)), np.float32(np.nan)).astype(np.float32)
    if dm.kind == "disparity":
        out *= np.float32(w / dm.shape[1])
    return dm.with_data(out)


# -- camera geometry (pinhole, from a field of view) ---------------------------------------------
def intrinsics(width: int, height: int, fov_deg: float) -> tuple[float, float, float, float]:
    """Pinhole ``(fx, fy, cx, cy)`` in pixels from the *horizontal* field of view.

    Square pixels (``fy = fx``), principal point at the image centre; pixel centres are at
    integer coordinates, so ``cx = (width - 1) / 2``.
    """
    if not (0 < fov_deg < 180):
        raise ParameterError(f"field of view must be between 0 and 180 degrees, got {fov_deg}", parameter="fov_deg")
    fx = (width / 2.0) / np.tan(np.radians(fov_deg) / 2.0)
    return float(fx), float(fx), (width - 1) / 2.0, (height - 1) / 2.0


def back_project(z: np.ndarray, fov_deg: float) -> np.ndarray:
    """Camera-space points ``float32 H x W x 3`` from z-depth (distance along the optical axis).

    Axes: x right, y down, z forward (OpenCV camera convention); units those of ``z``.
    """
    h, w = z.shape
    fx, fy, cx, cy = intrinsics(w, h, fov_deg)
    xs = (np.arange(w, dtype=np.float32) - cx) / fx
    ys = (np.arange(h, dtype=np.float32) - cy) / fy
    zz = z.astype(np.float32)
    return np.stack([zz * xs[None, :], zz * ys[:, None], zz], axis=-1)
