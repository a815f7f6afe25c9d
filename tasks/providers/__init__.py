"""Depth providers by name: ``classic`` (embedded), ``onnx:<model|path>``, ``eachsense``."""

from __future__ import annotations

from ..lib.errors import ParameterError
from .base import DepthRequest, Provider

__all__ = ["DepthRequest", "Provider", "get_provider", "PROVIDER_NAMES"]

PROVIDER_NAMES = ("classic", "onnx:<model or path>", "eachsense")


def get_provider(spec: str) -> Provider:
    """The provider named by ``spec`` (``classic``, ``onnx:NAME``, ``onnx:/path/model.onnx``, ``eachsense``)."""
    name, _, arg = (spec or "classic").partition(":")
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
