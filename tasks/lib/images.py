"""Reading and writing photos.

Convention: an image in memory is ``uint8`` RGB, ``H x W x 3``, C-contiguous, with the EXIF
orientation applied and any alpha channel split off (returned separately when asked for).
Grayscale, palette, CMYK and 16-bit files are converted to that form; a 16-bit file is scaled
to 8 bits by its full range (65535 -> 255), not clipped; a float (TIFF) picture has its finite
values stretched to 0..255, a NaN or inf pixel black. A photo with an embedded ICC profile other
than sRGB is converted to sRGB (relative colorimetric, LittleCMS; :mod:`.colour`); an untagged
or sRGB photo is left bit for bit as decoded.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from .errors import InputError

MIN_SIDE = 64
DEFAULT_MAX_PIXELS = 50_000_000
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".gif", ".mpo"}

# PIL's own bomb check would raise a warning or its own error first; we enforce our limit.
Image.MAX_IMAGE_PIXELS = None


@dataclass
class Photo:
    """A decoded photo: ``rgb`` (uint8 HxWx3) and optional ``alpha`` (uint8 HxW)."""

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    downscaled_from: tuple[int, int] | None = None  # (w, h) before a requested downscale
    profile: str | None = None  # the description of the ICC profile converted from to sRGB; None: none

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.shape[1], self.rgb.shape[0]


def max_pixels_default() -> int:
    """The pixel limit: ``DEPTHCRAFT_MAX_PIXELS`` (unset or empty: 50 MP). Not a whole number >= 1:
    :class:`ParameterError` naming the variable (a typo is said, not silently replaced)."""
    from .settings import env_number

    return env_number("DEPTHCRAFT_MAX_PIXELS", DEFAULT_MAX_PIXELS, least=1, units="pixels", whole=True)


def _to_rgb(img: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    alpha = None
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if a.max() > 255 or img.mode.startswith("I;16") else 255.0
        g = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(g[..., None], 3, axis=2)), None
    if img.mode == "F":  # a float picture (TIFF): its finite range stretched to 0..255
        a = np.asarray(img, dtype=np.float32)
        ok = np.isfinite(a)  # one NaN or inf pixel made the whole picture NaN (black) with RuntimeWarnings
        if not ok.any():
            raise ValueError("a float image with no finite value")
        lo, hi = float(a[ok].min()), float(a[ok].max())
        g = np.zeros(a.shape, np.uint8)
        g[ok] = ((a[ok].astype(np.float64) - lo) / max(hi - lo, 1e-12) * 255 + 0.5).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(g[..., None], 3, axis=2)), None
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        arr = np.asarray(rgba)
        alpha = np.ascontiguousarray(arr[..., 3])
        return np.ascontiguousarray(arr[..., :3]), alpha
    if img.mode == "CMYK":
        # Adobe CMYK JPEGs are stored inverted; PIL's convert handles the common case.
        img = img.convert("RGB")
    elif img.mode != "RGB":
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img)), None


def exif_orientation(img: Image.Image) -> int:
    """The EXIF orientation (1..8; 1 when absent or broken) from the header alone.

    PIL's ``PngImageFile.getexif()`` decodes every pixel to look for an eXIf chunk after the
    image data, which turns a 370-byte PNG claiming 100000 x 100000 into a 30 GB allocation
    before any size check: for a PNG only an eXIf chunk before the data is read."""
    try:
        if img.format == "PNG":
            raw = img.info.get("exif")
            if not raw:
                return 1
            ex = Image.Exif()
            ex.load(raw)
            return int(ex.get(0x0112, 1) or 1)
        return int(img.getexif().get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block: exif_transpose says so, or ignores it
        return 1


def _mpo_views(img: Image.Image) -> int:
    """How many images of an MPO have the primary image's size (views; a preview is smaller)."""
    size, n = img.size, 0
    try:
        for i in range(img.n_frames):
            img.seek(i)
            n += img.size == size
    except (OSError, EOFError):
        pass
    img.seek(0)
    return n


def _amount(pixels: int) -> str:
    """``12.2 MP``; under a megapixel, the pixels themselves (a limit of 5000 read "0 MP")."""
    if pixels < 1_000_000:
        return f"{pixels:,} pixels"
    mp = f"{pixels / 1e6:.1f}"
    return f"{mp[:-2] if mp.endswith('.0') else mp} MP"  # "1 MP", "50 MP", "12.2 MP"


