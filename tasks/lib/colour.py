"""Colour profiles: a photo's embedded ICC profile converted to sRGB, with LittleCMS.

Every step works in sRGB (what a depth model was trained on, what a screen without colour
management shows, what the outputs say they are). A photo that carries another profile (an
iPhone's Display P3, a camera's Adobe RGB, a ProPhoto TIFF, a grey profile with gamma 1.8) has its
pixels converted here, by Pillow's ImageCms (LittleCMS 2), before any step sees them:

* rendering intent **relative colorimetric** (ICC.1 section 6.2.2), with black point
  compensation: a colour inside the sRGB gamut keeps its exact appearance (white mapped to
  white), a colour outside is clipped to the gamut edge. Perceptual intent would move every
  colour, in-gamut ones too, and only by tables that matrix/TRC profiles (Display P3, Adobe RGB,
  ProPhoto, almost every camera and phone profile) do not have (LittleCMS then falls back to
  colorimetric anyway); browsers show tagged photos relative colorimetrically too;
* a profile that is sRGB already (its transform moves no 8-bit value by more than one level, on
  a probe of 4,913 colours and the grey ramp) or no profile at all: the pixels are not touched,
  bit for bit what they were before profiles were read;
* a profile LittleCMS cannot read, or one for another colour space than the picture's (a grey
  profile on an RGB picture): one notice naming the file, the pixels read as sRGB.

Precision: 8-bit pictures are converted 8 bits to 8 bits (LittleCMS computes in 16 bits or
float inside); a 16-bit grey picture (``I;16``) is converted from its 16 bits straight to 8-bit
sRGB, never rounded to 8 bits first. Pillow decodes 16-bit RGB PNG/TIFF to 8 bits before anything
else sees the pixels, so those are converted from 8 bits. A float (``F``) or 32-bit (``I``)
picture is stretched to its range as before, its profile not applied (said in a notice).
"""

from __future__ import annotations

import hashlib
import io
import struct
import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms

INTENT = ImageCms.Intent.RELATIVE_COLORIMETRIC
INTENT_WORDS = "relative colorimetric"
_FLAGS = ImageCms.Flags.BLACKPOINTCOMPENSATION

# the image modes whose profile applies, and the colour space of the profile they need
_SPACE_OF_MODE = {"RGB": "RGB", "RGBA": "RGB", "RGBX": "RGB", "P": "RGB", "PA": "RGB",
                  "L": "GRAY", "LA": "GRAY", "I;16": "GRAY", "I;16L": "GRAY", "I;16B": "GRAY", "CMYK": "CMYK"}

_lock = threading.Lock()
_plans: dict[tuple[str, str], "_Plan"] = {}
_srgb: ImageCms.ImageCmsProfile | None = None


def srgb_profile() -> ImageCms.ImageCmsProfile:
    """LittleCMS's built-in sRGB profile (IEC 61966-2-1), made once."""
    global _srgb
    with _lock:
        if _srgb is None:
            _srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
        return _srgb


# the creation date LittleCMS writes into a profile it makes (ICC.1 7.2.8) is now: fixed, so that
# an output that embeds the profile is the same bytes on every run (outputs are hashed)
_FIXED_DATE = struct.pack(">6H", 2026, 1, 1, 0, 0, 0)


def srgb_icc() -> bytes:
    """The bytes of :func:`srgb_profile` (588, ICC v4), to embed in a JPEG output: the same
    bytes on every run (creation date fixed; no profile ID, as LittleCMS writes it)."""
    b = bytearray(srgb_profile().tobytes())
    b[24:36] = _FIXED_DATE
    return bytes(b)


@dataclass(frozen=True)
class _Plan:
    description: str | None  # the profile's description ("Display P3"); None when unreadable
    convert: bool  # False: sRGB already (or nothing to do): the pixels are left as they are
    problem: str | None = None  # why the profile is not applied (unreadable, wrong colour space)


def _description(prof: ImageCms.ImageCmsProfile) -> str:
    try:
        d = ImageCms.getProfileDescription(prof).strip()
    except Exception:  # noqa: BLE001 - a profile without a readable description still converts
        d = ""
    # (a description is the file's text: no terminal escapes or line breaks reach a message)
    return " ".join("".join(c if c.isprintable() else " " for c in d).split())[:120] or "an unnamed profile"


