"""What a step is: its parameters, its code version, and the function that runs it on one image.

Every step kind lives in its own module (``tasks/estimate.py``, ``tasks/stereo.py``...) that
defines pure functions on arrays plus one ``run(ctx, params)`` wrapper and a module-level
``SPEC``. The wrapper reads its inputs through the :class:`StepContext`, calls the pure
functions, writes files into ``ctx.workdir`` and returns named :class:`Output` s. It knows
nothing of Prefect, caching or output folders: the flow runner does that.

Bump a step's ``version`` whenever its code changes what it produces: the version is part of
every cache key, so old artifacts are not reused for new code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from .depthmap import DepthMap
from .errors import InputError, ParameterError
from .store import Artifact


class StepParams(BaseModel):
    """Base of every step's parameters: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)  # nan, inf: refused by name

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, v: Any, info: ValidationInfo) -> Any:
        # YAML's true/false (`--set stride=true`, `stride: yes` in a recipe) was taken as 1 / 0
        if isinstance(v, bool) and info.field_name in cls.model_fields \
                and not _takes_bool(cls.model_fields[info.field_name].annotation):
            word = _bool_word(cls.model_fields[info.field_name].annotation, v)
            if word is not None:  # YAML 1.1 reads `auto: off` as false: the documented word was refused
                return word
            raise ValueError(f"{str(v).lower()} is a yes/no value; {info.field_name} takes "
                             f"{_what_it_takes(cls.model_fields[info.field_name].annotation)}")
        return v


# how YAML 1.1 (PyYAML) spells a bool: a choice among these words arrives as true/false
_BOOL_WORDS = {True: ("on", "yes", "true", "y"), False: ("off", "no", "false", "n")}


def _what_it_takes(ann: Any) -> str:
    import typing

    words = [str(a) for a in typing.get_args(ann) if typing.get_origin(ann) is typing.Literal]
    return "one of " + ", ".join(words) if words else "a number" if "int" in str(ann) or "float" in str(ann) \
        else "a value of its own kind"


def _bool_word(ann: Any, v: bool) -> str | None:
    """The one choice of a Literal of words (``auto: off``) that YAML read as ``v``, else None."""
    import types
    import typing

    origin = typing.get_origin(ann)
    if origin in (typing.Union, types.UnionType):
        found = {w for a in typing.get_args(ann) if (w := _bool_word(a, v)) is not None}
        return found.pop() if len(found) == 1 else None
    if origin is not typing.Literal:
        return None
    words = [a for a in typing.get_args(ann) if isinstance(a, str) and a.lower() in _BOOL_WORDS[v]]
    return words[0] if len(words) == 1 else None


def _takes_bool(ann: Any) -> bool:
    """Whether a field's annotation accepts a bool as such (bool, Optional[bool], Any...)."""
    import typing

    if ann is bool or ann is Any:
        return True
    if ann is type(None):
        return False
    origin = typing.get_origin(ann)
    if origin is typing.Literal:
        return any(isinstance(a, bool) for a in typing.get_args(ann))
    if origin is None:
        return not isinstance(ann, type) or not issubclass(ann, (int, float, str))
    return any(_takes_bool(a) for a in typing.get_args(ann)
               if origin in (typing.Union, __import__("types").UnionType))


@dataclass
class Output:
    """A file a step produced. ``publish`` copies it into the run's output folder."""

    path: Path
    kind: str
    meta: dict = field(default_factory=dict)
    publish: bool = True


