"""The ``onnx`` provider: a monocular depth model run by ONNX Runtime on the local machine.

``onnx:<name>`` takes a model from the registry (:mod:`tasks.models`, downloaded once into the
user cache); ``onnx:/path/model.onnx`` takes a local file, described by an optional sidecar
JSON (see :func:`depthcraft.tasks.lib.models.local_model`).

Pre-processing follows Depth Anything's own (Yang et al., Depth Anything V2, 2024;
``Resize(keep_aspect_ratio=True, ensure_multiple_of=14, resize_method="lower_bound")``): the
photo is scaled so that its short side reaches the model's input size, each side rounded to a
multiple of 14, then normalised with the model's mean/std on 0..1 RGB. A model with a fixed
input shape gets exactly that shape. The output (N x H x W or N x 1 x H x W) is brought back to
the photo's size by fast guided upsampling (He & Sun, Fast Guided Filter, 2015): the linear
coefficients of a guided filter (He et al., Guided Image Filtering, ECCV 2010) are fitted at the
model's resolution and applied with the full-resolution photo as the guide, so depth edges
follow the photo's edges instead of the model's coarse grid. ``upsample: bilinear`` in the
provider options turns it off.

Output: relative models give ``relative_inverse`` normalised to 0..1 (1 = nearest); metric
models give ``metric`` in meters (larger = farther) when ``output: metric`` is asked, else their
normalised inverse.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..lib.depthmap import DepthMap, normalized_nearness
from ..lib.errors import InputError, ParameterError
from ..lib import onnxfile
from ..lib.models import (REGISTRY, ModelError, ModelInfo, cached_path, ensure_model, expected_sha256, file_sha256,
                          get_model, local_model, models_dir, repair_hint)
from .base import DepthRequest

# Preferred execution providers, best first; CPU is always added last.
_PREFERRED_EPS = ("CUDAExecutionProvider", "CoreMLExecutionProvider", "DmlExecutionProvider")
_SESSIONS: dict[tuple, object] = {}


def choose_execution_providers(available: list[str], wanted: str | None = None) -> list[str]:
    """ONNX Runtime providers to use: CUDA / CoreML / DirectML when present, CPU always last.

    ``wanted`` (``DEPTHCRAFT_ORT_PROVIDERS``, e.g. ``cpu`` or ``cuda,cpu``) restricts the list.
    """
    picked = [ep for ep in _PREFERRED_EPS if ep in available]
    if wanted:
        keys = [w.strip().lower() for w in wanted.split(",") if w.strip()]
        alias = {"cuda": "CUDAExecutionProvider", "coreml": "CoreMLExecutionProvider",
                 "directml": "DmlExecutionProvider", "dml": "DmlExecutionProvider", "cpu": "CPUExecutionProvider"}
        picked = [alias[k] for k in keys if k in alias and alias[k] in available and k != "cpu"]
    return picked + ["CPUExecutionProvider"]


def _unloadable(p: Path, reason: str) -> InputError:
    """One line naming the model file, what is wrong with it and the command that fixes it;
    ``.reason`` holds the words without the path (``auto`` puts them in its own line)."""
    cache = models_dir()
    if p.parent == cache and p.stem in REGISTRY:
        hint = f"delete it, or run {repair_hint(REGISTRY[p.stem])} to download it again"
    else:
        hint = "give a complete .onnx file (an export of the model, not a page or a partial copy)"
    err = InputError(reason, path=str(p), hint=hint)
    err.reason = reason
    return err


def get_session(path: str | os.PathLike):
    """One InferenceSession per model file (path, mtime, size) in this process.

    A file that is not an ONNX model at all (empty, random bytes, an HTML page, truncated: see
    lib/onnxfile.py) or that ONNX Runtime refuses raises :class:`InputError` in one line naming
    the file and the command that fixes it."""
    import onnxruntime as ort

    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_mtime_ns, st.st_size)
    sess = _SESSIONS.get(key)
    if sess is None:
        bad = onnxfile.problem(p)  # before ONNX Runtime, whose own words are a protobuf parser's
        if bad is not None:
            raise _unloadable(p, bad)
        eps = choose_execution_providers(ort.get_available_providers(), os.environ.get("DEPTHCRAFT_ORT_PROVIDERS"))
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # CUDA/CoreML fallbacks are warnings, not the user's concern
        try:
            sess = ort.InferenceSession(str(p), sess_options=opts, providers=eps)
        except Exception as e:  # onnxruntime raises its own exception types for bad graphs
            why = " ".join(str(e).split())
            why = why.split(" failed:", 1)[-1].strip() if " failed:" in why else why  # drop its "Load model from PATH"
            raise _unloadable(p, f"is a model ONNX Runtime {ort.__version__} cannot load ({why[:200]})") from None
        _SESSIONS[key] = sess
    return sess


# -- pure pre-processing ---------------------------------------------------------------------
def _constrain(x: float, mult: int, min_val: int = 0, max_val: int | None = None) -> int:
    """Depth Anything's ``constrain_to_multiple_of``: round to a multiple, respecting bounds."""
    y = int(np.round(x / mult) * mult)
    if max_val is not None and y > max_val:
        y = int(np.floor(x / mult) * mult)
    if y < min_val:
        y = int(np.ceil(x / mult) * mult)
    return max(y, mult)