def decode_budget(limit: int | None = None) -> int:
    """The most pixels ever decoded at once: 4 x the pixel limit, at least 200 MP (600 MB as RGB).

    A header may claim any size (100000 x 100000 costs a few bytes to write); nothing larger
    than this is decoded, whatever ``--downscale`` says.
    """
    return max(4 * (limit or max_pixels_default()), 200_000_000)


# How photos of a kind decode, where that changed: part of every step's cache key for such a
# photo, so that a result cached under the old decoding is never served as the new one.
# "tiff 2": a float TIFF with a NaN/inf pixel is its finite range stretched (it was all black).
_DECODE_REVISIONS = {".tif": "tiff 2", ".tiff": "tiff 2"}


def decode_revision(path: str | os.PathLike) -> str | None:
    """The decoding revision of the photo ``path``, or ``None`` (decoded as it always was): by
    its suffix (:data:`_DECODE_REVISIONS`), and "icc 1 <description>" added for a photo whose
    embedded colour profile is converted to sRGB (read from its header), so that a result made
    from its unconverted colours is never served. An untagged or sRGB photo keeps its key."""
    from .colour import header_conversion

    rev = _DECODE_REVISIONS.get(os.path.splitext(str(path))[1].lower())
    profile = header_conversion(path)
    if profile is not None:
        rev = f"{rev + '; ' if rev else ''}icc 1 {profile}"
    return rev


def decode_image(data: bytes, *, name: str = "<bytes>", max_pixels: int | None = None,
                 downscale: bool = False) -> Photo:
    """Decode encoded image bytes into a :class:`Photo`.

    Raises :class:`InputError` naming ``name`` for unreadable, truncated, too small or too
    large images. With ``downscale=True`` an image over ``max_pixels`` is resized (area
    interpolation) to fit instead of refused, with a notice giving both sizes; a JPEG is then
    decoded reduced (DCT scaling, 1/2 to 1/8) so that memory stays bounded, and an image that
    would still need more than :func:`decode_budget` pixels is refused.
    """
    from .notices import notice
    from .pngcheck import missing_data

    limit = max_pixels or max_pixels_default()
    try:
        img = Image.open(io.BytesIO(data))
        if getattr(img, "is_animated", False) and getattr(img, "n_frames", 1) > 1:
            if img.format == "TIFF":  # pages (scans, a thumbnail, a stack), not an animation: the first, said
                notice(f"{name}: a TIFF of {img.n_frames} pages: using the first ({img.size[0]}x{img.size[1]}); "
                       "save another page as its own file to use it")
            elif img.format == "MPO":
                # a JPEG with more images (CIPA DC-007): camera JPEGs carry a large preview this way, a
                # stereo MPO (ours too) its right eye; the first is the primary image (it was refused
                # as "a clip", which no command took). Said only for views of its own size (a stereo set)
                if _mpo_views(img) > 1:
                    notice(f"{name}: an MPO of {img.n_frames} views (a stereo pair?): using the first "
                           f"({img.size[0]}x{img.size[1]}), the left eye")
                img.seek(0)
            else:  # never silently the first frame: an animation is a clip (tasks/lib/clip.py)
                raise InputError(f"animated {img.format or 'image'} ({img.n_frames} frames) is a clip, not a photo",
                                 path=name, hint="clips go to the clip commands and recipe inputs as they are; "
                                 "extract one frame to use it as a photo")
        w0, h0 = img.size
        rotated = exif_orientation(img) in (5, 6, 7, 8)
        w, h = (h0, w0) if rotated else (w0, h0)  # the size once EXIF orientation is applied
        if w * h > limit and not downscale:
            raise InputError(
                f"image is {w}x{h} = {_amount(w * h)}, over the limit of {_amount(limit)}",
                path=name, hint="pass --downscale (or `downscale: true` in the recipe), or raise "
                "the limit with --max-pixels / DEPTHCRAFT_MAX_PIXELS")
        if img.format == "JPEG" and len(data) * 512 < w0 * h0:
            # every 8x8 block of a JPEG costs at least one bit (ITU-T T.81 F.1.2: a DC code and an
            # end of block); fewer bytes than that is a cut file, which libjpeg pads with gray
            raise InputError(f"truncated JPEG: {len(data):,} bytes cannot hold {w0}x{h0} pixels", path=name,
                             hint="the file is damaged or cut: export it again")
        if w * h > limit and img.format == "JPEG":
            f = (limit / (w * h)) ** 0.5
            img.draft("RGB", (max(1, int(w0 * f)), max(1, int(h0 * f))))  # decode at 1/2..1/8 scale
        dw, dh = img.size
        if dw * dh > decode_budget(limit):
            raise InputError(
                f"image is {w}x{h} = {w * h / 1e6:,.0f} MP; decoding it would need {dw * dh / 1e6:,.0f} MP, "
                f"over the decoding budget of {decode_budget(limit) / 1e6:,.0f} MP", path=name,
                hint="shrink it with an image editor first (a JPEG can be decoded reduced up to 8x)")
        img.load()
        icc = img.info.get("icc_profile")  # (read before the transpose, which may not copy it)
        img = ImageOps.exif_transpose(img)
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError("not an image, or a format that cannot be read", path=name,
                         hint="use JPEG, PNG, WebP, TIFF, BMP or PPM") from None
    except (OSError, SyntaxError, ValueError, MemoryError) as e:
        if "MAX_TEXT_CHUNK" in str(e):  # (a PNG whose ICC profile is over Pillow's 1 MB: without it)
            from .colour import without_png_profile

            plain = without_png_profile(data)
            if plain is not None:
                notice(f"{name}: its colour profile is over Pillow's limit of "
                       f"{PngImagePlugin.MAX_TEXT_CHUNK // 2**20} MB: read as sRGB")
                return decode_image(plain, name=name, max_pixels=max_pixels, downscale=downscale)
        raise InputError(f"unreadable or truncated image ({e or type(e).__name__})", path=name) from None
    missing = missing_data(data)  # None unless a PNG whose data stops early
    if missing:
        raise InputError(f"truncated PNG: {missing}", path=name, hint="the file is damaged: export it again")
    img, profile = _profile_to_srgb(img, icc, name)
    try:
        rgb, alpha = _to_rgb(img)
    except ValueError as e:  # (a float picture of NaN only)
        raise InputError(f"not a picture: {e}", path=name) from None
    if min(w, h) < MIN_SIDE:
        raise InputError(f"image is {w}x{h}; both sides must be at least {MIN_SIDE} px", path=name)
    before = None
    if w * h > limit:
        import cv2

        nw, nh = working_size(w, h, limit)
        rgb = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
        if alpha is not None:
            alpha = cv2.resize(alpha, (nw, nh), interpolation=cv2.INTER_AREA)
        before = (w, h)
        notice(f"{name}: downscaled from {w}x{h} to {nw}x{nh} to fit {limit / 1e6:g} MP (--downscale)")
    return Photo(rgb=rgb, alpha=alpha, downscaled_from=before, profile=profile)


