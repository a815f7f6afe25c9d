"""Depth map files: reading every supported format, and the raw writers.

Read: PNG (8 or 16 bit, gray or the first channel), PGM, PFM, NPY, NPZ (first array, or
``depth``), TIFF. A 16-bit PNG written by depthcraft carries its value range in a ``depthcraft``
text chunk and is read back to the original values within 1/65535 of the range.

Write (raw, for the ``export`` step and one-shot commands): ``.npy`` (float32), ``.pfm``
(float32, little-endian, bottom-up rows as the format requires), ``.png`` 8-bit and 16-bit.
Presentation choices (white = near, colour maps, metric millimetres) live in ``tasks/export.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from .errors import InputError

DEPTH_SUFFIXES = (".png", ".pgm", ".pfm", ".npy", ".npz", ".tif", ".tiff", ".exr")
PNG_META_KEY = "depthcraft"


def read_pfm(path: str | os.PathLike) -> np.ndarray:
    with open(path, "rb") as f:
        kind = f.readline().strip()
        if kind not in (b"PF", b"Pf"):
            raise InputError("not a PFM file (header must be PF or Pf)", path=str(path))
        try:
            w, h = map(int, f.readline().split())
            scale = float(f.readline())
        except ValueError:
            raise InputError("malformed PFM header", path=str(path)) from None
        ch = 3 if kind == b"PF" else 1
        data = np.frombuffer(f.read(), dtype="<f4" if scale < 0 else ">f4")
    if data.size != w * h * ch:
        raise InputError(f"truncated PFM: {data.size} values for {w}x{h}x{ch}", path=str(path))
    a = data.reshape(h, w, ch)[::-1]
    return np.ascontiguousarray(a[..., 0]).astype(np.float32)


def write_pfm(path: str | os.PathLike, a: np.ndarray) -> Path:
    p = Path(path)
    a = np.asarray(a, dtype="<f4")
    h, w = a.shape
    with open(p, "wb") as f:
        f.write(b"Pf\n%d %d\n-1.0\n" % (w, h))
        f.write(np.ascontiguousarray(a[::-1]).tobytes())
    return p


def read_depth(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Read a depth-like map as ``float32 H x W`` and the metadata found in the file.

    16-bit PNGs written by depthcraft are mapped back to their stored range; other integer
    images are returned in their stored units (no rescaling).
    """
    p = Path(path)
    if not p.exists():
        raise InputError("no such depth file", path=str(p))
    suffix = p.suffix.lower()
    meta: dict = {}
    try:
        if suffix == ".pfm":
            return read_pfm(p), meta
        if suffix == ".npy":
            a = np.load(p, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                name = "depth" if "depth" in z.files else z.files[0]
                a = z[name]
        elif suffix == ".exr":
            import cv2

            os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")
            a = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
            if a is None:
                raise InputError("cannot read EXR (OpenCV built without OpenEXR?)", path=str(p))
        elif suffix in (".png", ".pgm", ".tif", ".tiff", ".ppm"):
            img = Image.open(p)
            if suffix == ".png" and PNG_META_KEY in img.info:
                meta = json.loads(img.info[PNG_META_KEY])
            a = np.asarray(img)
            if a.dtype == np.uint16 and "min" in meta and "max" in meta:
                lo, hi = float(meta["min"]), float(meta["max"])
                a = lo + a.astype(np.float64) / 65535.0 * (hi - lo)
        else:
            raise InputError(f"unsupported depth format {suffix!r}", path=str(p),
                             hint="use PNG, PGM, PFM, NPY, NPZ, TIFF or EXR")
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - any decoder failure is the file's fault
        raise InputError(f"cannot read depth map ({e})", path=str(p)) from None
    a = np.asarray(a)
    if a.ndim == 3:
        a = a[..., 0]
    if a.ndim != 2:
        raise InputError(f"depth map must be 2-D, got shape {a.shape}", path=str(p))
    return np.ascontiguousarray(a, dtype=np.float32), meta


def write_npy(path: str | os.PathLike, a: np.ndarray) -> Path:
    p = Path(path)
    with open(p, "wb") as f:
        np.save(f, np.asarray(a, dtype=np.float32))
    return p


def write_png16(path: str | os.PathLike, a: np.ndarray, meta: dict | None = None) -> Path:
    """16-bit PNG of ``a`` spread over its finite range; the range travels in the file."""
    p = Path(path)
    a = np.asarray(a, dtype=np.float64)
    ok = np.isfinite(a)
    lo = float(a[ok].min()) if ok.any() else 0.0
    hi = float(a[ok].max()) if ok.any() else 1.0
    q = np.zeros(a.shape, dtype=np.uint16)
    if hi > lo:
        q = np.round((np.where(ok, a, lo) - lo) / (hi - lo) * 65535.0).astype(np.uint16)
    info = PngImagePlugin.PngInfo()
    info.add_text(PNG_META_KEY, json.dumps({**(meta or {}), "min": lo, "max": hi}))
    Image.fromarray(q).save(p, pnginfo=info)
    return p


def write_png8(path: str | os.PathLike, unit: np.ndarray, meta: dict | None = None) -> Path:
    """8-bit PNG of a 0..1 map (values clipped)."""
    p = Path(path)
    q = np.clip(np.asarray(unit, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    info = PngImagePlugin.PngInfo()
    if meta:
        info.add_text(PNG_META_KEY, json.dumps(meta))
    Image.fromarray(q).save(p, pnginfo=info)
    return p