def target_size(h: int, w: int, info: ModelInfo, fixed: tuple[int | None, int | None] = (None, None),
                max_side: int | None = None) -> tuple[int, int]:
    """The (height, width) the model is run at for an ``h x w`` photo.

    A fixed dimension of the model's input is taken as it is. Otherwise, with ``keep_aspect``,
    the short side goes to ``input_size`` and the long one follows the photo's aspect, both
    multiples of ``multiple_of`` ("lower_bound" resize); ``max_side`` (default 4 x input_size)
    caps the long side of very elongated photos. Without ``keep_aspect`` it is a square.
    """
    fh, fw = fixed
    if fh and fw:
        return int(fh), int(fw)
    s, m = info.input_size, info.multiple_of
    if fh or fw:  # one fixed side: the other follows the aspect
        if fh:
            return int(fh), _constrain(fh * w / h, m)
        return _constrain(fw * h / w, m), int(fw)
    if not info.keep_aspect:
        side = _constrain(s, m)
        return side, side
    scale = max(s / h, s / w)  # lower_bound: both sides at least s
    th, tw = _constrain(scale * h, m, min_val=s), _constrain(scale * w, m, min_val=s)
    cap = max_side or 4 * s
    if max(th, tw) > cap:
        scale = cap / max(h, w)
        th, tw = _constrain(scale * h, m, max_val=cap), _constrain(scale * w, m, max_val=cap)
    return th, tw


def preprocess(rgb: np.ndarray, size_hw: tuple[int, int], info: ModelInfo) -> np.ndarray:
    """uint8 RGB H x W x 3 -> float32 1 x 3 x h x w, normalised: ``(x / 255 - mean) / std``.

    Resizing uses bicubic interpolation when enlarging (as Depth Anything does) and area
    averaging when shrinking, so that a large photo does not alias at the model's size.
    """
    import cv2

    th, tw = size_hw
    if th < rgb.shape[0] and tw < rgb.shape[1]:
        # Shrink the uint8 photo first: a 24 MP photo never becomes a 288 MB float array.
        img = cv2.resize(rgb, (tw, th), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    else:
        img = rgb.astype(np.float32) / 255.0
        if img.shape[:2] != (th, tw):
            img = cv2.resize(img, (tw, th), interpolation=cv2.INTER_CUBIC)
            np.clip(img, 0.0, 1.0, out=img)  # bicubic rings past the valid range at hard edges
    if info.channel_order == "bgr":
        img = img[..., ::-1]
    img = (img - np.asarray(info.mean, np.float32)) / np.asarray(info.std, np.float32)
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None], dtype=np.float32)


