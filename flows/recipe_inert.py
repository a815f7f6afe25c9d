"""Recipe settings that would have no effect, refused by ``validate`` and ``run`` with the
recipe's file, line and key (the one-shot commands' counterpart: :mod:`.oneshot_inert`).

A parameter written in a step's ``with:`` that the step's other parameters (written or
default) make useless is refused (the rules are the steps' own, :mod:`depthcraft.tasks.lib.inert`),
as are settings that the recipe's provider or inputs make useless: ``message`` for a provider
that takes no message, the local refinement's settings on a step that a provider refines, a
step ``provider`` on a step that asks no provider, ``depth_kind`` on an input without ``depth``.
Recipe-level defaults that do not apply to a step (``use_case`` for a local provider) are not news.
"""

from __future__ import annotations

from typing import Any

from depthcraft.tasks.lib import inert
from depthcraft.tasks.lib.step import StepSpec

from .recipe import InputEntry, Recipe, RecipeSource


def check_inert(recipe: Recipe, src: RecipeSource, validated: dict[str, tuple[StepSpec, Any]]) -> None:
    """Raise the RecipeError of the first setting that would have no effect."""
    providers = {recipe.provider.split(":")[0]} | {s.provider.split(":")[0] for s in recipe.steps if s.provider}
    data = src.data if isinstance(src.data, dict) else {}
    if "eachsense" not in providers:  # settings only the eachsense provider reads
        named = " and ".join(sorted(providers))
        if "mode" in data and recipe.mode != "max":
            raise src.error(f"mode {recipe.mode} has no effect with provider {named}: it is the eachsense service's "
                            "quality", ("mode",), hint="leave out mode, or use provider: eachsense")
        if recipe.answers:
            raise src.error(f"answers have no effect with provider {named}: they answer the eachsense service's "
                            "questions", ("answers",), hint="leave out answers, or use provider: eachsense")
    if recipe.provider_options and providers == {"classic"}:
        raise src.error("provider_options have no effect with provider classic: they are settings of the onnx "
                        "(upsample) and eachsense providers", ("provider_options",),
                        hint="leave out provider_options, or use an onnx or eachsense provider")
    for i, e in enumerate(recipe.inputs.images):
        if isinstance(e, InputEntry) and e.depth_kind is not None and not e.depth:
            raise src.error(f"depth_kind {e.depth_kind} has no effect without depth: it says what a given depth "
                            "map's values mean", ("inputs", "images", i, "depth_kind"),
                            hint="add depth: FILE to the entry, or leave out depth_kind")
    for i, s in enumerate(recipe.steps):
        spec, params = validated[s.id]
        given = inert.given_names(s.with_)
        found = inert.find(spec, params, given)
        if found:
            f = found[0]
            raise src.error(inert.message(f, params, given), ("steps", i, "with", *f.param.split(".")),
                            hint=inert.hint(f))
        if s.provider and not spec.uses_provider:
            raise src.error(f"provider {s.provider} has no effect on a {spec.kind} step: it asks no provider "
                            "(its depth comes from `from`)", ("steps", i, "provider"),
                            hint="give the provider to the estimate (or refine) step it reads from")
        provider = s.provider or recipe.provider
        delegated = spec.kind == "refine" and bool(s.provider)  # the step's provider refines (tasks/refine.py)
        if "message" in given and (provider.split(":")[0] != "eachsense" or spec.kind == "refine" and not delegated):
            why = (f"with provider {provider}: a message is the request sent to the eachsense provider"
                   if provider.split(":")[0] != "eachsense" else
                   "without the step's own provider: the refinement is local (a message goes to a provider "
                   "that refines, given as the step's provider)")
            raise src.error(f"message has no effect {why}", ("steps", i, "with", "message"),
                            hint="leave out message, or give the step provider: eachsense")
        if delegated:
            from depthcraft.tasks.refine import LOCAL

            for name in LOCAL:
                if name in given:
                    raise src.error(f"{name} has no effect with the step's provider {s.provider}: the provider refines "
                                    "the map; this sets the local edge refinement", ("steps", i, "with", name),
                                    hint=f"leave out {name}, or the step's provider")
