"""The gallery of a run: ``index.html`` beside the manifest, one page to look at everything made.

Every input with its outputs as thumbnails (depth previews, stereo pairs, bokeh, layers...),
the videos playable inline, the 3D viewers embedded, failures with their reason, and the run's
facts (recipe, session, provider, cached or computed, timings). Links are relative only, so
the output folder can be zipped, copied or served as it is.

Thumbnails (WebP, at most ``THUMB`` px) go to ``_gallery/`` beside the page, named by the
content hash of what they show, so a re-run reuses them and a changed output gets a new one.
Formats a browser cannot show (16-bit and float depth, NPY, PFM, TIFF, EXR, MPO) get a
thumbnail rendered here; meshes and other files are listed as links.
"""

from __future__ import annotations

import html
import io
import os
import re
from pathlib import Path

import numpy as np

from depthcraft.tasks.lib.store import atomic_write_bytes

INDEX = "index.html"
THUMBS = "_gallery"
THUMB = 360
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".mpo", ".pgm", ".ppm"}
DEPTH_SUFFIXES = {".npy", ".npz", ".pfm", ".exr"}
VIDEO_SUFFIXES = {".mp4", ".webm", ".mov", ".mkv"}
PAGE_SUFFIXES = {".html", ".htm"}
MAX_EMBEDDED_VIEWERS = 6  # each is a WebGL context; browsers keep only about 16


