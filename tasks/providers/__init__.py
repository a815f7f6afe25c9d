"""Depth providers by name: ``auto`` (the default), ``classic`` (embedded), ``onnx:<model|path>``, ``eachsense``."""

from __future__ import annotations

from ..lib.errors import ParameterError
from .base import DepthRequest, Provider

__all__ = ["DepthRequest", "Provider", "get_provider", "resolve_spec", "PROVIDER_NAMES", "DEFAULT_PROVIDER"]

PROVIDER_NAMES = ("auto", "classic", "onnx:<model or path>", "eachsense")
DEFAULT_PROVIDER = "auto"


def get_provider(spec: str) -> Provider:
    """The provider named by ``spec`` (``auto``, ``classic``, ``onnx:NAME``, ``onnx:/path/model.onnx``, ``eachsense``).

    ``auto`` is resolved here (see :mod:`.auto`); callers that key caches resolve it first with
    :func:`resolve_spec` so that the key names the provider that really runs.
    """
    spec = resolve_spec(spec or DEFAULT_PROVIDER)
    name, _, arg = spec.partition(":")
    if name == "classic":
        from .classic import ClassicProvider

        return ClassicProvider()
    if name == "onnx":
        if not arg:
            raise ParameterError("onnx needs a model: onnx:<registry name> or onnx:/path/model.onnx",
                                 parameter="provider", hint="`depthcraft models list` shows the names")
        from .onnx import OnnxProvider

        return OnnxProvider(arg)
    if name == "eachsense":
        from .eachsense import EachSenseProvider

        return EachSenseProvider()
    raise ParameterError(f"unknown provider {spec!r}; one of {', '.join(PROVIDER_NAMES)}", parameter="provider")


def resolve_spec(spec: str, *, download: bool = True) -> str:
    """``spec`` itself, or for ``auto`` the concrete provider it resolves to now."""
    if spec != "auto":
        return spec
    from .auto import resolve

    return resolve(download=download).provider
