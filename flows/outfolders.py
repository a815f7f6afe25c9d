"""One output folder per input: a template that maps several inputs to one folder is refused.

Every input's files are named by step (``depth.png``, ``video.mp4``), not by input, so two
inputs sharing a folder overwrite each other's files while the manifest lists both, each with
its own sha256: a manifest that lies. ``output: out/{recipe}/`` with two photos is such a
template; so is ``out/{session}/``. The recipe line of ``output`` is named, before any work.
"""

from __future__ import annotations

from pathlib import Path


def check_distinct(recipe, src, out_dirs: dict[str, Path]) -> None:
    """Raise the recipe error naming ``output`` when two inputs get the same folder, or one
    input's folder holds another's (its files would land among the other's)."""
    seen: dict[Path, str] = {}
    for name, d in out_dirs.items():
        if d in seen:
            raise src.error(f"output template {recipe.output!r} maps the inputs {seen[d]!r} and {name!r} "
                            f"to one folder {d}, where each would overwrite the other's files",
                            ("output",), hint="put {image} in the output template, e.g. out/{recipe}/{image}/")
        seen[d] = name
    for b, name in seen.items():  # each folder's parents looked up: linear in the number of inputs
        for a in b.parents:
            if a in seen:
                raise src.error(f"output template {recipe.output!r} puts the folder of input {name!r} ({b}) "
                                f"inside that of {seen[a]!r} ({a})", ("output",),
                                hint="put {image} in the output template, e.g. out/{recipe}/{image}/")