# -- thumbnails ---------------------------------------------------------------------------------
def _to_rgb8(a: np.ndarray) -> np.ndarray:
    """Any image array (8/16-bit, float, gray, RGBA) -> uint8 RGB, alpha over a checkerboard."""
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[2] == 4:
        rgb, alpha = a[..., :3].astype(np.float32), a[..., 3:].astype(np.float32) / (255.0 if a.dtype == np.uint8 else float(a.max() or 1))
        yy, xx = np.indices(a.shape[:2])
        board = np.where(((yy // 12) + (xx // 12)) % 2 == 0, 200.0, 150.0)[..., None]
        return np.clip(rgb * alpha + board * (1 - alpha), 0, 255).astype(np.uint8)
    if a.dtype != np.uint8:
        f = a.astype(np.float32)
        ok = np.isfinite(f)
        lo, hi = (np.percentile(f[ok], [0.5, 99.5]) if ok.any() else (0.0, 1.0))
        f = np.where(ok, (f - lo) / max(hi - lo, 1e-12), 0.0)
        a = (np.clip(f, 0, 1) * 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return a[..., :3]


class OverBudget(Exception):
    """A picture whose header claims more pixels than a thumbnail may decode (a "header bomb":
    a few hundred bytes can claim 100000 x 100000). Nothing of it was decoded."""

    def __init__(self, size: tuple[int, int], budget: int):
        self.size, self.budget = size, budget
        super().__init__(f"{size[0]}x{size[1]} = {size[0] * size[1] / 1e6:,.0f} MP, over the budget of "
                         f"{budget / 1e6:,.0f} MP for a thumbnail")


def thumb_budget(limit: int | None = None, *, downscale: bool = False, output: bool = False) -> int:
    """The most pixels a thumbnail decodes: an input, what its run would decode (the pixel limit,
    or the decoding budget with ``downscale``); an output (a stereo pair is two photos wide), the
    decoding budget. See :func:`depthcraft.tasks.lib.images.decode_budget`."""
    from depthcraft.tasks.lib.images import decode_budget, max_pixels_default

    limit = limit or max_pixels_default()
    return decode_budget(limit) if (downscale or output) else limit


def _check(size: tuple[int, int], budget: int | None) -> None:
    if budget is not None and size[0] * size[1] > budget:
        raise OverBudget(size, budget)


def _load_for_thumb(path: Path, budget: int | None = None) -> np.ndarray | None:
    """The picture a thumbnail shows for ``path`` (uint8 RGB), or None if it has none.

    Only headers are read before the size is checked against ``budget`` (pixels; None: the
    default output budget): :class:`OverBudget` for more, never a decode."""
    budget = thumb_budget(output=True) if budget is None else budget
    s = path.suffix.lower()
    if s in DEPTH_SUFFIXES:
        from depthcraft.tasks.lib.depthio import read_depth

        return _to_rgb8(read_depth(path)[0])  # read_depth keeps to the decoding budget itself
    if s in VIDEO_SUFFIXES:
        import imageio_ffmpeg

        gen = imageio_ffmpeg.read_frames(str(path))
        try:
            meta = next(gen)
            w, h = meta["size"]
            _check((w, h), budget)  # before a frame of that size is read into this process
            frame = np.frombuffer(next(gen), np.uint8).reshape(h, w, 3)
        finally:
            gen.close()
        return frame
    if s in IMAGE_SUFFIXES:
        from PIL import Image

        with Image.open(path) as im:
            im.draft("RGB", (THUMB * 2, THUMB * 2))  # JPEG: decode at a fraction of the size
            _check(im.size, budget)  # the size that would be decoded (after draft), from the header
            icc = im.info.get("icc_profile")
            if icc:  # a photo tagged Display P3 etc.: its thumbnail in sRGB, as the steps see it
                from depthcraft.tasks.lib.colour import to_srgb

                im.load()
                conv, _ = to_srgb(im, icc, str(path))
                if conv is not im:
                    return _to_rgb8(np.asarray(conv.convert("RGBA" if "A" in conv.mode else "RGB")))
            if im.mode in ("I;16", "I;16B", "I", "F"):
                return _to_rgb8(np.asarray(im))
            return _to_rgb8(np.asarray(im.convert("RGBA" if "A" in im.mode or "transparency" in im.info else "RGB")))
    return None


def over_budget(path: Path, budget: int) -> OverBudget | None:
    """Whether a thumbnail of ``path`` would decode more than ``budget`` pixels (headers only)."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return None
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.draft("RGB", (THUMB * 2, THUMB * 2))
            _check(im.size, budget)
    except OverBudget as e:
        return e
    except Exception:  # noqa: BLE001 - unreadable: thumbnail() says None
        return None
    return None


def thumbnail(path: Path, folder: Path, key: str, size: int = THUMB, budget: int | None = None) -> Path | None:
    """A WebP thumbnail of ``path`` in ``folder``/_gallery named by ``key`` (a content hash);
    made once. None where the file has no picture, cannot be read, or is over ``budget`` pixels
    (see :func:`_load_for_thumb`)."""
    out = folder / THUMBS / f"{key[:20]}-{size}.webp"
    if out.exists():
        return out
    try:
        rgb = _load_for_thumb(path, budget)
    except Exception:  # noqa: BLE001 - a thumbnail is a nicety: the file is still linked
        return None
    if rgb is None:
        return None
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(rgb))
    im.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, "WEBP", quality=82, method=4)
    atomic_write_bytes(out, buf.getvalue())
    return out


# -- the page ---------------------------------------------------------------------------------
def _rel(path: str | Path, folder: Path) -> str:
    """A relative URL from the gallery to ``path`` (``/`` separators, each part escaped)."""
    from urllib.parse import quote

    rel = os.path.relpath(Path(path), folder)
    return "/".join(quote(part) for part in Path(rel).parts)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _facts(m: dict) -> list[tuple[str, str]]:
    steps = m.get("steps", [])
    prov = m.get("provider", {})
    idents = prov.get("identities") or {}
    ident = "; ".join(", ".join(f"{a} {b}" for a, b in v.items() if a != "mode") if isinstance(v, dict) else f"{k}: {v}"
                      for k, v in idents.items())
    count = lambda s: sum(1 for n in steps if n.get("status") == s)  # noqa: E731
    return [
        ("recipe", f"{m['recipe']['name']} ({Path(str(m['recipe'].get('file') or '')).name or 'inline'}, "
                   f"sha256 {m['recipe']['sha256'][:12]})"),
        ("session", str(m.get("session_id"))),
        ("provider", f"{prov.get('name')} ({prov.get('mode')})" + (f"; {ident}" if ident else "")),
        ("step runs", f"{count('computed')} computed, {count('cached')} cached, {count('failed')} failed, "
                      f"{count('skipped')} skipped"),
        ("started", str(m.get("created"))),
        ("duration", f"{m.get('duration_s', 0):.1f} s"),
        ("flow run", str(m.get("run_id"))),
        ("depthcraft", str(m.get("versions", {}).get("depthcraft"))),
    ]


def output_records(m: dict) -> list[dict]:
    """Every published output of a manifest: image, step, kind, name, path, sha256, cached."""
    out = []
    for n in m.get("steps", []):
        for name, o in (n.get("outputs") or {}).items():
            out.append({"image": n["image"], "step": n["step"], "uses": n.get("kind"), "name": name,
                        "path": o["path"], "sha256": o["sha256"], "kind": o.get("kind"),
                        "cached": n.get("status") == "cached", "seconds": n.get("seconds")})
    # per step: the main output first, then the others (masks, sidecars) as the step named them
    order = {(r["image"], r["step"]): i for i, r in enumerate(out)}
    return sorted(out, key=lambda r: (order[(r["image"], r["step"])], r["name"] != "main"))


_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1280px; padding: 16px 24px; color: #1d1d1f; background: #fafafa; }
h1 { font-size: 22px; margin: 8px 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; border-top: 1px solid #ddd; padding-top: 16px; }
.origin { color: #666; font-size: 12px; word-break: break-all; margin: 0 0 10px; }
table { border-collapse: collapse; font-size: 13px; } td, th { text-align: left; padding: 3px 12px 3px 0; vertical-align: top; }
th { color: #666; font-weight: 500; }
.grid { display: flex; flex-wrap: wrap; gap: 14px; align-items: flex-start; }
figure { margin: 0; background: #fff; border: 1px solid #e3e3e3; border-radius: 8px; padding: 8px; width: 240px; }
figure.wide { width: 496px; }
figure img, figure video { display: block; width: 100%; height: 170px; object-fit: contain; background: #eee; border-radius: 4px; }
figure.wide img, figure.wide video, figure iframe { height: 300px; }
figure iframe { display: block; width: 100%; border: 0; border-radius: 4px; background: #111; }
.placeholder { height: 170px; display: flex; align-items: center; justify-content: center; text-align: center; background: #eee; color: #666; font-size: 12px; border-radius: 4px; padding: 0 8px; }
figcaption { font-size: 12px; color: #444; margin-top: 6px; word-break: break-all; }
figcaption b { color: #1d1d1f; } .tag { display: inline-block; font-size: 11px; border-radius: 8px; padding: 0 6px; margin-left: 4px; }
.cached { background: #e6f0ff; color: #1a4fa0; } .computed { background: #e8f6ea; color: #1f6b2c; }
.failed { background: #fde8e8; color: #a01a1a; }
ul.failures { color: #a01a1a; } ul.files { columns: 2; font-size: 13px; }
a { color: #0b57d0; }
"""


def _caption(rec: dict, path: Path) -> str:
    size = _size(path.stat().st_size) if path.exists() else "missing"
    status = "cached" if rec["cached"] else "computed"
    return (f"<figcaption><b>{html.escape(rec['step'])}</b> · {html.escape(rec['name'])} "
            f"<span class=\"tag {status}\">{status}</span><br>"
            f"<a href=\"{rec['href']}\">{html.escape(path.name)}</a> · {size}</figcaption>")


def render(m: dict, folder: Path) -> str:
    """The gallery page of manifest ``m`` whose index lives in ``folder`` (thumbnails made as needed)."""
    folder = Path(folder)
    recs = output_records(m)
    viewers = sum(1 for r in recs if Path(r["path"]).suffix.lower() in PAGE_SUFFIXES)
    e = html.escape
    parts = [f"<h1>{e(m['recipe']['name'])}</h1>",
             "<table class=\"facts\">" + "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in _facts(m))
             + f"<tr><th>manifest</th><td><a href=\"{_rel(folder / 'manifest.json', folder)}\">manifest.json</a></td></tr>"
             + "</table>"]
    failures = m.get("failures", [])
    lim = m.get("limits") or {}
    in_budget = thumb_budget(lim.get("max_pixels"), downscale=bool(lim.get("downscale")))
    out_budget = thumb_budget(lim.get("max_pixels"), output=True)
    by_image: dict[str, list[dict]] = {}
    for r in recs:
        by_image.setdefault(r["image"], []).append(r)
    for inp in m.get("inputs", []):
        name = inp["name"]
        parts.append(f"<h2 id=\"{e(_anchor(name))}\">{e(name)}</h2><p class=\"origin\">{e(str(inp.get('origin')))}</p>")
        figs, files = [], []
        src = Path(str(inp.get("origin") or ""))
        # an input over the run's limit was refused (or downscaled from the header): never decoded whole here
        big = over_budget(src, in_budget) if inp.get("sha256") and src.is_file() else None
        changed = big is None and inp.get("sha256") and src.is_file() and src.suffix.lower() in IMAGE_SUFFIXES \
            and _changed(src, inp["sha256"])
        if big is not None or changed:  # the thumbnail is named by the hash the run read: never of other bytes
            why = str(big) if big is not None else "the file has changed since the run read it"
            figs.append(f"<figure><div class=\"placeholder\">not shown: {e(why)}"
                        f"</div><figcaption><b>input</b> · {e(src.name)}</figcaption></figure>")
        elif inp.get("sha256") and src.is_file():
            t = thumbnail(src, folder, inp["sha256"], budget=in_budget)
            if t is not None:
                figs.append(f"<figure><img src=\"{_rel(t, folder)}\" alt=\"{e(name)}\"><figcaption><b>input</b> · "
                            f"{e(src.name)}</figcaption></figure>")
        for r in by_image.get(name, []):
            p = Path(r["path"])
            r["href"] = _rel(p, folder)
            suffix = p.suffix.lower()
            if p.name.endswith(".json") or not p.exists():
                files.append(f"<li><a href=\"{r['href']}\">{e(p.name)}</a> ({e(r['step'])})</li>")
                continue
            if suffix in PAGE_SUFFIXES:
                if viewers <= MAX_EMBEDDED_VIEWERS:
                    figs.append(f"<figure class=\"wide\"><iframe src=\"{r['href']}\" title=\"3D view of {e(name)}\" "
                                f"loading=\"lazy\" sandbox=\"allow-scripts\"></iframe>{_caption(r, p)}</figure>")
                else:
                    files.append(f"<li><a href=\"{r['href']}\">{e(p.name)}</a>: 3D view ({e(r['step'])})</li>")
                continue
            t = thumbnail(p, folder, r["sha256"], budget=out_budget)
            if suffix in VIDEO_SUFFIXES:
                poster = f" poster=\"{_rel(t, folder)}\"" if t else ""
                figs.append(f"<figure class=\"wide\"><video src=\"{r['href']}\"{poster} controls muted loop playsinline "
                            f"preload=\"metadata\"></video>{_caption(r, p)}</figure>")
            elif t is not None:
                wide = " class=\"wide\"" if _is_wide(t) else ""
                figs.append(f"<figure{wide}><a href=\"{r['href']}\"><img src=\"{_rel(t, folder)}\" alt=\"{e(r['step'])} "
                            f"{e(r['name'])}\" loading=\"lazy\"></a>{_caption(r, p)}</figure>")
            else:
                files.append(f"<li><a href=\"{r['href']}\">{e(p.name)}</a> ({e(r['step'])}, {_size(p.stat().st_size)})</li>")
        bad = [f for f in failures if f.get("image") == name]
        if inp.get("error") and not any(f.get("step") is None for f in bad):
            bad.insert(0, {"step": None, "error": inp["error"]})
        if bad:
            parts.append("<ul class=\"failures\">" + "".join(
                f"<li><span class=\"tag failed\">failed</span> <b>{e(f.get('step') or 'input')}</b>: {e(str(f.get('error')))}</li>"
                for f in bad) + "</ul>")
        parts.append("<div class=\"grid\">" + "".join(figs) + "</div>")
        if files:
            parts.append("<ul class=\"files\">" + "".join(files) + "</ul>")
    parts.append(_timings(m))
    body = "\n".join(parts)
    from depthcraft.tasks.lib import webpage

    page = ("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            "<meta name=\"referrer\" content=\"no-referrer\">\n"
            f"<title>{e(m['recipe']['name'])}: depthcraft run</title>\n<link rel=\"icon\" href=\"data:,\">\n"
            f"<style>{_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")
    return page.replace("<head>\n", "<head>\n<meta http-equiv=\"Content-Security-Policy\" content=\""
                        + e(webpage.csp_for(page, img="'self' data:", media="'self'", frame="'self'"), quote=True)
                        + "\">\n", 1)


def _changed(path: Path, sha256: str) -> bool:
    from depthcraft.tasks.lib.store import sha256_file

    try:
        return sha256_file(path) != sha256
    except OSError:
        return True


def _is_wide(thumb: Path) -> bool:
    from PIL import Image

    with Image.open(thumb) as im:
        return im.width >= 1.6 * im.height


def _anchor(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name) or "input"


def _timings(m: dict) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(n['step'])}</td><td>{e(str(n.get('kind')))}</td><td>{e(n['image'])}</td>"
        f"<td><span class=\"tag {e(n.get('status', ''))}\">{e(n.get('status', ''))}</span></td>"
        f"<td>{'' if n.get('seconds') is None else format(n['seconds'], '.2f') + ' s'}</td></tr>"
        for n in m.get("steps", []))
    return ("<h2>step runs</h2><table><tr><th>step</th><th>uses</th><th>image</th><th>status</th><th>time</th></tr>"
            + rows + "</table>")


def write_gallery(m: dict, folder: str | Path) -> Path:
    """Write ``index.html`` (and its thumbnails) into ``folder``, the manifest's folder; drops
    thumbnails no longer shown. Returns the page's path."""
    folder = Path(folder)
    page = render(m, folder)
    out = atomic_write_bytes(folder / INDEX, page.encode("utf-8"))
    used = set(re.findall(re.escape(THUMBS) + r"/([0-9a-f]{20}-\d+\.webp)", page))
    tdir = folder / THUMBS
    if tdir.is_dir():
        for f in tdir.glob("*.webp"):
            if f.name not in used and re.fullmatch(r"[0-9a-f]{20}-\d+\.webp", f.name):
                f.unlink(missing_ok=True)
    return out
