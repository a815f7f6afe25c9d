"""The ``viewer`` step: a self-contained interactive 3D photo, one HTML file.

The page shows the photo with parallax from its depth, rendered by WebGL in one full-screen
fragment-shader pass (steep parallax occlusion mapping: a height field ray-marched from near to
far with a binary-search refinement, so nearer surfaces occlude farther ones; disocclusions are
filled from the background, so foreground edges are not smeared). The camera follows the
pointer or touch, the phone's tilt (DeviceOrientation, with iOS's permission gesture), or an
automatic loop when idle. The photo (JPEG or WebP) and the depth (PNG: 8-bit gray, or 16-bit
nearness packed into red = high byte, green = low byte) are embedded as ``data:`` URIs and a
Content-Security-Policy forbids every request, so the file works from a disk or in an
``<iframe>``. Without WebGL the page shows the photo itself.

URL fragment overrides (``view.html#x=-1&y=0&intensity=0.04``): ``x``, ``y`` (pan, -1..1)
and ``z`` (dolly, -1..1) fix the camera there; ``intensity``, ``focus``, ``motion``,
``period``, ``start_x``, ``start_y``, ``auto`` and ``fit`` override the parameters below.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from PIL import Image
from pydantic import Field, field_validator

from .lib import webpage
from .lib.depthmap import normalized_nearness, resize_depth
from .lib.errors import ParameterError
from .lib.step import Output, StepContext, StepParams, StepSpec


class ViewerParams(StepParams):
    intensity: float = Field(0.04, ge=0, le=0.3, description="parallax between the nearest and farthest surface at the widest camera offset, share of the width")
    focus: float = Field(0.5, ge=0, le=1, description="nearness (0 far .. 1 near) of the plane that stays still")
    motion: Literal["orbit", "circle", "swing", "swing_vertical", "dolly"] = Field("orbit", description="the automatic loop's camera path")
    period: float = Field(8.0, ge=0.5, le=600, description="seconds per loop of the automatic motion")
    start_x: float = Field(0.0, ge=-1, le=1, description="camera start position, sideways (-1 left .. 1 right)")
    start_y: float = Field(0.0, ge=-1, le=1, description="camera start position, vertical (-1 up .. 1 down)")
    auto: Literal["idle", "always", "off"] = Field("idle", description="automatic loop: when there is no input for 2.5 s, always, or never")
    fit: Literal["contain", "cover"] = Field("contain", description="the whole photo in its container (contain) or filling it (cover)")
    max_size: int = Field(2048, ge=64, le=8192, description="longest side of the embedded photo and depth, px (larger photos are downscaled)")
    photo_format: Literal["jpeg", "webp"] = Field("jpeg", description="embedded photo format")
    quality: int = Field(90, ge=30, le=100, description="embedded photo quality (JPEG/WebP)")
    depth_bits: int = Field(8, description="embedded depth precision: 8 (gray PNG) or 16 (packed in two channels)")
    title: str | None = Field(None, description="page title (default: the image's name)")

    @field_validator("depth_bits")
    @classmethod
    def _bits(cls, v: int) -> int:
        if v not in (8, 16):
            raise ValueError("depth_bits is 8 or 16")
        return v


def _fit(photo: np.ndarray, near: np.ndarray, max_size: int) -> tuple[np.ndarray, np.ndarray]:
    h, w = photo.shape[:2]
    k = min(1.0, max_size / max(w, h))
    size = (max(1, round(w * k)), max(1, round(h * k)))
    if k < 1.0:
        photo = cv2.resize(photo, size, interpolation=cv2.INTER_AREA)
    if near.shape != (size[1], size[0]):
        near = cv2.resize(near, size, interpolation=cv2.INTER_AREA if near.shape[1] > size[0] else cv2.INTER_LINEAR)
    return photo, near


def encode_photo(rgb: np.ndarray, fmt: str, quality: int) -> tuple[bytes, str]:
    """uint8 RGB HxWx3 -> (JPEG or WebP bytes, MIME type)."""
    buf = io.BytesIO()
    im = Image.fromarray(np.ascontiguousarray(rgb[..., :3]))
    if fmt == "webp":
        im.save(buf, "WEBP", quality=quality, method=4)
        return buf.getvalue(), "image/webp"
    im.save(buf, "JPEG", quality=quality, optimize=True, progressive=True, subsampling=0 if quality >= 90 else 2)
    return buf.getvalue(), "image/jpeg"


def encode_depth(near: np.ndarray, bits: int) -> bytes:
    """Nearness (float32 0..1, HxW) -> PNG bytes: 8-bit gray, or 16 bits packed as RGB with
    red = high byte, green = low byte, blue = 0 (browsers decode 16-bit PNGs to 8 bits, and
    never interpolate between the bytes of this one: the page unpacks it on the CPU)."""
    q = np.clip(np.rint(near * (65535.0 if bits == 16 else 255.0)), 0, 65535 if bits == 16 else 255)
    buf = io.BytesIO()
    if bits == 16:
        q = q.astype(np.uint16)
        rgb = np.dstack([(q >> 8).astype(np.uint8), (q & 255).astype(np.uint8), np.zeros(q.shape, np.uint8)])
        Image.fromarray(rgb).save(buf, "PNG", optimize=True)
    else:
        Image.fromarray(q.astype(np.uint8)).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def page_params(p: ViewerParams) -> dict:
    """The parameters the page reads (and the URL fragment may override)."""
    return {k: getattr(p, k) for k in ("intensity", "focus", "motion", "period", "start_x", "start_y", "auto", "fit")}


def build_viewer(photo: np.ndarray, nearness: np.ndarray, p: ViewerParams, *, title: str) -> tuple[str, dict]:
    """The page for ``photo`` (uint8 RGB HxWx3) and ``nearness`` (float32 0..1, 1 = nearest,
    any size: resampled to the photo's). Returns (HTML text, facts: sizes and bytes)."""
    if photo.ndim != 3 or photo.shape[2] < 3:
        raise ParameterError("the viewer needs an RGB photo", parameter="image")
    if not np.isfinite(nearness).all():
        nearness = np.nan_to_num(nearness, nan=0.0, posinf=1.0, neginf=0.0)
    img, near = _fit(photo, nearness.astype(np.float32), p.max_size)
    photo_bytes, mime = encode_photo(img, p.photo_format, p.quality)
    depth_bytes = encode_depth(near, p.depth_bits)
    config = {"depth": {"uri": webpage.data_uri(depth_bytes, "image/png"), "bits": p.depth_bits},
              "params": page_params(p), "size": [img.shape[1], img.shape[0]]}
    page = webpage.fill(webpage.asset("viewer_page.html"), {
        "TITLE": title, "FIT": "cover" if p.fit == "cover" else "",
        "PHOTO": webpage.data_uri(photo_bytes, mime),
        "CONFIG": webpage.json_for_script(config),
        "FRAG": webpage.asset("viewer.frag"),
        "SCRIPT": webpage.asset("viewer.js"),
    }, raw={"PHOTO", "CONFIG", "FRAG", "SCRIPT"})
    facts = {"width": img.shape[1], "height": img.shape[0], "photo_bytes": len(photo_bytes),
             "depth_bytes": len(depth_bytes), "page_bytes": len(page.encode("utf-8")),
             "code_bytes": len(page.encode("utf-8")) - math.ceil(len(photo_bytes) / 3) * 4 - math.ceil(len(depth_bytes) / 3) * 4,
             "depth_bits": p.depth_bits, "photo_format": p.photo_format}
    return page, facts


def run(ctx: StepContext, p: ViewerParams) -> dict[str, Output]:
    from .lib.images import over_background

    photo = over_background(*ctx.image_alpha())  # the page's photo is a JPEG/WebP: over the stated background
    dm = ctx.depth()
    if dm.shape != photo.shape[:2]:
        dm = resize_depth(dm, (photo.shape[1], photo.shape[0]))
    near = normalized_nearness(dm, robust=0.002)
    page, facts = build_viewer(photo, near, p, title=p.title or ctx.image_name)
    out = ctx.out("main", ".html")
    out.write_text(page, encoding="utf-8")
    return {"main": Output(out, "page", facts)}


def params_for_output(path) -> dict:
    """``-o`` must be an HTML file."""
    s = Path(path).suffix.lower()
    if s not in (".html", ".htm"):
        raise ParameterError(f"the viewer writes an HTML page; got {repr(s) if s else 'a file without a suffix'}, use -o NAME.html", parameter="-o")
    return {}


SPEC = StepSpec(kind="viewer", version="2", params=ViewerParams, run=run, params_for_output=params_for_output,
                main_suffixes=lambda p: (".html", ".htm"),
                key_extra=lambda p, image: {} if p.title is not None else {"title": image},  # the <title> it writes
                summary="a self-contained interactive 3D photo: one HTML file (WebGL, pointer/tilt/auto camera)")