def _probe(mode: str) -> Image.Image:
    """Colours to test a transform on: a 17^3 grid and the grey ramp (RGB), or the ramp (grey)."""
    ramp = np.arange(256, dtype=np.uint8)
    if mode == "L":
        return Image.fromarray(ramp.reshape(16, 16))
    g = np.linspace(0, 255, 17).round().astype(np.uint8)
    grid = np.stack(np.meshgrid(g, g, g, indexing="ij"), axis=-1).reshape(-1, 3)
    pts = np.concatenate([grid, np.repeat(ramp[:, None], 3, axis=1)])  # 4913 + 256 = 5169 = 3 x 1723
    return Image.fromarray(np.ascontiguousarray(pts.reshape(3, -1, 3)))


def _plan(icc: bytes, mode: str) -> _Plan:
    key = (hashlib.sha256(icc).hexdigest(), mode)
    with _lock:
        if key in _plans:
            return _plans[key]
    space = _SPACE_OF_MODE.get(mode)
    try:
        prof = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        desc = _description(prof)
        have = prof.profile.xcolor_space.strip()
    except Exception as e:  # noqa: BLE001 - LittleCMS refuses it: read as sRGB, said
        plan = _Plan(None, False, f"its colour profile cannot be read ({str(e).strip() or type(e).__name__})")
    else:
        if space is None:
            plan = _Plan(desc, False, f"its colour profile ({desc}) is not applied to a {mode} picture")
        elif have != space:
            plan = _Plan(desc, False, f"its colour profile ({desc}) is for {have or 'no'} colours, the picture is {space}")
        elif space == "CMYK":
            plan = _Plan(desc, True)
        else:
            pm = "L" if space == "GRAY" else "RGB"
            try:
                t = ImageCms.buildTransform(prof, srgb_profile(), pm, "RGB", renderingIntent=INTENT, flags=_FLAGS)
                probe = _probe(pm)
                out = np.asarray(ImageCms.applyTransform(probe, t)).astype(np.int16)
                src = np.asarray(probe.convert("RGB")).astype(np.int16)
                plan = _Plan(desc, int(np.abs(out - src).max()) > 1)
            except Exception as e:  # noqa: BLE001
                plan = _Plan(desc, False, f"its colour profile ({desc}) cannot be applied ({str(e).strip() or type(e).__name__})")
    with _lock:
        if len(_plans) > 256:
            _plans.clear()
        _plans[key] = plan
    return plan


_grey_luts: dict[tuple[str, int], np.ndarray] = {}


def _grey_to_srgb(img: Image.Image, prof: ImageCms.ImageCmsProfile, icc: bytes) -> Image.Image:
    """A grey picture (``L`` or 16-bit ``I;16``) to sRGB ``RGB`` through a table of every grey
    level (256 or 65536) converted by LittleCMS unoptimised: its optimised grey transform rounds
    the gamma curve's shadows to 2 levels off (measured: 1.84 of 255 at 16 bits, gamma 1.8);
    unoptimised it is within 0.5, and one table lookup is faster than a transform per pixel.
    The three channels of a level are its median (a grey stays grey)."""
    bits = 8 if img.mode == "L" else 16
    key = (hashlib.sha256(icc).hexdigest(), bits)
    with _lock:
        lut = _grey_luts.get(key)
    if lut is None:
        mode = "L" if bits == 8 else "I;16"
        ramp = np.arange(1 << bits, dtype=np.uint8 if bits == 8 else np.uint16).reshape(16 if bits == 8 else 256, -1)
        t = ImageCms.buildTransform(prof, srgb_profile(), mode, "RGB", renderingIntent=INTENT,
                                    flags=_FLAGS | ImageCms.Flags.NOOPTIMIZE)
        lut = np.asarray(ImageCms.applyTransform(Image.fromarray(ramp), t)).reshape(-1, 3)
        # a grey picture stays grey: the neutral's three channels, equal but for a level of
        # fixed-point rounding in the sRGB matrix here and there, are given their median
        lut = np.repeat(np.median(lut, axis=1).astype(np.uint8)[:, None], 3, axis=1)
        with _lock:
            if len(_grey_luts) > 64:
                _grey_luts.clear()
            _grey_luts[key] = lut
    if img.mode not in ("L", "I;16"):
        img = img.convert("I;16") if bits == 16 else img
    v = np.asarray(img)
    return Image.fromarray(np.ascontiguousarray(lut[v.astype(np.intp)]))


