"""The recipe language: YAML validated by pydantic models, with errors that name file, line and key.

A recipe describes a production once::

    version: 1
    name: portrait-parallax
    provider: classic
    inputs:
      images: ["photos/*.jpg"]
    steps:
      - {id: depth, uses: estimate}
      - {id: video, uses: parallax, from: depth, with: {motion: dolly}}
    output: out/{recipe}/{image}/

:func:`load_recipe` parses and validates the structure; step parameters are validated against
each step's own model by :mod:`depthcraft.flows.compile`, which also checks the DAG.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from depthcraft.tasks.lib.errors import RecipeError

NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class InputEntry(_Strict):
    image: str = Field(description="path, glob or http(s) URL of the photo")
    depth: str | None = Field(None, description="a depth map already made for this photo")
    depth_kind: Literal["disparity", "depth", "metric", "relative"] | None = Field(
        None, description="what the depth file's values mean: disparity/relative (larger = nearer), "
        "depth/metric (larger = farther); default: what a depthcraft file records, else disparity")
    name: str | None = Field(None, description="name used in output paths (default: the file's stem)")


class Inputs(_Strict):
    images: list[str | InputEntry] = Field(min_length=1, description="paths, globs, URLs, or entries")
    max_pixels: int | None = Field(None, gt=0, description="refuse photos larger than this (default 50 MP)")
    downscale: bool = Field(False, description="downscale photos over max_pixels instead of refusing them")
    segment_seconds: float | None = Field(None, gt=0, description="clips: one task run per segment of about this "
                                          "many seconds, cut at scene cuts (default 10)")


class StepDecl(_Strict):
    id: str = Field(pattern=NAME_RE, description="the step's name, used by `from` and in output files")
    uses: str = Field(description="the step kind (`depthcraft steps` lists them)")
    from_: list[str] = Field(default_factory=list, alias="from", description="step ids this step reads")
    with_: dict[str, Any] = Field(default_factory=dict, alias="with", description="the step's parameters")
    provider: str | None = Field(None, description="a provider for this step only (e.g. eachsense refine)")
    clip_output: Literal["folder", "mp4", "mov", "m4v", "mkv", "webm", "avi", "gif"] | None = Field(
        None, description="clips: what this step writes per clip: `folder` (one file per frame, 000000.png..., "
                          "RGBA for layers) or a video type; default: the step's own (layers: folder, else a video)")

    @field_validator("from_", mode="before")
    @classmethod
    def _one_or_many(cls, v):
        if v is None:
            return []
        return [v] if isinstance(v, str) else v

    @field_validator("with_", mode="before")
    @classmethod
    def _none_is_empty(cls, v):
        return {} if v is None else v


class DaskSettings(_Strict):
    address: str | None = Field(None, description="tcp://host:port of an existing Dask scheduler")
    workers: int = Field(2, ge=1, description="local cluster workers")
    threads_per_worker: int = Field(1, ge=1, description="threads per local worker")


class Recipe(_Strict):
    version: Literal[1] = 1
    name: str = Field(pattern=NAME_RE, description="the recipe's name ({recipe} in output paths)")
    description: str | None = None
    session: str | None = Field(None, pattern=NAME_RE, description="session id to start or continue")
    provider: str = Field("auto", description="auto (the best model in the cache, else downloads Depth Anything V2 "
                          "Small once, else classic) | classic | onnx:<model or path> | eachsense")
    mode: Literal["max", "eco"] = Field("max", description="provider quality: max or eco")
    use_case: str | None = Field(None, description="default use case for estimate steps")
    answers: dict[str, str] = Field(default_factory=dict, description="answers to a provider's clarification questions")
    provider_options: dict[str, Any] = Field(default_factory=dict,
                                             description="provider settings, e.g. {upsample: bilinear} for onnx")
    inputs: Inputs
    steps: list[StepDecl] = Field(min_length=1)
    output: str = Field("out/{recipe}/{image}/", description="output folder template: {recipe} {image} {session}")
    schedule: dict[str, Any] | None = Field(None, description="cron/interval/rrule for `depthcraft deploy`")
    task_runner: Literal["threads", "dask"] = Field("threads", description="how tasks run: threads or dask")
    dask: DaskSettings | None = None
    concurrency: dict[str, Annotated[int, Field(ge=1)]] = Field(default_factory=dict, description="tag -> max concurrent task runs")

    @field_validator("answers", "provider_options", "concurrency", mode="before")
    @classmethod
    def _none_is_empty(cls, v):
        return {} if v is None else v  # (a mapping whose entries are all commented out reads as null)

    @field_validator("output")
    @classmethod
    def _template(cls, v: str):
        if Path(v).is_absolute() or v.startswith("~"):
            raise ValueError("the output template must be relative (it is resolved under the output root)")
        parts = [p for p in re.split(r"[\\/]+", v) if p]
        if any(p == ".." for p in parts):
            raise ValueError("the output template must not leave the output root ('..')")
        for var in re.findall(r"{([^}]*)}", v):
            if var not in ("recipe", "image", "session"):
                raise ValueError(f"unknown variable {{{var}}} in the output template; use {{recipe}}, {{image}}, {{session}}")
        return v


@dataclass
class RecipeSource:
    """A recipe's text, where it came from, and the YAML node tree (for line numbers)."""

    text: str
    file: str = "<recipe>"
    data: Any = None
    root: Any = None  # yaml node tree
    overrides: list[str] = field(default_factory=list)

    @property
    def base_dir(self) -> Path:
        return Path(self.file).resolve().parent if self.file != "<recipe>" else Path.cwd()

    def line_of(self, loc: tuple | list) -> int | None:
        """1-based line of the YAML node at ``loc`` (keys and list indices), or of its nearest parent."""
        node, line = self.root, None
        if node is not None:
            line = node.start_mark.line + 1
        for part in loc:
            if node is None:
                break
            if isinstance(node, yaml.MappingNode):
                nxt = None
                for k, v in node.value:
                    if k.value == part:
                        nxt, line = v, k.start_mark.line + 1
                        break
                node = nxt
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                break
        return line

    def error(self, message: str, loc: tuple | list = (), hint: str | None = None) -> RecipeError:
        key = ".".join(str(p) for p in loc) or None
        return RecipeError(message, file=self.file, line=self.line_of(loc), key=key, hint=hint)


