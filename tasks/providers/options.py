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


# provider family -> option -> the values it takes (None: any); a family not here takes any
# option (eachsense's are the remote service's own). ``auto`` is onnx or classic, never eachsense.
OPTION_VALUES: dict[str, dict[str, tuple | None]] = {
    "onnx": {"upsample": ("guided", "bilinear")},
    "auto": {"upsample": ("guided", "bilinear")},
    "classic": {},
}


def check_options(providers: set[str], options: dict | None) -> tuple[str, str] | None:
    """``(option, why)`` of the first of ``options`` that none of the recipe's ``providers``
    (families: ``onnx``, ``auto``...) reads or that has a value they refuse, else None. Checked
    when the recipe is validated: a typo (``upsampel``) was ignored without a word, and a wrong
    value (``GUIDED``) failed every photo and clip at run time, after ``validate`` said ok."""
    if not options or any(p not in OPTION_VALUES for p in providers):
        return None
    known: dict[str, tuple | None] = {}
    for p in providers:
        known.update(OPTION_VALUES[p])
    for name, value in options.items():
        if name not in known:
            return name, (f"no provider of this recipe ({', '.join(sorted(providers))}) reads it; "
                          f"options: {', '.join(sorted(known)) or 'none'}")
        allowed = known[name]
        if allowed is not None and value not in allowed:
            return name, f"{name} must be {' or '.join(allowed)}, got {value!r}"
    return None


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
