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
    # an empty provider (`provider: ""`, `--set provider=`: an unset shell variable) ran as auto,
    # or for a step as the recipe's, and the manifest recorded provider "" (as `--provider ''`,
    # refused by flows/cli_paths.py)
    empty = [("provider",)] if not recipe.provider.strip() else []
    empty += [("steps", i, "provider") for i, s in enumerate(recipe.steps) if s.provider is not None
              and not s.provider.strip()]
    if empty:
        raise src.error("an empty provider (an unset shell variable?)", empty[0],
                        hint="give a provider (auto, classic, onnx:NAME, eachsense), or leave the key out for "
                             + ("auto" if len(empty[0]) == 1 else "the recipe's"))
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
    from depthcraft.tasks.providers.options import check_options

    bad = check_options(providers, recipe.provider_options)
    if bad:
        raise src.error(bad[1], ("provider_options", bad[0]),
                        hint=f"fix or leave out {bad[0]}")
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


# Step settings that the clip engine (depthcraft.tasks.clips: process_clip_segment, each step's
# clip_frame, the clip writers) never reads, with why; each checked against that code path.
# Not here on purpose: parallax's pix_fmt and container (on a clip of odd width or height they
# decide whether the frame is trimmed to even sides or padded), and a setting a step reads on
# clips too. Refused only when every input of the recipe is a clip: with photos among them the
# setting is in force for the photos.
CLIP_INERT = {
    "stereo": {"interpolation": "each eye of a clip is a row warp with linear sampling",
               "quality": "a clip's frames are written at the clip writer's own quality",
               "mask": "a clip writes no mask of filled-in pixels"},
    "parallax": {"duration": "the video has the clip's length", "fps": "the video has the clip's frame rate",
                 "crf": "a clip's videos are encoded with the clip writer's settings",
                 "preset": "a clip's videos are encoded with the clip writer's settings",
                 "supersample": "each frame of a clip renders at the output size",
                 "mask": "a clip writes no mask of filled-in pixels"},
    "bokeh": {"quality": "a clip's frames are written at the clip writer's own quality"},
    "estimate": {"use_case": "a clip's frames are estimated with the provider's general request",
                 "message": "a clip's frames are estimated with the provider's general request",
                 "output": "a clip's depth is the stable nearness (0..1)"},
    "refine": {"message": "a clip's frames are refined locally"},
}
# the metric scale of a depth step: a clip's depth frames are written without it
METRIC_KINDS = ("estimate", "refine", "export")


def _all_clips(images) -> bool:
    """Every input is a clip. An input whose kind is not known (a URL not fetched yet, or one that
    failed to resolve: a photo path with a typo) makes it unknown: False. A failed input is still
    one the user means to run with the setting: refusing the setting hid the input's own error
    behind a line saying every input is a clip, and its advice (leave the setting out) was wrong
    once the input is fixed."""
    kinds = []
    for img in images:
        if img.source is None:
            return False
        kinds.append(img.source.kind)
    return bool(kinds) and all(k == "video" for k in kinds)


def check_clip_inert(recipe: Recipe, src: RecipeSource, validated: dict[str, tuple[StepSpec, Any]],
                     images) -> None:
    """Raise the RecipeError of the first step setting (a key of ``with:``) that no clip reads,
    when every input of the recipe is a clip (:data:`CLIP_INERT`, and ``metric`` on depth steps,
    ``format`` of stereo and bokeh when the clip is written as a video, stereo's ``edge_dilation``
    other than 0 and ``scale``); one-shot commands refuse the same for a clip
    (:mod:`.oneshot_inert`)."""
    if not _all_clips(images):
        return
    for i, s in enumerate(recipe.steps):
        spec, params = validated[s.id]
        given = inert.given_names(s.with_)

        def refuse(name: str, why: str, hint: str | None = None, verb: str = "has no effect on"):
            value = inert.value_of(params, name)
            raise src.error(f"{inert.say_key(name, value)} {verb} a clip (every input of this recipe is "
                            f"one): {why}", ("steps", i, "with", *name.split(".")),
                            hint=hint or f"leave out {name}")

        for name, why in CLIP_INERT.get(spec.kind, {}).items():
            if name in given:
                refuse(name, why)
        if spec.kind == "refine" and s.provider:  # (a clip's refine runs clip_frame: the local refinement)
            raise src.error(f"provider {s.provider} has no effect on a refine step of a clip (every input of this "
                            "recipe is one): a clip's frames are refined locally, frame by frame",
                            ("steps", i, "provider"), hint="leave out the step's provider")
        if spec.kind in METRIC_KINDS:
            key = "formats" if spec.kind == "export" else "format"
            fmts = list(params.formats) if spec.kind == "export" else [params.format]
            metric = [f for f in fmts if f in inert.METRIC_FORMATS]
            if metric:  # (every frame failed: "metric depth needs near and far", given or not)
                refuse(key, f"{metric[0]} needs a metric scale, and a clip's depth frames are the stable nearness "
                            "(0..1), written without one", hint="write a relative format (grayscale, png16, npy...)",
                       verb="cannot be written for")
            for name in sorted(given):
                if name.startswith("metric."):
                    refuse(name, "a clip's depth frames are the stable nearness (0..1), written without a metric "
                                 "scale", hint="leave out metric")
        if spec.kind == "stereo":
            if "scale" in given and params.scale is not None:
                refuse("scale", "exact mode (scale) needs a disparity map; a clip's depth is estimated nearness",
                       hint="leave out scale; divergence and convergence set a clip's 3D", verb="cannot be used on")
            if "edge_dilation" in given and params.edge_dilation:  # (0 is read: the growth off)
                refuse("edge_dilation", "a clip's near objects grow with the divergence; only 0 (off) is read",
                       hint="leave out edge_dilation, or 0 to turn the growth off")
        if spec.kind in ("stereo", "bokeh") and "format" in given and s.clip_output != "folder":
            refuse("format", f"a clip's {spec.kind} frames are encoded into a video (clip_output "
                             f"{s.clip_output or 'mp4, the default'}); format is the file type of photos and of "
                             "frame folders", hint="leave out format, or write frame files with clip_output: folder")