def squeeze_output(out: np.ndarray) -> np.ndarray:
    """N x H x W, N x 1 x H x W or H x W (batch 1) -> float32 H x W."""
    a = np.asarray(out)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3 and a.shape[-1] == 1:  # N x H x W x 1 exports
        a = a[..., 0]
    if a.ndim != 2:
        raise InputError(f"model output has shape {np.asarray(out).shape}; expected N x H x W or N x 1 x H x W")
    return a.astype(np.float32)


# -- pure post-processing --------------------------------------------------------------------
def _box(a: np.ndarray, r: int) -> np.ndarray:
    import cv2

    return cv2.boxFilter(a, -1, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REFLECT)


def _gray(rgb: np.ndarray) -> np.ndarray:
    """Luminance on 0..1, float32 (via OpenCV: no float64 temporaries on a 24 MP photo)."""
    import cv2

    g = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY).astype(np.float32)
    g *= 1.0 / 255.0
    return g


def guided_upsample(depth: np.ndarray, guide_rgb: np.ndarray, *, radius: int = 2, eps: float = 1e-3) -> np.ndarray:
    """Upsample a low-resolution ``depth`` (float32 h x w) to the ``guide_rgb`` size (H x W x 3).

    Fast guided filter (He & Sun 2015): fit ``depth ~ a * I + b`` over (2r+1)^2 windows of the
    photo's luminance ``I`` at the depth's resolution, upsample ``a`` and ``b`` bilinearly and
    apply them to the full-resolution ``I``. ``eps`` (on depth normalised to 0..1 against
    luminance 0..1) sets how strong an edge must be to be followed; flat regions fall back to
    the bilinear result. Values are clipped to the input's range (no overshoot), in its units.
    """
    import cv2

    H, W = guide_rgb.shape[:2]
    h, w = depth.shape
    d = depth.astype(np.float32)
    lo, hi = float(np.nanmin(d)), float(np.nanmax(d))
    if (h, w) == (H, W) or hi - lo < 1e-12:
        return cv2.resize(d, (W, H), interpolation=cv2.INTER_LINEAR) if (h, w) != (H, W) else d
    p = (d - lo) / (hi - lo)
    I_full = _gray(guide_rgb)
    I = cv2.resize(I_full, (w, h), interpolation=cv2.INTER_AREA)
    mI, mp = _box(I, radius), _box(p, radius)
    cov = _box(I * p, radius) - mI * mp
    var = _box(I * I, radius) - mI * mI
    a = cov / (var + eps)
    b = mp - a * mI
    ma, mb = _box(a, radius), _box(b, radius)
    q = cv2.resize(ma, (W, H), interpolation=cv2.INTER_LINEAR)
    q *= I_full
    del I_full
    q += cv2.resize(mb, (W, H), interpolation=cv2.INTER_LINEAR)
    np.clip(q, 0.0, 1.0, out=q)
    q *= hi - lo  # back to the input's units, in place: full-size temporaries are 96 MB each at 24 MP
    q += lo
    return q


def upsample(depth: np.ndarray, guide_rgb: np.ndarray, method: str = "guided") -> np.ndarray:
    """``depth`` brought to the photo's size: ``guided`` (default) or ``bilinear``."""
    import cv2

    H, W = guide_rgb.shape[:2]
    if method == "bilinear":
        return cv2.resize(depth.astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR)
    if method != "guided":
        raise ParameterError(f"upsample must be guided or bilinear, got {method!r}", parameter="upsample")
    # The window is a couple of model pixels: enough to see an edge, small enough to stay local.
    return guided_upsample(depth, guide_rgb)


# -- the provider ----------------------------------------------------------------------------
def _looks_like_path(spec: str) -> bool:
    return spec.endswith(".onnx") or "/" in spec or "\\" in spec or spec.startswith(("~", "."))