def _profile_to_srgb(img: Image.Image, icc: bytes | None, name: str) -> tuple[Image.Image, str | None]:
    """:func:`.colour.to_srgb`, where a failure LittleCMS only shows on the whole picture is one
    notice and the picture read as sRGB, as for an unreadable profile."""
    from .colour import to_srgb
    from .notices import notice

    try:
        return to_srgb(img, icc, name)
    except Exception as e:  # noqa: BLE001 - a colour profile never costs the photo
        notice(f"{name}: its colour profile cannot be applied ({str(e).strip() or type(e).__name__}): read as sRGB")
        return img, None


def working_size(w: int, h: int, limit: int) -> tuple[int, int]:
    """The size a ``w`` x ``h`` photo is worked at with ``downscale``: itself within ``limit``
    pixels, else scaled by sqrt(limit / (w h)) (each side at least :data:`MIN_SIDE`)."""
    if w * h <= limit:
        return w, h
    f = (limit / (w * h)) ** 0.5
    return max(MIN_SIDE, int(w * f)), max(MIN_SIDE, int(h * f))


def header_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """A photo's size as shown (EXIF orientation applied), from its header alone; None when
    the file cannot be read as an image (the step that reads it says why)."""
    try:
        with Image.open(path) as img:
            w, h = img.size
            rotated = exif_orientation(img) in (5, 6, 7, 8)
    except Exception:  # noqa: BLE001
        return None
    return (h, w) if rotated else (w, h)


