"""Keys never reach a message: every key handed out is remembered here and scrubbed from text.

A last line of defence: no code path puts the key into a message on purpose.
"""

from __future__ import annotations

_known_keys: set[str] = set()  # every key handed out, so that messages can be scrubbed of it


def remember(key: str) -> None:
    _known_keys.add(key)


def scrub(text: str | None) -> str | None:
    """``text`` with every known key (4 characters or more) replaced by ``***``."""
    if not text:
        return text
    for k in list(_known_keys):
        if len(k) >= 4:
            text = text.replace(k, "***")
    return text