class OnnxProvider:
    """``onnx:<registry name>`` or ``onnx:/path/model.onnx``."""

    name = "onnx"

    def __init__(self, spec: str):
        spec = (spec or "").strip()
        if not spec:
            raise ParameterError("onnx needs a model: onnx:<registry name> or onnx:/path/model.onnx",
                                 parameter="provider")
        self.spec = spec
        self.info: ModelInfo = local_model(spec) if _looks_like_path(spec) else get_model(spec)

    # identity enters cache keys: what the weights are, never where they are.
    def identity(self) -> dict:
        info = self.info
        if info.local_path:
            sha = file_sha256(info.local_path)
            return {"provider": "onnx", "model": info.name, "sha256": sha,
                    "preprocess": self._preprocess_identity()}
        # The pinned (or recorded) hash: the file estimate() runs is exactly that one (a cached file
        # with other bytes is downloaded again or refused), so no download is needed to key it.
        # Only an unpinned file nothing can check is keyed by its own bytes.
        path = cached_path(info)
        sha = expected_sha256(info) or (file_sha256(path) if path.is_file() else None)
        if sha is None:
            raise ModelError(f"model {info.name!r} is not downloaded and has no pinned sha256",
                             hint=f"run `depthcraft models pull {info.name} --trust-unpinned`")
        return {"provider": "onnx", "model": info.name, "sha256": sha}

    def _preprocess_identity(self) -> dict:
        i = self.info
        return {"input_size": i.input_size, "multiple_of": i.multiple_of, "keep_aspect": i.keep_aspect,
                "mean": list(i.mean), "std": list(i.std), "channel_order": i.channel_order, "output": i.output}

    def estimate(self, req: DepthRequest) -> DepthMap:
        info = self.info
        if req.output == "metric" and info.output != "metric":
            raise ParameterError(
                f"model {info.name!r} gives relative depth, not meters", parameter="output",
                hint="use onnx:depth-anything-v2-metric-indoor-small or -outdoor-small, or scale the "
                     "relative depth with near/far in the metric export settings")
        rgb = np.asarray(req.image)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise InputError(f"expected a uint8 RGB H x W x 3 image, got {rgb.dtype} {rgb.shape}",
                             path=req.image_path)
        path = ensure_model(info)
        sess = get_session(path)
        inp = sess.get_inputs()[0]
        shape = list(inp.shape) if inp.shape else []
        nhwc = len(shape) == 4 and shape[-1] == 3 and shape[1] != 3
        dims = (shape[1:3] if nhwc else shape[2:4]) if len(shape) == 4 else [None, None]
        fixed = tuple(d if isinstance(d, int) and d > 0 else None for d in dims)
        H, W = rgb.shape[:2]
        th, tw = target_size(H, W, info, fixed=fixed)  # type: ignore[arg-type]
        x = preprocess(rgb, (th, tw), info)
        if nhwc:
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        if "float16" in (inp.type or ""):
            x = x.astype(np.float16)
        try:
            out = sess.run(None, {inp.name: x})[0]
        except Exception as e:  # onnxruntime's own error types
            raise InputError(f"the model failed on a {tw}x{th} input ({str(e).splitlines()[0][:300]})",
                             path=str(path)) from None
        raw = squeeze_output(out)
        from .options import OPTION_DEFAULTS

        method = str((req.options or {}).get("upsample", OPTION_DEFAULTS["onnx"]["upsample"]))
        full = upsample(np.nan_to_num(raw, nan=float(np.nanmedian(raw))), rgb, method)
        meta = {"model": info.name, "model_input": f"{tw}x{th}", "upsample": method,
                "licence": info.licence, "output": info.output}
        if info.defaults_used:
            meta["defaults_used"] = ",".join(info.defaults_used)
        if info.max_depth_m:
            meta["max_depth_m"] = info.max_depth_m
        source = f"onnx:{info.name}"
        if info.output == "metric":
            meters = np.maximum(full, 1e-3).astype(np.float32)  # a metric head never means zero distance
            dm = DepthMap(meters, kind="metric", source=source, meta=meta)
            if req.output == "metric":
                return dm
            return DepthMap(normalized_nearness(dm), kind="relative_inverse", source=source, meta=meta)
        rel = DepthMap(full, kind="relative_inverse", source=source, meta=meta)
        return rel.with_data(normalized_nearness(rel))


__all__ = ["OnnxProvider", "choose_execution_providers", "get_session", "target_size", "preprocess",
           "squeeze_output", "guided_upsample", "upsample"]