def parse_source(text: str, file: str = "<recipe>") -> RecipeSource:
    from .yamlsafe import YamlDuplicateKeyError, YamlLimitError, load

    src = RecipeSource(text=text, file=file)
    try:
        src.root, src.data = load(text)  # bounded: no alias bomb, no nesting hundreds deep
    except YamlLimitError as e:
        raise RecipeError(e.message, file=file, line=e.line, key=e.key,
                          hint="the limits are in docs/failures-inputs.md") from None
    except YamlDuplicateKeyError as e:
        raise RecipeError(e.message, file=file, line=e.line, key=e.key) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        raise RecipeError(f"malformed YAML: {e.problem or e}", file=file, line=line) from None
    except yaml.YAMLError as e:
        raise RecipeError(f"malformed YAML: {e}", file=file) from None
    if not isinstance(src.data, dict):
        raise RecipeError("a recipe must be a YAML mapping (version, name, inputs, steps...)", file=file, line=1)
    return src


def _set_path(data: dict, dotted: str, value: Any, spec: str) -> None:
    parts = dotted.split(".")
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            # steps.<id> picks the step with that id; a number picks by position
            match = next((s for s in node if isinstance(s, dict) and s.get("id") == part), None)
            if match is None and part.isdigit() and int(part) < len(node):
                match = node[int(part)]
            if match is None:
                raise RecipeError(f"--set {spec}: no step with id {part!r}", key=dotted)
            if last:
                raise RecipeError(f"--set {spec}: cannot replace a whole step", key=dotted)
            node = match
            continue
        if not isinstance(node, dict):
            raise RecipeError(f"--set {spec}: {'.'.join(parts[:i])} is not a mapping", key=dotted)
        if last:
            node[part] = value
        else:
            key = {"with": "with"}.get(part, part)
            if node.get(key) is None:
                node[key] = {}
            node = node[key]


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key.path=value`` overrides (values parsed as YAML: 6 -> int, true -> bool)."""
    for spec in overrides:
        if "=" not in spec:
            raise RecipeError(f"--set {spec!r}: expected KEY=VALUE, e.g. steps.video.with.duration=6", key=spec)
        dotted, raw = spec.split("=", 1)
        from .yamlsafe import YamlDuplicateKeyError, YamlLimitError, safe_value

        try:
            value = safe_value(raw) if raw != "" else ""
        except (YamlDuplicateKeyError, YamlLimitError) as e:  # (valid YAML, refused: not a plain string either)
            said = spec if len(spec) <= 80 else f"{spec[:60]}... ({len(spec)} characters)"  # one readable line
            raise RecipeError(f"--set {said!r}: {e.message}", key=dotted.strip()) from None
        except (yaml.YAMLError, ValueError):
            value = raw
        if isinstance(value, dict) and ":" not in raw:  # `{image}`: a template, not a mapping of one key
            value = raw.strip()
        _set_path(data, dotted.strip(), value, spec)
    return data


def validate_recipe(src: RecipeSource) -> Recipe:
    try:
        return Recipe.model_validate(src.data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple("from" if p == "from_" else "with" if p == "with_" else p for p in err["loc"])
        # a union's branch name in loc (e.g. 'str', 'InputEntry') is not a key: drop it
        loc = tuple(p for p in loc if not (isinstance(p, str) and p[:1].isupper() or p in ("str", "list[str]")))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = f"unknown key {loc[-1]!r}"
            loc_parent = loc[:-1]
            known = _known_keys(loc_parent)
            return_hint = f"known keys here: {', '.join(known)}" if known else None
            raise src.error(msg, loc, hint=return_hint) from None
        if err["type"] == "missing":
            raise src.error(f"missing required key {loc[-1]!r}", loc[:-1] or loc) from None
        raise src.error(msg, loc) from None


def _known_keys(loc: tuple) -> list[str]:
    model: Any = Recipe
    for p in loc:
        if isinstance(p, int):
            continue
        f = model.model_fields.get(p) or next((f for f in model.model_fields.values() if f.alias == p), None)
        if f is None:
            return []
        ann = f.annotation
        inner = getattr(ann, "__args__", None)
        cands = [ann] + list(inner or [])
        for c in cands:
            for cc in [c] + list(getattr(c, "__args__", None) or []):
                if isinstance(cc, type) and issubclass(cc, BaseModel):
                    model = cc
                    break
    return sorted((f.alias or n) for n, f in model.model_fields.items())


def load_recipe(path_or_text: str | Path, *, overrides: list[str] | None = None, text: str | None = None) -> tuple[Recipe, RecipeSource]:
    """Read, parse, override and validate a recipe. Returns the model and its source."""
    if text is None:
        p = Path(path_or_text)
        if not p.exists():
            raise RecipeError("no such recipe file", file=str(p))
        try:
            if p.stat().st_size > 10_000_000:
                raise RecipeError(f"is {p.stat().st_size:,} bytes; a recipe may have at most 10,000,000", file=str(p))
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise RecipeError(f"cannot read recipe ({e})", file=str(p)) from None
        file = str(p)
    else:
        file = str(path_or_text) if path_or_text else "<recipe>"
    src = parse_source(text, file)
    src.overrides = list(overrides or [])
    if src.overrides:
        try:
            apply_overrides(src.data, src.overrides)
        except RecipeError as e:  # (said of the recipe it was given for, not of "<recipe>")
            if e.file is not None:
                raise
            raise RecipeError(e.reason, file=file, key=e.key, hint=e.hint) from None
    return validate_recipe(src), src
