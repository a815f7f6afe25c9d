"""The each::labs API key: read at request time, never stored on an object.

``EACHLABS_API_KEY``, else the Prefect Secret block named by ``EACHLABS_API_KEY_BLOCK`` (loaded
once per process). Every key handed out is remembered by :mod:`.redact` so that messages can
be scrubbed of it.
"""

from __future__ import annotations

import os

from .errors import AuthError
from .redact import _known_keys, remember

__all__ = ["api_key_from_env", "_block_cache", "_known_keys"]

_block_cache: dict[str, str] = {}


def api_key_from_env() -> str | None:
    """``EACHLABS_API_KEY``, else the Prefect Secret block named by ``EACHLABS_API_KEY_BLOCK``.

    Raises :class:`~.errors.AuthError` when the block cannot be loaded.
    """
    key = os.environ.get("EACHLABS_API_KEY", "").strip()
    if not key:
        block = os.environ.get("EACHLABS_API_KEY_BLOCK", "").strip()
        if block:
            if block not in _block_cache:
                try:
                    from prefect.blocks.system import Secret

                    _block_cache[block] = str(Secret.load(block).get()).strip()
                except Exception as e:  # noqa: BLE001 - any failure means: no key
                    raise AuthError(f"cannot load the Prefect Secret block {block!r} ({type(e).__name__})") from None
            key = _block_cache[block]
    if key:
        remember(key)
    return key or None