def within_decode_budget(path: str | os.PathLike, limit: int) -> bool:
    """Whether :func:`decode_image` with ``downscale`` would decode ``path`` within the decoding
    budget (a JPEG decoded reduced, as it does), from the header alone; False when unreadable."""
    try:
        with Image.open(path) as img:
            w0, h0 = img.size
            if w0 * h0 > limit and img.format == "JPEG":
                f = (limit / (w0 * h0)) ** 0.5
                img.draft("RGB", (max(1, int(w0 * f)), max(1, int(h0 * f))))
            dw, dh = img.size
    except Exception:  # noqa: BLE001
        return False
    return dw * dh <= decode_budget(limit)


def read_image(path: str | os.PathLike, *, max_pixels: int | None = None, downscale: bool = False) -> Photo:
    """Read a photo file. See :func:`decode_image` for the conventions and errors."""
    p = Path(path)
    if not p.exists():
        raise InputError("no such file", path=str(p))
    if p.is_dir():
        raise InputError("is a folder, not an image", path=str(p))
    from .oneframe import MOVIE_SUFFIXES, first_frame_png

    if p.suffix.lower() in MOVIE_SUFFIXES:  # a 1-frame video is a photo (clip.is_clip): its frame
        from .notices import notice

        data = first_frame_png(p)
        notice(f"{p}: a video of a single frame: taken as a photo")
        return decode_image(data, name=str(p), max_pixels=max_pixels, downscale=downscale)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read ({e.strerror})", path=str(p)) from None
    return decode_image(data, name=str(p), max_pixels=max_pixels, downscale=downscale)


def read_rgb(path: str | os.PathLike, **kw) -> np.ndarray:
    """Shorthand for ``read_image(path).rgb``."""
    return read_image(path, **kw).rgb


# What a transparent pixel shows where the output cannot keep alpha (a video, a JPEG, a stereo
# JPEG): white, the usual backdrop of a product shot, rather than the colour the file happens to
# store under alpha 0 (black, or an editor's leftovers).
BACKGROUND = (255, 255, 255)


def over_background(rgb: np.ndarray, alpha: np.ndarray | None, background: tuple[int, int, int] = BACKGROUND
                    ) -> np.ndarray:
    """``rgb`` (uint8 H x W x 3) composited "over" ``background`` with ``alpha`` (uint8 H x W,
    255 = opaque) in sRGB values, as browsers and image editors flatten a PNG; ``rgb`` itself
    when ``alpha`` is None. Returns uint8 H x W x 3."""
    if alpha is None:
        return rgb
    a = alpha.astype(np.float32)[..., None] * np.float32(1.0 / 255.0)
    bg = np.asarray(background, np.float32)
    return np.clip(rgb.astype(np.float32) * a + bg * (1.0 - a) + 0.5, 0, 255).astype(np.uint8)


def write_image(path: str | os.PathLike, arr: np.ndarray, *, quality: int = 95) -> Path:
    """Write a uint8 RGB/RGBA/gray array; format from the suffix. Returns the path.

    A colour picture (RGB/RGBA) is sRGB (every photo is read as sRGB, :mod:`.colour`) and says so:
    a PNG with an ``sRGB`` chunk (PNG 1.2, 11.3.3.5), a JPEG with the sRGB ICC profile (588 bytes;
    JPEG has no shorter tag). A gray picture (a depth map, a mask) is data, and is not tagged."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    a = np.asarray(arr)
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    img = Image.fromarray(a)
    suffix = p.suffix.lower()
    colour = a.ndim == 3 and a.shape[2] in (3, 4)
    if suffix in (".jpg", ".jpeg"):
        from .colour import srgb_icc

        tag = {"icc_profile": srgb_icc()} if colour else {}
        img.convert("RGB").save(p, quality=quality, subsampling=0 if quality >= 95 else 2, **tag)
    elif suffix == ".png" and colour:
        from PIL import PngImagePlugin

        info = PngImagePlugin.PngInfo()
        info.add(b"sRGB", b"\x00")  # rendering intent 0 (perceptual), as libpng and editors write it
        img.save(p, pnginfo=info)
    else:
        img.save(p)
    return p


def image_format_for_suffix(path: str | os.PathLike, extra: str = "") -> dict:
    """One-shot ``-o`` paths: ``.jpg``/``.jpeg`` -> ``{"format": "jpg"}``, ``.png`` -> png."""
    from .errors import ParameterError

    s = Path(path).suffix.lower()
    if s in (".jpg", ".jpeg"):
        return {"format": "jpg"}
    if s == ".png":
        return {"format": "png"}
    raise ParameterError(f"cannot tell an image format from {repr(s) if s else 'a file without a suffix'}; use .png or .jpg{extra}", parameter="-o")
