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

from depthcraft.tasks.lib.outputs import KIND_OF, describe, suffix_of
from depthcraft.tasks.lib.step import StepSpec

from .recipe import Recipe, RecipeSource


def check_outputs(recipe: Recipe, src: RecipeSource, validated: dict[str, tuple[StepSpec, Any]]) -> None:
    """Raise the RecipeError of the first step whose output contradicts its parameters."""
    from depthcraft.tasks.clips import target_conflict

    for i, s in enumerate(recipe.steps):
        spec, params = validated[s.id]
        explicit = set(s.with_)
        if s.clip_output:
            target = "folder" if s.clip_output == "folder" else "." + s.clip_output
            why = target_conflict(spec.kind, target, params, explicit, images=False)
            if why:
                raise src.error(f"clip_output {s.clip_output}: {why}", ("steps", i, "clip_output"))
        sfx = suffix_of(s.id)
        if sfx in KIND_OF and spec.main_suffixes is not None:
            allowed = tuple(spec.main_suffixes(params))
            if sfx not in allowed:
                raise src.error(f"step id {s.id!r} ends in {sfx}, but this {spec.kind} step writes "
                                f"{KIND_OF.get(allowed[0], allowed[0])} ({describe(allowed)}): its file would be "
                                f"{s.id}{allowed[0]}", ("steps", i, "id"),
                                hint="leave the suffix out of the id; the step's format chooses it")
