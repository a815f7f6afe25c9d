"""Depth map files: reading every supported format, and the raw writers.

Read: PNG (8 or 16 bit, gray or the first channel), PGM, PFM, NPY, NPZ (``depth`` or the first
array), TIFF (float32 or integer), EXR (scanline, uncompressed / ZIP / ZIPS; FLOAT, HALF or UINT).

Metadata: every file depthcraft writes says its convention in JSON (see ``docs/formats.md``):
PNG in a ``depthcraft`` text chunk, TIFF in the ImageDescription tag, EXR in a ``depthcraft``
string attribute, NPZ in a ``meta`` entry, NPY and PFM in a ``<file>.json`` sidecar. Integer
files carry ``offset`` and ``scale`` (value = offset + scale * stored; older 16-bit files carry
``min``/``max``) and optionally ``invalid`` (a stored value that means "no depth", read as NaN),
so that :func:`read_depth` gives back the written values within the format's precision.

Write (raw, for the ``export`` step and one-shot commands): ``.npy`` (float32), ``.npz``,
``.pfm`` (float32, little-endian, bottom-up rows as the format requires), ``.png`` 8 and 16 bit,
``.tif`` float32, ``.exr`` float32 (a small writer of our own: OpenCV wheels ship without
OpenEXR). Presentation choices (white = near, colour maps, millimetres) live in ``tasks/lib/formats.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from .errors import InputError

if TYPE_CHECKING:
    from .depthmap import DepthMap

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
        # the scale's sign is the byte order (< 0: little-endian); 0 or NaN says neither, and
        # reading it as big-endian gave denormal garbage
        if w < 1 or h < 1 or not np.isfinite(scale) or scale == 0:
            raise InputError(f"malformed PFM header: size {w}x{h}, scale {scale:g} (the size must be at least "
                             "1x1, the scale non-zero: its sign is the byte order)", path=str(path))
        ch = 3 if kind == b"PF" else 1
        need = w * h * ch * 4
        have = os.fstat(f.fileno()).st_size - f.tell()  # (from the size: a header may claim 100000 x 100000)
        if have != need:
            what = "truncated PFM" if have < need else "PFM with bytes after its data"
            raise InputError(f"{what}: {w}x{h}x{ch} needs {need:,} bytes of values, the file has {have:,}",
                             path=str(path))
        _within_budget((w, h), Path(path))
        data = np.frombuffer(f.read(need), dtype="<f4" if scale < 0 else ">f4")
    a = data.reshape(h, w, ch)[::-1]
    if ch == 3:  # a colour PFM: depth only when its three channels agree
        return _array_channel(np.ascontiguousarray(a).astype(np.float32), Path(path))
    return np.ascontiguousarray(a[..., 0]).astype(np.float32)


def write_pfm(path: str | os.PathLike, a: np.ndarray) -> Path:
    p = Path(path)
    a = np.asarray(a, dtype="<f4")
    h, w = a.shape
    with open(p, "wb") as f:
        f.write(b"Pf\n%d %d\n-1.0\n" % (w, h))
        f.write(np.ascontiguousarray(a[::-1]).tobytes())
    return p


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON sidecar that carries the metadata of a ``.npy`` or ``.pfm`` file: ``<file>.json``."""
    p = Path(path)
    return p.with_name(p.name + ".json")


def write_sidecar(path: str | os.PathLike, meta: dict) -> Path:
    s = sidecar_path(path)
    s.write_text(json.dumps(meta, indent=1, sort_keys=True))
    return s


def _json_meta(text) -> dict:
    """Parse a metadata string; a foreign, non-JSON description gives no metadata."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if not isinstance(text, str) or not text.lstrip().startswith("{"):
        return {}
    try:
        d = json.loads(text)
    except ValueError:
        return {}
    return d if isinstance(d, dict) else {}


def decode_values(a: np.ndarray, meta: dict) -> np.ndarray:
    """Stored integers to the values they encode, per the file's ``offset``/``scale``/``invalid``."""
    if not np.issubdtype(a.dtype, np.integer):
        return a
    out = None
    if "scale" in meta:
        out = float(meta.get("offset", 0.0)) + a.astype(np.float64) * float(meta["scale"])
    elif a.dtype == np.uint16 and "min" in meta and "max" in meta:
        lo, hi = float(meta["min"]), float(meta["max"])
        out = lo + a.astype(np.float64) / 65535.0 * (hi - lo)
    if out is None:
        return a
    if meta.get("invalid") is not None:
        out = np.where(a == int(meta["invalid"]), np.nan, out)
    return out


