"""The defaults of each provider's ``provider_options``, and the options as a cache key sees them.

A recipe's ``provider_options`` enter the cache key of every step that asks a provider. An
option given with its default value computes exactly what omitting it computes, so it must key
the same: ``{upsample: guided}`` for onnx is ``{}``, or an identical computation is redone.
The providers read their defaults from here (:mod:`.onnx`, :mod:`.eachsense.provider`), so the
two cannot drift apart. Options whose default is the remote service's own (eachsense's ``model``,
``behavior``, ``enable_safety_checker``) are not known here and always key as given.
"""

from __future__ import annotations

from typing import Any

# provider family (the part of ``onnx:NAME`` before the colon) -> option -> its default
OPTION_DEFAULTS: dict[str, dict[str, Any]] = {
    "onnx": {"upsample": "guided"},  # guided upsampling of the model's output to the photo's size
    # web_search: depthcraft sends false unless told (a depth map needs none); invert: null is
    # "as the answer says" (black or white = near, read from the words)
    "eachsense": {"web_search": False, "invert": None},
}


def _same(value: Any, default: Any) -> bool:
    """``value`` is ``default`` as the provider reads it (type and value: ``0`` is not ``false``,
    which a remote service may read differently)."""
    return value is None if default is None else type(value) is type(default) and value == default


def key_options(provider: str, options: dict | None) -> dict:
    """``options`` without the entries equal to ``provider``'s defaults (``provider``: a concrete
    provider, ``classic``, ``onnx:NAME`` or ``eachsense``; ``auto`` and unknown names keep every
    entry). For cache keys only: the provider still gets the options as written."""
    defaults = OPTION_DEFAULTS.get(str(provider).split(":")[0], {})
    return {k: v for k, v in (options or {}).items() if not (k in defaults and _same(v, defaults[k]))}
