"""Self-contained web pages: a template with ``{{SLOT}}`` s filled in, and a Content-Security-
Policy that lets nothing leave the page.

Pages built here carry everything they show as ``data:`` URIs and their code inline, so they
work from a disk, an intranet or an ``<iframe>`` alike. The policy (a ``<meta>`` element: the
page has no server to send a header) forbids every fetch (``default-src 'none'``) and allows
only ``data:`` images and the page's own inline scripts and styles, named by their SHA-256
(CSP Level 2 hash sources), so an injected script would not run either.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from importlib import resources

_SLOT = re.compile(r"\{\{([A-Z_]+)\}\}")
# executable inline scripts (no type, or a JavaScript type) and inline styles
_SCRIPT = re.compile(r"<script(?:\s+type=\"(?:text/javascript|module)\")?>(.*?)</script>", re.S)
_STYLE = re.compile(r"<style>(.*?)</style>", re.S)


def asset(name: str) -> str:
    """The text of a file shipped in ``depthcraft.tasks.lib`` (page templates, shaders)."""
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def data_uri(data: bytes, mime: str) -> str:
    """``data:<mime>;base64,...`` for ``data``."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def json_for_script(obj) -> str:
    """JSON safe inside ``<script type="application/json">`` (no ``</script>`` or ``<!--``)."""
    return json.dumps(obj, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e")


def _hash_source(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


def csp_for(page: str, *, img: str = "data:", media: str | None = None, frame: str | None = None) -> str:
    """A policy allowing exactly the page's inline scripts and styles (by hash) and images from
    ``img``; nothing else is fetched, submitted or framed unless ``media``/``frame`` say so."""
    scripts = sorted({_hash_source(s) for s in _SCRIPT.findall(page)})
    styles = sorted({_hash_source(s) for s in _STYLE.findall(page)})
    parts = ["default-src 'none'", f"img-src {img}",
             f"script-src {' '.join(scripts) if scripts else chr(39) + 'none' + chr(39)}",
             f"style-src {' '.join(styles) if styles else chr(39) + 'none' + chr(39)}",
             "base-uri 'none'", "form-action 'none'"]
    if media:
        parts.append(f"media-src {media}")
    if frame:
        parts.append(f"frame-src {frame}")
    return "; ".join(parts)


def fill(template: str, slots: dict[str, str], *, raw: set[str] = frozenset(), csp: dict | None = None) -> str:
    """Fill ``{{NAME}}`` slots: HTML-escaped, except the names in ``raw`` (scripts, JSON, URIs
    checked by the caller). A ``{{CSP}}`` slot gets the policy for the finished page."""
    def sub(m: re.Match) -> str:
        name = m.group(1)
        if name == "CSP":
            return "{{CSP}}"
        if name not in slots:
            raise KeyError(f"page slot {name} has no value")
        v = str(slots[name])
        return v if name in raw else html.escape(v, quote=True)

    page = _SLOT.sub(sub, template)
    if "{{CSP}}" in page:
        page = page.replace("{{CSP}}", html.escape(csp_for(page, **(csp or {})), quote=True))
    return page
