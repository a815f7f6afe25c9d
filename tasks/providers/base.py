"""The provider interface: one photo in, one :class:`~depthcraft.tasks.lib.depthmap.DepthMap` out.

A provider is named in a recipe as ``classic``, ``onnx:<model or path>`` or ``eachsense``.
``identity()`` returns what makes its output what it is (model name, weights hash, mode...):
it enters every cache key of the steps that use the provider, so changing the model
recomputes and nothing else does. It must never contain a secret.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..lib.depthmap import DepthMap


@dataclass
class DepthRequest:
    """One estimation (or provider-side refinement) request."""

    image: np.ndarray  # uint8 RGB HxWx3
    image_path: str | None = None  # the file the photo came from (uploaded by remote providers)
    session_id: str = "adhoc"
    mode: str = "max"  # max | eco
    use_case: str | None = None  # portrait, landscape, product, interior, parallax, vr, stereo...
    message: str | None = None  # a recipe's own wording for remote providers
    answers: dict = field(default_factory=dict)  # answers to clarification questions
    output: str = "relative"  # relative | metric
    depth: DepthMap | None = None  # the current depth, for refinement requests
    options: dict = field(default_factory=dict)


class Provider(Protocol):
    name: str

    def identity(self) -> dict: ...

    def estimate(self, req: DepthRequest) -> DepthMap: ...
