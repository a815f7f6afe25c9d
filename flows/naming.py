"""Output folder names from input names: the photo's own name, safe on every common filesystem.

A photo ``café.jpg`` gets the folder ``café/``; Hebrew, Japanese or any other script is kept
as written (normalised to Unicode NFC, so that the same name typed on macOS and on Linux is
the same folder). Only what a common filesystem cannot hold is replaced by ``_``:

- the separators and characters Windows forbids: ``/ \\ : * ? " < > |``;
- control characters (U+0000-U+001F, U+007F-U+009F);
- leading dots (no hidden folders) and trailing dots and spaces (Windows drops them);
- the reserved device names of Windows (``CON``, ``PRN``, ``AUX``, ``NUL``, ``COM1``-``COM9``,
  ``LPT1``-``LPT9``, with any extension) get a trailing ``_``;
- a name longer than 120 bytes in UTF-8 is cut (at a character boundary).

A folder name depends on that photo alone, never on which other photos are in the batch: two
inputs whose names would collide (the same, or the same up to letter case, since macOS and
Windows do not tell case apart) each get a suffix derived from their own path, ``-`` and the
first 6 hex digits of the SHA-256 of the path as given (after glob expansion).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

_UNSAFE = re.compile(r'[/\\:*?"<>|\x00-\x1f\x7f-\x9f]')
_RESERVED = re.compile(r"^(con|prn|aux|nul|com[1-9]|lpt[1-9])(\..*)?$", re.IGNORECASE)
MAX_BYTES = 120


def safe_name(stem: str) -> str:
    """``stem`` as a folder name that every common filesystem accepts (see the module doc)."""
    name = unicodedata.normalize("NFC", stem)
    name = _UNSAFE.sub("_", name)
    name = name.lstrip(".").rstrip(". ")
    name = name.strip()
    if _RESERVED.match(name):
        name += "_"
    raw = name.encode("utf-8")
    if len(raw) > MAX_BYTES:
        name = raw[:MAX_BYTES].decode("utf-8", "ignore").rstrip(". ")
    return name or "image"


def path_suffix(origin: str) -> str:
    """Six hex digits from the input's own path: the same path always gets the same suffix."""
    return hashlib.sha256(unicodedata.normalize("NFC", origin).encode("utf-8")).hexdigest()[:6]


def assign_names(items: list[tuple[str, str]]) -> list[str]:
    """Folder names for ``(stem, origin)`` pairs: :func:`safe_name`, plus the path suffix on
    every name that collides with another one (case-insensitively)."""
    names = [safe_name(stem) for stem, _ in items]
    count: dict[str, int] = {}
    for n in names:
        count[n.casefold()] = count.get(n.casefold(), 0) + 1
    out = []
    for n, (_, origin) in zip(names, items):
        out.append(f"{n}-{path_suffix(origin)}" if count[n.casefold()] > 1 else n)
    return out
