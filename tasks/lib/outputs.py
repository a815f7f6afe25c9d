"""An output file's name and its contents agree: the suffix picks the format, or it is refused.

A step declares (on its :class:`~depthcraft.tasks.lib.step.StepSpec`):

- ``output_params``: the parameters an output's suffix decides (``format``, ``layout``,
  ``container``...);
- ``params_for_output(path)``: the values a suffix implies (raises :class:`ParameterError` for a
  suffix the step cannot write, e.g. a depth map as ``.mp4`` or a mesh as ``.png``);
- ``main_suffixes(params)``: the suffixes its main output may carry with these parameters, the
  first being the one it writes. Several formats may share a suffix (``grayscale``, ``png16``
  and ``preview`` are all PNGs; ``tiff`` is ``.tif`` or ``.tiff``), so this is a mapping, never
  a comparison of names.

:func:`resolve` merges what the user said with what the suffix implies, and refuses a suffix that
names another kind of file than the parameters write (one-shot commands). The ``focus-stack``
command uses :func:`check_image_output`; recipe validation (``flows/outputcheck.py``) the same
``main_suffixes`` and the clip engine's ``target_conflict``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from .errors import ParameterError
from .formats import SUFFIX as DEPTH_SUFFIX

# What each depth format writes: formats.py's SUFFIX (the one written), and TIFF's other spelling.
DEPTH_SUFFIXES = {f: (s, ".tiff") if s == ".tif" else (s,) for f, s in DEPTH_SUFFIX.items()}
# the depth format a bare suffix asks for (one-shot ``-o``; ``refine`` reads .npy as raw instead)
DEPTH_FOR_SUFFIX = {".png": "grayscale", ".npy": "npy", ".pfm": "pfm", ".npz": "npz", ".tif": "tiff",
                    ".tiff": "tiff", ".exr": "exr"}
IMAGE_SUFFIXES = {"png": (".png",), "jpg": (".jpg", ".jpeg")}
# what a file of each suffix is, for messages
KIND_OF = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".mpo": "stereo JPEG (MPO)", ".npy": "NumPy array",
           ".pfm": "PFM", ".npz": "NumPy archive", ".tif": "TIFF", ".tiff": "TIFF", ".exr": "OpenEXR",
           ".mp4": "MP4 video", ".webm": "WebM video", ".gif": "GIF", ".mkv": "Matroska video", ".mov": "QuickTime video",
           ".glb": "glTF binary mesh", ".obj": "OBJ mesh", ".ply": "PLY point cloud", ".html": "HTML page",
           ".htm": "HTML page", ".webp": "WebP", ".bmp": "BMP", ".avi": "AVI video", ".m4v": "MP4 video"}


def suffix_of(path: str | os.PathLike) -> str:
    """The lower-case last suffix of ``path`` (``x.png.JPG`` -> ``.jpg``); ``''`` for none."""
    s = str(path)
    if s.endswith(("/", os.sep)):
        return ""
    return Path(s).suffix.lower()


def refuse_stdout(path: str | os.PathLike, parameter: str = "-o") -> None:
    """``-o -``: the outputs are files (and their sidecars, and files beside them), never a stream."""
    if not str(path).strip():  # a clip would write its frames into the current folder
        raise ParameterError("an empty name", parameter=parameter, hint="give a file name, e.g. -o out.png")
    if str(path).strip() == "-":
        raise ParameterError("'-' (standard output) is not supported: depthcraft writes files, often several",
                             parameter=parameter, hint="give a file name, e.g. -o out.png")


def check_folder(path: str | os.PathLike, parameter: str = "-o") -> None:
    """Refuse, before any work, an output whose folder cannot be made or written: a file where
    a folder must be (``-o photo.jpg/x.png``), or a folder without write permission."""
    p = Path(os.path.abspath(str(path)))
    parent = p if str(path).endswith(("/", os.sep)) else p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ParameterError(f"{path}: {parent} is a file, not a folder", parameter=parameter)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ParameterError(f"{path}: no permission to write in {parent}", parameter=parameter)


def can_write(dest: str | os.PathLike, parameter: str = "-o", *, is_folder: bool = False) -> None:
    """Refuse, before any work, an output that cannot be written: a temporary file made and removed
    in its nearest existing folder (a folder that takes no new files, such as /proc, fails only
    there; nothing is created), and its name's length checked with room for its temporary names.
    ``is_folder``: ``dest`` is a folder to be made (``depthcraft run --out``)."""
    import tempfile

    dest = Path(os.path.abspath(str(dest)))
    folder = dest if is_folder else dest.parent
    try:
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise ParameterError(f"{dest}: {folder} is a file, not a folder", parameter=parameter)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".depthcraft-probe-")
        os.close(fd)
        os.unlink(probe)
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except OSError as e:
        raise ParameterError(f"{dest}: cannot write in {folder} ({e.strerror or e})", parameter=parameter) from None
    if any(len(os.fsencode(part)) + 32 > limit for part in dest.relative_to(folder).parts):  # (+ a .part name)
        raise ParameterError(f"{dest}: a name is too long for {folder}", parameter=parameter)


def refuse_input(path: str | os.PathLike, inputs: dict[str, str | os.PathLike | None], parameter: str = "-o") -> None:
    """An output that is one of the inputs (``bokeh p.jpg -o p.jpg``) would overwrite it: refused."""
    for what, src in inputs.items():
        if src is None or str(src) == "-":
            continue
        try:
            same = os.path.samefile(path, src)
        except OSError:
            same = os.path.abspath(str(path)) == os.path.abspath(str(src))
        if same:
            raise ParameterError(f"{path}: the same file as {what}; writing it would overwrite the input",
                                 parameter=parameter, hint="give the output its own name")


def depth_params_for_suffix(path: str | os.PathLike, *, npy: str = "npy") -> dict:
    """``{"format": ...}`` for a depth map written to ``path``; refuses what no depth format writes."""
    return {"format": depth_format_for_suffix(path, npy=npy)}


def depth_format_for_suffix(path: str | os.PathLike, *, npy: str = "npy") -> str:
    s = suffix_of(path)
    if s == ".npy":
        return npy
    if s in DEPTH_FOR_SUFFIX:
        return DEPTH_FOR_SUFFIX[s]
    hint = None
    if s in (".jpg", ".jpeg"):
        hint = "a depth map is never stored as lossy JPEG: its blocks would blur and ring the depth edges"
    raise ParameterError(f"{Path(str(path)).name}: cannot write a depth map as {repr(s) if s else 'a file without a suffix'}; "
                         "use .png, .npy, .pfm, .npz, .tif, .tiff or .exr",
                         parameter="-o", hint=hint)


def describe(suffixes: tuple[str, ...]) -> str:
    return " or ".join(suffixes)


def _flag(name: str, flags: dict[str, str] | None) -> str:
    return (flags or {}).get(name) or "--" + name.replace("_", "-")


def _value(params: Any, name: str) -> str:
    v = getattr(params, name, None)
    return "[" + ", ".join(map(str, v)) + "]" if isinstance(v, (list, tuple)) else str(v)


def _decides(spec, params: Any, name: str, allowed: tuple[str, ...]) -> bool:
    """Whether the option ``name`` (given by the user) is why ``params`` write ``allowed``:
    at its default the step would write other suffixes."""
    fields = getattr(type(params), "model_fields", {})
    if name not in fields or not hasattr(params, "model_copy"):
        return False
    try:
        return tuple(spec.main_suffixes(params.model_copy(update={name: fields[name].default}))) != allowed
    except Exception:  # a default that the step cannot take alone: not the reason
        return False


def image_format_ignored(spec, params: Any, fmt: str | None) -> tuple[str, ...] | None:
    """The suffixes ``spec`` writes with ``params`` when an explicit image ``format`` (png, jpg)
    cannot be what they hold (``layout: mpo`` is JPEGs, whatever ``format`` says), else None.
    Shared by one-shot commands (:func:`conflict`) and recipe validation."""
    if fmt not in IMAGE_SUFFIXES or spec.main_suffixes is None:
        return None
    allowed = tuple(spec.main_suffixes(params))
    if set(allowed) & set(IMAGE_SUFFIXES[fmt]) or (fmt == "jpg" and ".mpo" in allowed):
        return None
    return allowed


def conflict(spec, path: str | os.PathLike, params: Any, explicit: set[str], *,
             flags: dict[str, str] | None = None) -> str | None:
    """Why ``path`` cannot hold what ``spec`` writes with ``params`` (one clause), or None.

    ``explicit``: the parameters the user gave (named in the clause by ``flags``, default
    ``--name``). A path without a suffix never conflicts."""
    s = suffix_of(path)
    if not s or spec.main_suffixes is None:
        return None
    allowed = tuple(spec.main_suffixes(params))
    fmt = getattr(params, "format", None) if "format" in explicit and "format" in spec.output_params else None
    if s in allowed and image_format_ignored(spec, params, fmt):
        # a layout that decides the file type (mpo: JPEGs) against an explicit image format
        return (f"{Path(str(path)).name}: its suffix says {KIND_OF.get(s, s)}, but {_flag('format', flags)}"
                f"{'' if _flag('format', flags).endswith('=') else ' '}{fmt} asks for {KIND_OF[IMAGE_SUFFIXES[fmt][0]]}")
    if s in allowed:
        return None
    # name what the user gave that decides the format; none of the format options given: the
    # other options they gave (`--eye left -o x.mpo`: one eye is one image), else the defaults
    said = ([n for n in spec.output_params if n in explicit]
            or [n for n in sorted(explicit) if n not in spec.output_params and _decides(spec, params, n, allowed)]
            or list(spec.output_params))
    by = " ".join(f"{_flag(n, flags)}{'' if _flag(n, flags).endswith('=') else ' '}{_value(params, n)}" for n in said)
    kind = KIND_OF.get(allowed[0], allowed[0])
    what = KIND_OF.get(s, f"a {s} file")
    return f"{Path(str(path)).name}: its suffix says {what}, but {by} writes {kind} ({describe(allowed)})"


def resolve(spec, path: str | os.PathLike, explicit: dict, *, validate: Callable[[dict], Any],
            flags: dict[str, str] | None = None, parameter: str = "-o") -> Any:
    """The step's parameters for an output at ``path``: ``explicit`` (what the user gave), with
    the parameters the suffix implies where the user gave none; then the suffix is checked
    against what those parameters write. ``validate(values) -> params``. Raises
    :class:`ParameterError` (naming ``parameter`` and the file) for a suffix the step cannot
    write, or one that contradicts an explicit format/layout/container."""
    refuse_stdout(path, parameter)
    check_folder(path, parameter)
    values = dict(explicit)
    if spec.params_for_output is None:
        return validate(values)
    given = {n for n in spec.output_params if n in explicit}
    s = suffix_of(path)
    if s or not given:  # no suffix: the explicit format decides; none either: the step says (today's refusal)
        try:
            implied = spec.params_for_output(Path(str(path)))
        except ParameterError as e:
            if not given:
                name = Path(str(path)).name or str(path)
                if f"{name}:" in e.message:
                    raise
                raise ParameterError(f"{name}: {e.reason}", parameter=e.parameter or parameter, hint=e.hint) from None
            implied = {}  # an explicit format and a suffix this step never writes: said below
        for k, v in implied.items():
            values.setdefault(k, v)
    params = validate(values)
    why = conflict(spec, path, params, set(explicit), flags=flags)
    if why:
        name = Path(str(path))
        allowed = spec.main_suffixes(params)
        hint = (f"leave out {' and '.join(_flag(n, flags).rstrip('=') for n in given)}" if suffix_of(path) in allowed
                else f"name the file {name.stem}{allowed[0]}, or leave out "
                f"{' and '.join(_flag(n, flags).rstrip('=') for n in given)} and the suffix chooses") if given else None
        raise ParameterError(why, parameter=parameter, hint=hint)
    return params


# what write_image writes, by suffix (PIL picks the encoder from it)
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp")


def check_image_output(path: str | os.PathLike, *, depth_out: str | os.PathLike | None = None) -> str | None:
    """A command that writes one photo to ``path`` (PNG, JPEG, TIFF or WebP, by its suffix) and
    optionally a depth map to ``depth_out``: refuse what cannot be written before any work.
    Returns the depth format of ``depth_out`` (None without one)."""
    refuse_stdout(path)
    check_folder(path)
    s = suffix_of(path)
    folder = str(path).endswith(("/", os.sep)) or Path(str(path)).is_dir()
    if folder or s not in PHOTO_SUFFIXES:
        what = "a folder" if folder else repr(s) if s else "a file without a suffix"
        raise ParameterError(f"{path}: cannot write the image as {what}; use {', '.join(PHOTO_SUFFIXES)}",
                             parameter="-o")
    if depth_out is None:
        return None
    refuse_stdout(depth_out, "--depth-out")
    check_folder(depth_out, "--depth-out")
    if os.path.abspath(depth_out) == os.path.abspath(path):  # the depth map would overwrite the image
        raise ParameterError(f"{depth_out}: the same file as -o; the depth map would overwrite the image",
                             parameter="--depth-out", hint="give the depth map its own name, e.g. depth.png")
    try:
        return depth_format_for_suffix(depth_out)
    except ParameterError as e:
        raise ParameterError(e.reason, parameter="--depth-out", hint=e.hint) from None
