"""Recipe outputs whose name or type contradicts a step's explicit format, refused by
``validate`` and ``run`` before any step runs (with the recipe's file, line and key).

A recipe names files ``<step id><suffix>`` with the suffix of what the step writes, so a photo's
file always is what its suffix says; two things can still contradict a format:

- ``clip_output`` (a clip's video type) against an explicit ``format``, e.g. ``format: png16``
  with ``clip_output: mp4`` (8-bit H.264) (the rules are the clip engine's,
  :func:`depthcraft.tasks.clips.target_conflict`);
- a step id that ends in a file suffix the step does not write, e.g. ``id: depth.jpg`` on an
  estimate step, which would publish ``depth.jpg.png``.
"""

from __future__ import annotations

from typing import Any

from depthcraft.tasks.lib.outputs import KIND_OF, describe, image_format_ignored, suffix_of
from depthcraft.tasks.lib.step import StepSpec

from .recipe import Recipe, RecipeSource


_HINT = "clip_output: folder writes one file per frame in any format; mkv holds 16 bits"


def check_outputs(recipe: Recipe, src: RecipeSource, validated: dict[str, tuple[StepSpec, Any]]) -> None:
    """Raise the RecipeError of the first step whose output contradicts its parameters."""
    from depthcraft.tasks.clips import target_conflict

    for i, s in enumerate(recipe.steps):
        spec, params = validated[s.id]
        explicit = set(s.with_)
        if s.clip_output:
            target = "folder" if s.clip_output == "folder" else "." + s.clip_output
            bad = target_conflict(spec.kind, target, params, explicit, images=False)
            if bad:
                raise src.error(f"clip_output {s.clip_output} against with.{bad[0]}: {bad[0]} {bad[1]}",
                                ("steps", i, "clip_output"), hint=_HINT)
        _check_id(spec, params, s, i, src)
        _check_image_format(spec, params, s, i, src)


def check_clip_defaults(recipe: Recipe, src: RecipeSource, specs: dict[str, StepSpec], params: dict[str, Any]) -> None:
    """Recipes with a clip among their inputs: a step without ``clip_output`` writes the engine's
    default type (``default_suffix``: 8-bit ``.mp4``, 16-bit ``.mkv``), which must hold its
    explicit format too (``format: inverse`` has no video form: ``clip_output: folder``)."""
    from depthcraft.tasks.clips import default_suffix, target_conflict

    for i, s in enumerate(recipe.steps):
        if s.clip_output or s.id not in specs:
            continue
        spec, p = specs[s.id], params[s.id]
        bad = target_conflict(spec.kind, default_suffix(spec.kind, p), p, set(s.with_), images=False)
        if bad:
            raise src.error(f"on a clip input: {bad[0]} {bad[1]}", ("steps", i, "with", bad[0]),
                            hint=_HINT if bad[0] != "layout" else None)


def _check_id(spec: StepSpec, params: Any, s, i: int, src: RecipeSource) -> None:
    """``id: depth.jpg`` on a step that writes PNG would publish ``depth.jpg.png``: refused."""
    sfx = suffix_of(s.id)
    if sfx not in KIND_OF or spec.main_suffixes is None:
        return
    allowed = tuple(spec.main_suffixes(params))
    if sfx not in allowed:
        raise src.error(f"step id {s.id!r} ends in {sfx}, but this {spec.kind} step writes "
                        f"{KIND_OF.get(allowed[0], allowed[0])} ({describe(allowed)}): its file would be "
                        f"{s.id}{allowed[0]}", ("steps", i, "id"),
                        hint="leave the suffix out of the id; the step's format chooses it")


def _check_image_format(spec: StepSpec, params: Any, s, i: int, src: RecipeSource) -> None:
    """``layout: mpo`` (a stereo JPEG) with ``format: png``: the format would be ignored, refused."""
    fmt = s.with_.get("format") if "format" in spec.output_params else None
    allowed = image_format_ignored(spec, params, fmt)
    if allowed:
        raise src.error(f"format {fmt} against what this {spec.kind} step writes: "
                        f"{KIND_OF.get(allowed[0], allowed[0])} ({describe(allowed)})", ("steps", i, "with", "format"),
                        hint="leave out format, or change the option that decides the file type (e.g. layout)")