def read_depth(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Read a depth-like map as ``float32 H x W`` and the metadata found in the file.

    Files written by depthcraft are decoded back to the values they were written from; other
    integer images are returned in their stored units (no rescaling).
    """
    p = Path(path)
    if not p.exists():
        raise InputError("no such depth file", path=str(p))
    if p.is_dir():
        raise InputError("is a folder, not a depth file", path=str(p))
    if p.stat().st_size == 0:  # (each decoder said it its own way: "EOF: reading magic string", "not enough values")
        raise InputError("is an empty file (0 bytes), not a depth map", path=str(p))
    suffix = p.suffix.lower()
    meta: dict = {}
    try:
        if suffix in (".pfm", ".npy") and sidecar_path(p).exists():
            meta = _json_meta(sidecar_path(p).read_text())
        if suffix == ".pfm":
            a = read_pfm(p)
        elif suffix == ".npy":
            with open(p, "rb") as f:
                _npy_within_budget(f, p)
            a = np.load(p, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                names = [n for n in z.files if n != "meta"]
                if not names:
                    raise InputError("NPZ file holds no array", path=str(p))
                name = "depth" if "depth" in names else names[0]
                with z.zip.open(name + ".npy") as f:  # a compressed entry may inflate 1000-fold: header first
                    _npy_within_budget(f, p)
                a = z[name]
                if "meta" in z.files:
                    meta = _json_meta(str(z["meta"]))
        elif suffix == ".exr":
            a, meta = read_exr(p)
        elif suffix in (".png", ".pgm", ".tif", ".tiff", ".ppm"):
            img = Image.open(p)
            if suffix == ".png":
                meta = _json_meta(img.info.get(PNG_META_KEY))
            elif suffix in (".tif", ".tiff"):
                meta = _json_meta(img.tag_v2.get(270))
            _refuse_preview(meta, p)
            _within_budget(img.size, p)
            a = _image_channel(img, p)
            if suffix == ".png":
                from .pngcheck import missing_data

                missing = missing_data(p.read_bytes())
                if missing:
                    raise InputError(f"truncated PNG: {missing}", path=str(p), hint="the file is damaged: write it again")
        else:
            raise InputError(f"unsupported depth format {suffix!r}", path=str(p),
                             hint="use PNG, PGM, PFM, NPY, NPZ, TIFF or EXR")
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - any decoder failure is the file's fault
        raise InputError(f"cannot read depth map ({e or type(e).__name__})", path=str(p)) from None
    a = np.asarray(a)
    if a.dtype.kind not in "biuf":  # complex, strings, dates: no depth in them (complex was cast with a warning)
        raise InputError(f"depth map must hold real numbers, got {a.dtype}", path=str(p))
    if a.ndim > 2:
        a = _array_channel(a, p)
    if a.ndim != 2:
        raise InputError(f"depth map must be 2-D, got shape {a.shape}", path=str(p))
    if 0 in a.shape:  # (a 0 x 5 NPY, a PFM of 0 x 0): refused here, not as a size mismatch later
        raise InputError(f"depth map is empty ({a.shape[1]}x{a.shape[0]})", path=str(p))
    a = np.asarray(decode_values(a, meta))
    if a.dtype.kind == "f" and a.dtype.itemsize > 4:  # float64 beyond float32: inf with a RuntimeWarning
        big = np.isfinite(a) & (np.abs(a) > np.finfo(np.float32).max)
        if big.any():
            raise InputError(f"depth map holds values beyond float32 (up to {float(np.abs(a[big]).max()):.3g})",
                             path=str(p), hint="depth is read as float32: rescale the values")
    return np.ascontiguousarray(a, dtype=np.float32), meta


# -- which channel holds depth ----------------------------------------------------------------
GIVE_INSTEAD = "give a single-channel depth file: grayscale PNG (8 or 16 bit), NPY, PFM, TIFF or EXR"


def _refuse_preview(meta: dict, p: Path) -> None:
    """depthcraft's own colour previews say what they are in their metadata: refuse them by name."""
    if "colour map" in str(meta.get("values", "")) or meta.get("convention") == "warm = near":
        raise InputError("is a depthcraft colour preview (a turbo picture for viewing): its colours cannot be "
                         "read back as depth", path=str(p),
                         hint="give the depth file written by the same export instead: the grayscale or "
                         "png16 PNG, the .npy or the .exr")


def _npy_within_budget(f, p: Path) -> None:
    """Refuse an NPY array (a file, or an NPZ entry) whose header claims more than the decoding
    budget, before its data is read: a zero-filled NPZ compresses about 1000:1."""
    from numpy.lib import format as npf

    version = npf.read_magic(f)
    shape, _, _ = (npf.read_array_header_1_0 if version == (1, 0) else npf.read_array_header_2_0)(f)
    if len(shape) >= 2:
        _within_budget((int(shape[1]), int(shape[0])), p)
    elements = int(np.prod(shape, dtype=np.float64)) if shape else 1
    from .images import decode_budget

    if elements > 4 * decode_budget():  # channels: at most four per pixel
        raise InputError(f"depth array holds {elements:,} values, over the decoding budget", path=str(p))


def _within_budget(size: tuple[int, int], p: Path) -> None:
    from .images import decode_budget

    w, h = size
    if w * h > decode_budget():
        raise InputError(f"depth map is {w}x{h} = {w * h / 1e6:,.0f} MP, over the decoding budget of "
                         f"{decode_budget() / 1e6:,.0f} MP", path=str(p), hint="give a depth map of its photo's size")


def _same(chans: list[np.ndarray]) -> bool:
    """Do colour channels hold the same values (a gray picture stored as RGB)? Lossy files
    (JPEG-coded RGB) differ by a few levels: 3/255 of the range is still "the same"."""
    ref = np.nan_to_num(chans[0].astype(np.float64))
    if np.issubdtype(chans[0].dtype, np.integer):
        tol = 3.0 * max(1.0, np.iinfo(chans[0].dtype).max / 255.0)
    else:
        tol = 1e-6 * max(float(np.abs(ref).max(initial=0.0)), 1e-12)
    return all(float(np.abs(np.nan_to_num(c.astype(np.float64)) - ref).max(initial=0.0)) <= tol for c in chans[1:])


def _refuse_colour(p: Path, n: int) -> InputError:
    return InputError(f"has {n} colour channels that differ: a colour-mapped picture (turbo, viridis...) is not a "
                      "depth map, and which channel holds depth is ambiguous", path=str(p), hint=GIVE_INSTEAD)


def _image_channel(img: "Image.Image", p: Path) -> np.ndarray:
    """The depth channel of a PIL image, by the format's conventions (PNG gray + alpha: the gray;
    RGB with equal channels: any one of them); a colour picture is refused."""
    mode = img.mode
    if mode in ("1", "L", "I", "F") or mode.startswith("I;16"):
        return np.asarray(img)
    if mode in ("LA", "La", "PA"):
        return np.asarray(img.getchannel(0) if mode != "PA" else img.convert("LA").getchannel(0))
    if mode == "P":
        img = img.convert("RGB")
        mode = "RGB"
    if mode in ("RGB", "RGBA", "RGBX", "RGBa"):
        a = np.asarray(img)
        chans = [a[..., i] for i in range(3)]
        if not _same(chans):
            raise _refuse_colour(p, 3)
        return chans[0]
    raise InputError(f"is a {mode} image, not a depth map", path=str(p), hint=GIVE_INSTEAD)


def _array_channel(a: np.ndarray, p: Path) -> np.ndarray:
    """A 2-D map from an array with more dimensions: singleton axes dropped, then channels
    (last axis, or first when it is the short one) used only when they agree."""
    a = np.squeeze(a)
    if a.ndim <= 2:
        return a
    if a.ndim == 3:
        axis = 2 if a.shape[2] <= 4 else 0 if a.shape[0] <= 4 else None
        if axis is not None:
            n = a.shape[axis]
            chans = [np.take(a, i, axis=axis) for i in range(min(n, 3))]
            if n == 2:  # gray + alpha, or two unrelated maps: nothing says which
                raise InputError(f"has 2 channels (shape {a.shape}); which one holds depth is ambiguous",
                                 path=str(p), hint=GIVE_INSTEAD)
            if _same(chans):
                return chans[0]
            raise _refuse_colour(p, n)
    raise InputError(f"depth map must be 2-D, got shape {a.shape}", path=str(p), hint=GIVE_INSTEAD)


def read_depthmap(path: str | os.PathLike, *, kind: str | None = None) -> "DepthMap":
    """A depth file as a :class:`~depthcraft.tasks.lib.depthmap.DepthMap`: values decoded, ``kind``, source
    and field of view from the file's metadata (``kind`` overrides; default ``relative_inverse``)."""
    from .depthmap import KINDS, DepthMap

    data, meta = read_depth(path)
    k = kind or meta.get("kind")
    if k not in KINDS:
        k = "relative_inverse"
    keep = {key: v for key, v in meta.items() if key in ("near_m", "far_m", "known_m", "model")}
    return DepthMap(data=data, kind=k, source=str(meta.get("source", "file")), fov_deg=meta.get("fov_deg"), meta=keep)


def write_npy(path: str | os.PathLike, a: np.ndarray) -> Path:
    p = Path(path)
    with open(p, "wb") as f:
        np.save(f, np.asarray(a, dtype=np.float32))
    return p


def write_npz(path: str | os.PathLike, a: np.ndarray, meta: dict | None = None) -> Path:
    """float32 ``depth`` plus a ``meta`` entry (a JSON string: loads without pickle)."""
    p = Path(path)
    with open(p, "wb") as f:
        np.savez_compressed(f, depth=np.asarray(a, dtype=np.float32), meta=np.array(json.dumps(meta or {})))
    return p


def write_png16(path: str | os.PathLike, a: np.ndarray, meta: dict | None = None) -> Path:
    """16-bit PNG of ``a`` spread over its finite range; the range travels in the file.

    Read back within ``(max - min) / 65535``. Non-finite values are stored as 0 (``invalid``),
    the finite ones then over 1..65535.
    """
    p = Path(path)
    a = np.asarray(a, dtype=np.float64)
    ok = np.isfinite(a)
    lo = float(a[ok].min()) if ok.any() else 0.0
    hi = float(a[ok].max()) if ok.any() else 1.0
    first, levels = (0, 65535) if ok.all() else (1, 65534)
    span = hi - lo if hi > lo else 1.0
    q = np.round((np.where(ok, a, lo) - lo) / span * levels).astype(np.int64) + first
    q = np.where(ok, q, 0).astype(np.uint16)
    enc = {"min": lo, "max": hi, "scale": span / levels, "offset": lo - first * span / levels}
    if not ok.all():
        enc["invalid"] = 0
    info = PngImagePlugin.PngInfo()
    info.add_text(PNG_META_KEY, json.dumps({**(meta or {}), **enc}))
    Image.fromarray(q).save(p, pnginfo=info)
    return p


def write_png16_units(path: str | os.PathLike, a: np.ndarray, unit: float, meta: dict | None = None) -> Path:
    """16-bit PNG storing ``round(a / unit)``, 0 = invalid (non-finite or not positive).

    The depth camera convention with ``unit = 0.001`` (millimetres from meters); values over
    65535 units are clipped.
    """
    p = Path(path)
    a = np.asarray(a, dtype=np.float64)
    ok = np.isfinite(a) & (a > 0)
    q = np.where(ok, np.clip(np.round(np.where(ok, a, 0) / unit), 1, 65535), 0).astype(np.uint16)
    info = PngImagePlugin.PngInfo()
    info.add_text(PNG_META_KEY, json.dumps({**(meta or {}), "scale": unit, "offset": 0.0, "invalid": 0}))
    Image.fromarray(q).save(p, pnginfo=info)
    return p


def write_png8(path: str | os.PathLike, unit: np.ndarray, meta: dict | None = None) -> Path:
    """8-bit PNG of a 0..1 map (values clipped).

    With ``meta``, the file also says how to read it back (``scale`` 1/255 unless ``meta``
    gives its own ``offset``/``scale``, as the inverted format does).
    """
    p = Path(path)
    q = np.clip(np.asarray(unit, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    info = PngImagePlugin.PngInfo()
    if meta:
        info.add_text(PNG_META_KEY, json.dumps({"offset": 0.0, "scale": 1.0 / 255.0, **meta}))
    Image.fromarray(q).save(p, pnginfo=info)
    return p


def write_tiff(path: str | os.PathLike, a: np.ndarray, meta: dict | None = None) -> Path:
    """float32 TIFF (NaN kept); ``meta`` as JSON in the ImageDescription tag."""
    p = Path(path)
    img = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32))
    img.save(p, format="TIFF", tiffinfo={270: json.dumps(meta or {})})
    return p


# -- OpenEXR ---------------------------------------------------------------------------------
# A minimal scanline EXR codec after the OpenEXR file layout document ("OpenEXR File Layout",
# openexr.com): magic, version, header attributes, a line offset table, then one chunk per block
# of scanlines. We write one FLOAT channel ``Y`` (what OpenCV and most viewers show as gray),
# uncompressed; we read NO/ZIPS/ZIP compression, which covers most depth EXRs from 3D tools.
_EXR_MAGIC = 20000630
_EXR_TYPES = {0: np.dtype("<u4"), 1: np.dtype("<f2"), 2: np.dtype("<f4")}
_EXR_LINES = {0: 1, 2: 1, 3: 16}  # compression -> scanlines per chunk (NONE, ZIPS, ZIP)


def _exr_attr(name: str, type_: str, value: bytes) -> bytes:
    return name.encode() + b"\0" + type_.encode() + b"\0" + np.int32(len(value)).tobytes() + value


def write_exr(path: str | os.PathLike, a: np.ndarray, meta: dict | None = None) -> Path:
    """float32 single-channel (``Y``) uncompressed scanline OpenEXR; ``meta`` in a string attribute."""
    p = Path(path)
    a = np.ascontiguousarray(a, dtype="<f4")
    h, w = a.shape
    box = np.array([0, 0, w - 1, h - 1], dtype="<i4").tobytes()
    chlist = b"Y\0" + np.array([2], "<i4").tobytes() + b"\0\0\0\0" + np.array([1, 1], "<i4").tobytes() + b"\0"
    header = b"".join([
        _exr_attr("channels", "chlist", chlist),
        _exr_attr("compression", "compression", b"\0"),
        _exr_attr("dataWindow", "box2i", box),
        _exr_attr("displayWindow", "box2i", box),
        _exr_attr("lineOrder", "lineOrder", b"\0"),
        _exr_attr("pixelAspectRatio", "float", np.float32(1).tobytes()),
        _exr_attr("screenWindowCenter", "v2f", np.zeros(2, "<f4").tobytes()),
        _exr_attr("screenWindowWidth", "float", np.float32(1).tobytes()),
        _exr_attr(PNG_META_KEY, "string", json.dumps(meta or {}).encode()),
    ]) + b"\0"
    start = 8 + len(header) + 8 * h
    row = 8 + 4 * w
    offsets = (start + row * np.arange(h, dtype=np.uint64)).astype("<u8")
    rows = np.empty((h, row), dtype=np.uint8)
    rows[:, :4] = np.arange(h, dtype="<i4").view(np.uint8).reshape(h, 4)
    rows[:, 4:8] = np.frombuffer(np.int32(4 * w).tobytes(), np.uint8)
    rows[:, 8:] = a.view(np.uint8).reshape(h, 4 * w)
    with open(p, "wb") as f:
        f.write(np.array([_EXR_MAGIC, 2], dtype="<i4").tobytes())
        f.write(header)
        f.write(offsets.tobytes())
        f.write(rows.tobytes())
    return p


def _exr_budget() -> int:
    from .images import decode_budget

    return decode_budget()


def _exr_unzip(data: bytes, size: int) -> bytes:
    """Inflate an EXR ZIP block: zlib, then undo the byte predictor and the half-split interleave."""
    import zlib

    if len(data) >= size:  # stored raw when compression would not have helped
        return data
    t = np.frombuffer(zlib.decompress(data), dtype=np.uint8).astype(np.int64)
    t[1:] -= 128
    t = (np.cumsum(t) & 0xFF).astype(np.uint8)
    out = np.empty_like(t)
    half = (t.size + 1) // 2
    out[0::2], out[1::2] = t[:half], t[half:]
    return out.tobytes()


def read_exr(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """The depth channel of a scanline EXR (``Z``, ``Y``, ``R``, ``*.Z``/``*.V`` or the first) and its metadata."""
    p = Path(path)
    buf = p.read_bytes()
    magic, version = np.frombuffer(buf[:8], "<i4")
    if magic != _EXR_MAGIC:
        raise InputError("not an OpenEXR file", path=str(p))
    if version & 0x1A00:  # tiled, deep or multi-part
        raise InputError("tiled, deep or multi-part EXR is not supported; save as scanline", path=str(p))
    pos, attrs = 8, {}
    while buf[pos] != 0:
        name_end = buf.index(b"\0", pos)
        type_end = buf.index(b"\0", name_end + 1)
        size = int(np.frombuffer(buf[type_end + 1:type_end + 5], "<i4")[0])
        attrs[buf[pos:name_end].decode()] = (buf[name_end + 1:type_end].decode(), buf[type_end + 5:type_end + 5 + size])
        pos = type_end + 5 + size
    pos += 1
    channels, q = [], attrs["channels"][1]
    while q[:1] not in (b"", b"\0"):
        end = q.index(b"\0")
        ptype = int(np.frombuffer(q[end + 1:end + 5], "<i4")[0])
        xs, ys = np.frombuffer(q[end + 9:end + 17], "<i4")
        if (xs, ys) != (1, 1):
            raise InputError("subsampled EXR channels are not supported", path=str(p))
        channels.append((q[:end].decode(), _EXR_TYPES[ptype]))
        q = q[end + 17:]
    comp = attrs["compression"][1][0]
    if comp not in _EXR_LINES:
        raise InputError(f"EXR compression {comp} is not supported (use none, ZIP or ZIPS)", path=str(p))
    x0, y0, x1, y1 = np.frombuffer(attrs["dataWindow"][1], "<i4")
    w, h = int(x1 - x0 + 1), int(y1 - y0 + 1)
    lines = _EXR_LINES[comp]
    nchunks = (h + lines - 1) // lines
    offsets = np.frombuffer(buf[pos:pos + 8 * nchunks], "<u8")
    names = [c[0] for c in channels]
    # OpenEXR's conventions: Z is depth; Y is luminance (a gray image); R/G/B a colour image,
    # depth only when the three agree; a layer's depth is <layer>.Z
    ranked = [lambda n: n == "Z", lambda n: n.endswith(".Z"), lambda n: n.endswith(".V"), lambda n: n == "Y",
              lambda n: n.endswith(".Y"), lambda n: n == "R", lambda n: n.endswith(".R")]
    pick = next((n for test in ranked for n in names if test(n)), None)
    if pick is None:
        if len(names) != 1:
            raise InputError(f"EXR channels {', '.join(names)}: none is named Z (depth), Y or R; which holds depth "
                             "is ambiguous", path=str(p), hint="name the depth channel Z")
        pick = names[0]
    if w * h > _exr_budget():
        raise InputError(f"depth map is {w}x{h}, over the decoding budget", path=str(p))
    layer = pick[:-1]  # "" or "<layer>."
    want = [pick] + ([layer + c for c in ("G", "B") if layer + c in names] if pick.endswith("R") else [])
    line_bytes = sum(w * dt.itemsize for _, dt in channels)
    planes = {n: np.empty((h, w), dtype=np.float32) for n in want}
    out = planes[pick]
    for off in offsets:
        off = int(off)
        y = int(np.frombuffer(buf[off:off + 4], "<i4")[0]) - int(y0)
        size = int(np.frombuffer(buf[off + 4:off + 8], "<i4")[0])
        n = min(lines, h - y)
        data = buf[off + 8:off + 8 + size]
        if comp != 0:
            data = _exr_unzip(data, n * line_bytes)
        block = np.frombuffer(data, np.uint8).reshape(n, line_bytes)
        col = 0
        for name, dt in channels:  # channel planes per scanline, in the header's (sorted) order
            if name in planes:
                planes[name][y:y + n] = block[:, col:col + w * dt.itemsize].copy().view(dt).reshape(n, w)
            col += w * dt.itemsize
    if len(want) > 1 and not _same([planes[n] for n in want]):
        raise _refuse_colour(p, len(want))
    meta = {}
    if PNG_META_KEY in attrs and attrs[PNG_META_KEY][0] == "string":
        meta = _json_meta(attrs[PNG_META_KEY][1])
    return out, meta