def conversion(icc: bytes | None, mode: str) -> str | None:
    """The description of the profile a picture of ``mode`` carrying ``icc`` is converted from,
    or None when it is not converted (no profile, sRGB already, unreadable, not applicable)."""
    if not icc:
        return None
    plan = _plan(icc, mode)
    return plan.description if plan.convert else None


def header_conversion(path) -> str | None:
    """:func:`conversion` of a photo file from its header alone (no pixels decoded); None for a
    file that cannot be opened (its reader says why)."""
    try:
        with Image.open(path) as im:
            icc, mode = im.info.get("icc_profile"), im.mode
    except Exception:  # noqa: BLE001
        return None
    return conversion(icc, mode)


def to_srgb(img: Image.Image, icc: bytes | None, name: str) -> tuple[Image.Image, str | None]:
    """``img`` (a decoded Pillow image) converted from the profile ``icc`` to sRGB.

    Returns ``(image, description)``: the image converted (mode ``RGB``, or ``RGBA`` keeping its
    alpha) and the profile's description; or ``img`` itself, untouched, and None when there is
    nothing to convert. An unusable profile is said in one notice naming ``name``, never raised.
    """
    if not icc:
        return img, None
    from .notices import notice

    mode = img.mode
    plan = _plan(icc, mode)
    if plan.problem:
        notice(f"{name}: {plan.problem}: read as sRGB")
        return img, None
    if not plan.convert:
        return img, None
    prof = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    alpha = None
    if mode in ("P", "PA"):
        img = img.convert("RGBA" if mode == "PA" or "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA"):
        alpha = img.getchannel("A")
        img = img.convert("RGB" if mode == "RGBA" else "L")
        mode = img.mode
    if mode == "RGBX":
        img, mode = img.convert("RGB"), "RGB"
    if mode in ("L", "I;16", "I;16L", "I;16B"):
        out = _grey_to_srgb(img, prof, icc)
    else:
        t = ImageCms.buildTransform(prof, srgb_profile(), mode, "RGB", renderingIntent=INTENT, flags=_FLAGS)
        out = ImageCms.applyTransform(img, t)
    if alpha is not None:
        out.putalpha(alpha)
    return out, plan.description


def manifest_note(path) -> str | None:
    """What a run's manifest records of a photo's colours: "converted from the ICC profile
    'Display P3' to sRGB (relative colorimetric)"; for a profile that is not applied (unreadable,
    for another colour space, over Pillow's size limit) "not applied: <why>; read as sRGB"
    (said once in a notice, which a cached re-run does not repeat: the manifest keeps it); or None (untagged or sRGB: read as it is)."""
    try:
        with Image.open(path) as im:
            icc, mode = im.info.get("icc_profile"), im.mode
    except ValueError as e:
        if "MAX_TEXT_CHUNK" in str(e):  # (tasks/lib/images.py reads such a PNG without its profile)
            return "not applied: its colour profile is over Pillow's size limit; read as sRGB"
        return None
    except Exception:  # noqa: BLE001 - (its reader says why)
        return None
    if not icc:
        return None
    plan = _plan(icc, mode)
    if plan.problem:
        return f"not applied: {plan.problem}; read as sRGB"
    return f"converted from the ICC profile {plan.description!r} to sRGB ({INTENT_WORDS})" if plan.convert else None


def without_png_profile(data: bytes) -> bytes | None:
    """A PNG's bytes without its ``iCCP`` chunk (ISO/IEC 15948, 11.3.3.3), or None when ``data`` is
    not a PNG or has none. Pillow refuses a whole PNG whose profile inflates past its 1 MB limit
    for text chunks (``PngImagePlugin.MAX_TEXT_CHUNK``, a zip bomb guard); the photo itself is
    then read without the profile, as sRGB, rather than refused."""
    from .pngcheck import PNG_MAGIC

    if not data.startswith(PNG_MAGIC):
        return None
    out, i, dropped = [PNG_MAGIC], len(PNG_MAGIC), False
    while i + 8 <= len(data):
        n = struct.unpack(">I", data[i:i + 4])[0]
        end = i + 12 + n
        if data[i + 4:i + 8] == b"iCCP":
            dropped = True
        else:
            out.append(data[i:end])
        i = end
    out.append(data[i:])
    return b"".join(out) if dropped else None
