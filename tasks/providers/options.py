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
    # send_depth: a refine turn sends the current depth map unless told
    "eachsense": {"web_search": False, "invert": None, "send_depth": True},
}


# provider family -> option -> the values it takes (a tuple: these values, compared with their
# type, so ``1`` is not ``true``; a type: any value of it; None: any). ``auto`` is onnx or classic,
# never eachsense. eachsense's are the ones its provider sends or reads (tasks/providers/eachsense/
# provider.py); ``model`` and ``behavior`` are the remote service's own words, any text.
OPTION_VALUES: dict[str, dict[str, tuple | type | None]] = {
    "onnx": {"upsample": ("guided", "bilinear")},
    "auto": {"upsample": ("guided", "bilinear")},
    "classic": {},
    "eachsense": {"model": str, "behavior": str, "web_search": (True, False),
                  "enable_safety_checker": (True, False), "invert": (True, False, None), "send_depth": (True, False)},
}


def _said(value: Any) -> str:
    return {True: "true", False: "false", None: "null"}.get(value, str(value)) if not isinstance(value, str) else value


def check_options(providers: set[str], options: dict | None) -> tuple[str, str] | None:
    """``(option, why)`` of the first of ``options`` that none of the recipe's ``providers``
    (families: ``onnx``, ``auto``, ``eachsense``...) reads or that has a value they refuse, else
    None; every provider the recipe uses is checked (one recipe-wide ``provider_options`` serves
    them all: an option one of them reads is not a typo for another). Checked when the recipe is
    validated: a typo (``upsampel``) was ignored without a word, and a wrong value (``GUIDED``)
    failed every photo and clip at run time, after ``validate`` said ok; with an eachsense step in
    the recipe nothing at all was checked."""
    if not options or any(p not in OPTION_VALUES for p in providers):
        return None  # (an unknown provider is refused in its own words)
    known: dict[str, tuple | type | None] = {}
    for p in sorted(providers):
        for name, allowed in OPTION_VALUES[p].items():
            known[name] = allowed if name not in known or known[name] == allowed else None
    for name, value in options.items():
        if name not in known:
            return name, (f"no provider of this recipe ({', '.join(sorted(providers))}) reads it; "
                          f"options: {', '.join(sorted(known)) or 'none'}")
        allowed = known[name]
        if isinstance(allowed, type):
            if not isinstance(value, allowed) or isinstance(value, bool) and allowed is not bool:
                return name, f"{name} must be {'text' if allowed is str else allowed.__name__}, got {value!r}"
            if allowed is str and not value.strip():  # (an unset shell variable: the service refused it mid-run)
                return name, f"{name} is empty (an unset shell variable?); leave it out for the service's own"
        elif allowed is not None and not any(type(value) is type(a) and value == a for a in allowed):
            return name, f"{name} must be {' or '.join(_said(a) for a in allowed)}, got {value!r}"
    return None


def _same(value: Any, default: Any) -> bool:
    """``value`` is ``default`` as the provider reads it (type and value: ``0`` is not ``false``,
    which a remote service may read differently)."""
    return value is None if default is None else type(value) is type(default) and value == default


def key_options(provider: str, options: dict | None) -> dict:
    """``options`` without the entries equal to ``provider``'s defaults and without those
    ``provider`` does not read (``provider``: a concrete provider, ``classic``, ``onnx:NAME`` or
    ``eachsense``; ``auto`` and unknown names keep every entry). One recipe-wide
    ``provider_options`` serves every provider of a mixed recipe: eachsense's ``send_depth``
    changes nothing an onnx or classic step computes, and must not make it compute again (nor
    onnx's ``upsample`` re-send a paid eachsense turn). For cache keys only: the provider still
    gets the options as written."""
    family = str(provider).split(":")[0]
    defaults = OPTION_DEFAULTS.get(family, {})
    reads = OPTION_VALUES.get(family) if family != "auto" else None
    return {k: v for k, v in (options or {}).items()
            if not (k in defaults and _same(v, defaults[k])) and (reads is None or k in reads)}