@dataclass
class StepContext:
    """Everything a step may read. Built by the runner (or by a test, or a one-shot command)."""

    step_id: str
    image_name: str
    source: Artifact  # the input photo (kind image)
    workdir: Path
    session_id: str = "adhoc"
    provider: str = "classic"
    mode: str = "max"
    upstream: list[dict[str, Artifact]] = field(default_factory=list)
    given_depth: Artifact | None = None  # depth map supplied with the input
    options: dict = field(default_factory=dict)  # recipe-level settings (use case, answers...)
    progress: Callable[[int, int], None] | None = None  # (done, total), e.g. video frames
    _photo: Any = None
    _alpha: Any = None  # the photo's alpha (uint8 H x W), or None when it has none or is opaque
    _photo_full: tuple[int, int] | None = None  # (w, h) of the photo before --downscale, if it was

    # -- reading -------------------------------------------------------------------------
    def photo(self) -> np.ndarray:
        """The input photo, uint8 RGB HxWx3 (decoded once)."""
        if self._photo is None:
            from .images import decode_image
            from .oneframe import MOVIE_SUFFIXES

            # the bytes decoded are the bytes hashed: the cache key names the photo as planned,
            # so a photo edited since then must not be computed (and stored) under that key
            data = read_planned(self.source)
            opts = {"max_pixels": self.options.get("max_pixels"), "downscale": bool(self.options.get("downscale", False))}
            if Path(self.source.path).suffix.lower() in MOVIE_SUFFIXES:  # a 1-frame video: its frame, via ffmpeg
                from .images import read_image

                ph = read_image(self.source.path, **opts)
                if self.source.sha256 and read_planned(self.source) != data:  # (raises when changed since)
                    raise changed_error(self.source)
            else:
                ph = decode_image(data, name=self.source.path, **opts)
            self._photo, self._alpha, self._photo_full = ph.rgb, _translucent(ph.alpha), ph.downscaled_from
        return self._photo

    def given_depth_map(self, a: Artifact) -> DepthMap:
        """Depth artifact ``a`` at the photo's size: a map of the photo's full size follows a
        ``downscale`` of the photo (:func:`depthcraft.tasks.lib.depthmap.downscale_depth`)."""
        size = self.photo().shape[1::-1]
        return load_depth_artifact(a, expect_size=size, full_size=self._photo_full)

    def photo_alpha(self) -> np.ndarray | None:
        """The input photo's alpha as :meth:`image_alpha` gives it (None: no alpha, or opaque)."""
        self.photo()
        return self._alpha

    def photo_seen(self) -> np.ndarray:
        """The photo as a viewer shows it: composited over :data:`images.BACKGROUND` where it has
        alpha (what depth is estimated and refined on: a transparent pixel's stored colour is not
        the scene); :meth:`photo` itself when it has none."""
        from .images import over_background

        return over_background(self.photo(), self.photo_alpha())

    def image_alpha(self) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`image` and its alpha (uint8 H x W, 255 = opaque), or None when it has no alpha
        or is opaque everywhere (then a step writes exactly what it writes for an RGB photo).
        Steps whose output can carry alpha (PNG) keep it; the others composite the colour over
        :data:`images.BACKGROUND` (``images.over_background``) rather than show the colours a
        transparent pixel happens to store."""
        for outs in self.upstream:
            a = outs.get("image")
            if a is not None:
                from .images import read_image

                ph = read_image(a.path, max_pixels=2**62)
                return ph.rgb, _translucent(ph.alpha)
        return self.photo(), self._alpha

    def image(self) -> np.ndarray:  # (its alpha: image_alpha)
        """The image to work on: an upstream step's ``image`` output if any, else the photo."""
        for outs in self.upstream:
            a = outs.get("image")
            if a is not None:
                from .images import read_rgb

                return read_rgb(a.path, max_pixels=2**62)
        return self.photo()

    def depth_artifact(self) -> Artifact | None:
        for outs in self.upstream:
            if "depth" in outs:
                return outs["depth"]
        return self.given_depth

    def depth(self) -> DepthMap:
        """The depth to work with: the first upstream ``depth`` output, else the given depth map."""
        a = self.depth_artifact()
        if a is None:
            raise ParameterError(f"step {self.step_id!r} needs a depth map: add `from: <an estimate step>` "
                                 "or give the input a depth file", parameter="from")
        return self.given_depth_map(a)

    def out(self, name: str, suffix: str) -> Path:
        """A path in this step's work folder for output ``name``."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        return self.workdir / f"{name}{suffix}"

    def tick(self, done: int, total: int) -> None:
        from .cancel import check

        check()  # Ctrl-C / SIGTERM: long loops (video frames) stop here
        if self.progress is not None:
            self.progress(done, total)


def _translucent(alpha: np.ndarray | None) -> np.ndarray | None:
    return None if alpha is None or bool((alpha == 255).all()) else alpha


def changed_error(a: Artifact) -> InputError:
    """One line for a file whose bytes are no longer those the run planned (and keyed) with."""
    return InputError("changed while the run was reading it; run again", path=a.meta.get("given_path") or a.meta.get("origin") or a.path,
                      hint="nothing was stored for the old content; the next run reads the file as it is then")


def read_planned(a: Artifact) -> bytes:
    """The bytes of an input file, checked against the sha256 it had when the run was planned
    (its cache key holds that hash). Raises :class:`InputError`: missing, unreadable, or changed
    meanwhile (see :func:`changed_error`)."""
    from .store import sha256_bytes

    p = Path(a.path)
    if not p.exists():
        raise InputError("no such file (removed while the run was reading it; run again)",
                         path=a.meta.get("origin") or a.path)
    if p.is_dir():
        raise InputError("is a folder, not an image", path=a.meta.get("origin") or a.path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read ({e.strerror})", path=a.meta.get("origin") or a.path) from None
    if a.sha256 and sha256_bytes(data) != a.sha256:
        raise changed_error(a)
    return data


def load_depth_artifact(a: Artifact, *, expect_size: tuple[int, int] | None = None,
                        full_size: tuple[int, int] | None = None) -> DepthMap:
    """Read a stored depth artifact back into a DepthMap (kind and source from its metadata).
    ``full_size``: the photo's size before a downscale to ``expect_size``; a map of that size is
    downscaled with it (disparity in pixels scaled too), any other size is refused.

    A depth map given with the input is the user's file, which may change during the run: it is
    hashed again after it was read, and one that no longer has its planned sha256 is refused
    (:func:`changed_error`), so nothing is computed from it under the planned key."""
    from .depthio import read_depth

    data, file_meta = read_depth(a.path)
    if a.meta.get("source") == "given" and a.sha256:
        from .store import sha256_file

        try:
            same = sha256_file(a.path) == a.sha256
        except OSError:
            same = False
        if not same:
            raise changed_error(a)
    # what the user said (--depth-kind) wins over the file's own metadata, which wins over the default
    meta = {**file_meta, **{k: v for k, v in a.meta.items() if v is not None}}
    default_kind = "disparity" if meta.get("source") == "given" else "relative_inverse"
    dm = DepthMap(data=data, kind=meta.get("kind") or default_kind, source=meta.get("source", "unknown"),
                  fov_deg=meta.get("fov_deg"))
    if not np.isfinite(dm.data).any():  # every pixel NaN/inf: no step can make anything true of it
        raise InputError("depth map has no valid value (every pixel is NaN or infinite)",
                         path=meta.get("given_path", a.path), hint="give a depth map with finite values")
    if expect_size is not None and full_size is not None and tuple(full_size) != tuple(expect_size) \
            and (dm.shape[1], dm.shape[0]) == tuple(full_size):  # the photo was downscaled (--downscale)
        from .depthmap import downscale_depth
        from .notices import notice

        src = meta.get("given_path", a.path)
        dm = downscale_depth(dm, tuple(expect_size))
        notice(f"{src}: depth map downscaled with its photo from {full_size[0]}x{full_size[1]} to "
               f"{expect_size[0]}x{expect_size[1]}" + (f" (disparity x {expect_size[0] / full_size[0]:.4g})"
                                                       if dm.kind == "disparity" else ""))
    if expect_size is not None and (dm.shape[1], dm.shape[0]) != tuple(expect_size):
        src = meta.get("given_path", a.path)
        turned = (dm.shape[0], dm.shape[1]) == tuple(expect_size)  # W and H swapped: an EXIF-rotated photo
        raise InputError(f"depth map is {dm.shape[1]}x{dm.shape[0]} but the image is "
                         f"{expect_size[0]}x{expect_size[1]}", path=src,
                         hint="the photo is used as it is shown, its EXIF orientation applied: give the depth map "
                              "in that orientation" if turned else "give a depth map of the same size as its photo")
    return dm


def save_depth(ctx: StepContext, dm: DepthMap, name: str = "depth", *, publish: bool = False) -> Output:
    """Write a DepthMap as float32 .npy in the work folder (the form steps exchange)."""
    from .depthio import write_npy

    p = write_npy(ctx.out(name, ".npy"), dm.data)
    return Output(p, "depth", dm.describe(), publish=publish)


@dataclass(frozen=True)
class StepSpec:
    kind: str
    version: str
    params: type[StepParams]
    run: Callable[[StepContext, Any], dict[str, Output]]
    summary: str
    needs_depth: bool = True
    uses_provider: bool = False  # provider identity enters the cache key
    primary: str = "main"  # the output named in the output folder as <step id><suffix>
    # One-shot commands: parameters implied by the ``-o`` path (e.g. its suffix picks a format);
    # raises ParameterError for a suffix the step cannot write. ``output_params`` names the
    # parameters a suffix decides; ``main_suffixes(params)`` the suffixes the main output may
    # carry with those parameters (the first is the one written). A suffix that contradicts an
    # explicit format is refused by depthcraft.tasks.lib.outputs.
    params_for_output: Callable[[Path], dict] | None = None
    output_params: tuple[str, ...] = ()
    main_suffixes: Callable[[Any], tuple[str, ...]] | None = None
    # Clips: ``clip_frame(rgb, nearness, params, state) -> {output name: uint8 image}`` renders one
    # frame from the photo (uint8 RGB H x W x 3) and its temporally stable nearness (float32
    # H x W, 0..1, larger = nearer); ``state`` is a dict kept for the segment (depthcraft.tasks.clips).
    clip_frame: Callable[..., dict] | None = None
    # Clips: ``clip_warm(rgb, nearness, params, state)`` brings ``state`` up to date on a warm-up
    # frame before the segment (no output), so that state that follows the clip (a focus pull,
    # depth planes) continues across segment boundaries; ``state["cut"]`` is True on the first
    # frame of a new shot.
    clip_warm: Callable[..., None] | None = None
    # ``inert(params, given) -> [lib.inert.Inert]``: parameters that would have no effect given
    # the others; those the user wrote (``given``, dotted names) are refused (depthcraft.tasks.lib.inert)
    inert: Callable[[Any, set], list] | None = None
    # What else the output embeds besides content: ``key_extra(params, image_name) -> dict`` enters
    # the cache key (e.g. the viewer's page title, the image's name by default), so that identical
    # photos under two names never share a page that names the first.
    key_extra: Callable[[Any, str], dict] | None = None
