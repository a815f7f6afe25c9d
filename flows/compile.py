"""From a validated recipe to a plan: resolved inputs, ordered steps, and a cache key per node.

A node is one step on one image. Its cache key is the hash of everything that determines its
output and nothing else: step kind, step code version, parameters after defaults, provider
identity (when the step uses one), the input photo's content hash, a given depth map's hash,
and the keys of its upstream nodes. Nothing time- or path-dependent enters it, so the same
recipe on the same photos finds its artifacts again wherever and whenever it runs.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from depthcraft.tasks.catalog import get_step
from depthcraft.tasks.lib.depthmap import USER_KINDS
from depthcraft.tasks.lib.errors import DepthcraftError, InputError, ParameterError, RecipeError
from depthcraft.tasks.lib.images import IMAGE_SUFFIXES
from depthcraft.tasks.lib.step import StepSpec
from depthcraft.tasks.lib.store import Artifact, sha256_file, stable_hash

from .recipe import InputEntry, Recipe, RecipeSource
from .workspace import Workspace

URL_RE = re.compile(r"^https?://", re.I)


@dataclass
class ImageInput:
    name: str
    origin: str  # the path or URL the user gave
    source: Artifact | None = None
    given_depth: Artifact | None = None
    error: str | None = None  # why this input cannot be used (the run goes on with the others)
    size: tuple[int, int] | None = None  # (w, h) as shown, from the header (photos)
    working_size: tuple[int, int] | None = None  # (w, h) the steps work at (smaller with downscale)


@dataclass
class StepNode:
    step_id: str
    kind: str
    image: str
    key: str
    params: Any  # the step's pydantic params model
    provider: str
    upstream: list[str]  # step ids
    step_provider: bool = False
    requested_provider: str | None = None  # what the recipe said when it differs (``auto``)


@dataclass
class Plan:
    recipe: Recipe
    src: RecipeSource
    session_id: str
    images: list[ImageInput]
    order: list[str]  # step ids, topologically sorted
    specs: dict[str, StepSpec]
    nodes: dict[tuple[str, str], StepNode] = field(default_factory=dict)
    out_root: Path = Path(".")
    out_dirs: dict[str, Path] = field(default_factory=dict)
    resolved: dict[str, dict] = field(default_factory=dict)  # {"auto": what it resolved to, and why}
    clips: dict = field(default_factory=dict)  # image name -> segments.ClipPlan, for clip inputs
    published_by: dict = field(default_factory=dict)  # output file -> the step id that wrote it in this run

    @property
    def ok_images(self) -> list[ImageInput]:
        return [i for i in self.images if i.error is None]

    def options(self) -> dict:
        """The photo reading options every step gets: the effective pixel limit (the recipe's,
        else ``DEPTHCRAFT_MAX_PIXELS``, else 50 MP), so that every worker reads the same size."""
        ins = self.recipe.inputs
        return {"max_pixels": self.max_pixels(), "downscale": ins.downscale}

    def max_pixels(self) -> int:
        from depthcraft.tasks.lib.images import max_pixels_default

        return self.recipe.inputs.max_pixels or max_pixels_default()

    def key_options(self) -> dict:
        """The reading options in the cache key: with ``downscale`` the limit decides the size
        every step works at, so it enters the key; without, it only refuses (the recipe's own
        value, as before, so that earlier cache entries stay valid)."""
        ins = self.recipe.inputs
        given = ins.max_pixels if ins.max_pixels != self.max_pixels_default() else None  # the default written out = omitted
        return {"max_pixels": self.max_pixels() if ins.downscale else given, "downscale": ins.downscale}

    @staticmethod
    def max_pixels_default() -> int:
        from depthcraft.tasks.lib.images import max_pixels_default

        return max_pixels_default()


# -- steps -----------------------------------------------------------------------------------

def chain_text(ids: list[str], limit: int = 12) -> str:
    """``a -> b -> c`` on one readable line, however many steps: the first six, a count, the last three."""
    if len(ids) > limit:
        ids = ids[:6] + [f"... ({len(ids) - 9} more)"] + ids[-3:]
    return " -> ".join(ids)

def order_steps(recipe: Recipe, src: RecipeSource) -> list[str]:
    """Topological order of the step ids; refuses duplicates, unknown `from` and cycles."""
    ids: dict[str, int] = {}
    for i, s in enumerate(recipe.steps):
        if s.id in ids:
            raise src.error(f"duplicate step id {s.id!r} (also step {ids[s.id] + 1})", ("steps", i, "id"))
        ids[s.id] = i
    for i, s in enumerate(recipe.steps):
        for j, f in enumerate(s.from_):
            if f not in ids:
                known = ", ".join(list(ids)[:20]) + (f" ... ({len(ids)} in all)" if len(ids) > 20 else "")
                raise src.error(f"`from` names {f!r}, which is not a step id; steps: {known}",
                                ("steps", i, "from"))
            if f == s.id:
                raise src.error(f"step {s.id!r} reads from itself", ("steps", i, "from"))
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done
    # depth-first, post-order, iterative (a chain of thousands of steps must not hit the
    # recursion limit); the same order as the recursive walk: declaration order, `from` order
    for s in recipe.steps:
        if state.get(s.id):
            continue
        state[s.id] = 1
        stack = [(s.id, iter(s.from_))]
        while stack:
            sid, it = stack[-1]
            f = next(it, None)
            if f is None:
                stack.pop()
                state[sid] = 2
                order.append(sid)
            elif state.get(f) == 1:
                path = [x for x, _ in stack]
                cyc = path[path.index(f):] + [f]
                raise src.error(f"the steps form a cycle: {chain_text(cyc)}", ("steps", ids[f], "from"))
            elif not state.get(f):
                state[f] = 1
                stack.append((f, iter(recipe.steps[ids[f]].from_)))
    return order


def validate_params(recipe: Recipe, src: RecipeSource) -> dict[str, tuple[StepSpec, Any]]:
    """Each step's spec and validated parameters; errors name the recipe line and key."""
    out = {}
    for i, s in enumerate(recipe.steps):
        try:
            spec = get_step(s.uses)
        except DepthcraftError as e:
            raise src.error(e.message.replace("parameter 'uses': ", ""), ("steps", i, "uses"),
                            hint="`depthcraft steps` lists the step kinds") from None
        values = dict(s.with_)
        if "use_case" in spec.params.model_fields and "use_case" not in values and recipe.use_case:
            values["use_case"] = recipe.use_case
        try:
            params = spec.params.model_validate(values)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ("steps", i, "with") + tuple(err["loc"])
            if err["type"] == "extra_forbidden":
                known = ", ".join(sorted(spec.params.model_fields))
                raise src.error(f"unknown parameter {err['loc'][-1]!r} for step kind {s.uses!r}", loc,
                                hint=f"{s.uses} takes: {known}") from None
            raise src.error(f"{err['msg']} (got {err.get('input')!r})", loc) from None
        except ParameterError as e:  # a step's own check across parameters: the recipe line of the one it names
            key = e.parameter if e.parameter in s.with_ else None
            raise src.error(e.reason, ("steps", i, "with") + ((key,) if key else ()), hint=e.hint) from None
        if spec.needs_depth and not s.from_ and not _inputs_have_depth(recipe):
            raise src.error(f"step {s.id!r} ({s.uses}) needs a depth map: add `from: <an estimate step>`",
                            ("steps", i))
        out[s.id] = (spec, params)
    from .outputcheck import check_outputs

    check_outputs(recipe, src, out)  # an output that contradicts an explicit format
    from .recipe_inert import check_inert

    check_inert(recipe, src, out)  # a setting written that would have no effect
    return out


def _inputs_have_depth(recipe: Recipe) -> bool:
    return all(isinstance(e, InputEntry) and e.depth for e in recipe.inputs.images)


# -- inputs ----------------------------------------------------------------------------------
def _fetch_url(url: str, ws: Workspace) -> Path:
    """Download an input URL once into the workspace (bounded in size and time: :mod:`.fetch`)."""
    from .fetch import fetch_url

    return fetch_url(url, ws.downloads)


def _expand(pattern: str, base: Path, guard=None) -> list[str]:
    if URL_RE.match(pattern):
        return [pattern]
    p = Path(pattern).expanduser()
    full = p if p.is_absolute() else base / p
    if glob.has_magic(pattern):
        from .segments import clip_suffixes

        kinds = IMAGE_SUFFIXES | clip_suffixes()  # photos and clips
        hits = sorted(h for h in glob.glob(str(full), recursive=True) if Path(h).suffix.lower() in kinds)
        return guard.filter(pattern, hits) if guard is not None else hits  # never our own outputs (globguard)
    return [str(full)]


def _input_names(recipe: Recipe, base: Path, guard=None) -> list[str]:
    """The output folder name of every input, in order (see :mod:`.naming`): each depends on its
    photo alone; names that would collide get a suffix derived from their own path."""
    from .naming import assign_names

    found = []
    for entry in recipe.inputs.images:
        e = entry if isinstance(entry, InputEntry) else InputEntry(image=entry)
        hits = _expand(e.image, base, guard)
        found += [(e.name if (e.name and len(hits) == 1) else Path(h.split("?")[0]).stem, h) for h in hits]
    return assign_names(found)


def resolve_inputs(recipe: Recipe, src: RecipeSource, ws: Workspace, *, fetch: bool = True,
                   out_root: Path | None = None) -> list[ImageInput]:
    """Expand globs (leaving out the outputs and the workspace: :mod:`.globguard`), fetch URLs,
    hash every file. A bad input is kept with its ``error``."""
    from .globguard import GlobGuard

    base = src.base_dir
    out: list[ImageInput] = []
    guard = GlobGuard(recipe, Path(out_root or Path.cwd()), ws.root)
    names = iter(_input_names(recipe, base, guard))
    for i, entry in enumerate(recipe.inputs.images):
        e = entry if isinstance(entry, InputEntry) else InputEntry(image=entry)
        hits = _expand(e.image, base, guard)
        if not hits:
            raise src.error(f"no image matches {e.image!r} (relative to {base})", ("inputs", "images", i))
        for h in hits:
            item = ImageInput(name=next(names), origin=h)
            out.append(item)
            try:
                if URL_RE.match(h):
                    local = _fetch_url(h, ws) if fetch else None
                    if local is None:
                        continue
                else:
                    local = Path(h)
                    line = src.line_of(("inputs", "images", i))
                    if not local.exists():
                        raise InputError(f"no such file (recipe {src.file}:{line})", path=h)
                    if local.is_dir():
                        raise InputError(f"is a folder; use a glob such as photos/*.jpg (recipe {src.file}:{line})",
                                         path=h)
                st = local.stat()  # before hashing: a change after this shows in the size or the time
                item.source = Artifact(path=str(local.resolve()), sha256=sha256_file(local), kind=_input_kind(local),
                                       meta={"origin": h, "name": item.name, "stat": [st.st_size, st.st_mtime_ns]})
                if e.depth:
                    dp = Path(e.depth).expanduser()
                    dp = dp if dp.is_absolute() else base / dp
                    if not dp.exists():
                        raise InputError(f"no such depth file (recipe {src.file}:{src.line_of(('inputs', 'images', i, 'depth'))})",
                                         path=str(dp))
                    from depthcraft.tasks.lib.depthio import read_depth

                    read_depth(dp)  # a colour picture, a truncated or huge file: refused now, by name
                    item.given_depth = Artifact(path=str(dp.resolve()), sha256=sha256_file(dp), kind="depth",
                                                meta={"kind": USER_KINDS[e.depth_kind] if e.depth_kind else None, "source": "given",
                                                      "given_path": str(dp)})
            except InputError as err:
                item.error = str(err)
    return out


def _input_kind(path: Path) -> str:
    """``video`` for a clip (the runner cuts it into segments, see :mod:`.segments`), else ``image``."""
    from .segments import is_clip

    return "video" if is_clip(path) else "image"


# -- the plan --------------------------------------------------------------------------------
def derive_session_id(recipe: Recipe, images: list[ImageInput]) -> str:
    if recipe.session:
        return recipe.session
    digest = stable_hash({"recipe": recipe.name, "inputs": sorted(i.source.sha256 if i.source else i.origin for i in images)})
    return f"{recipe.name}-{digest[:10]}"


def resolve_provider(provider: str, resolved: dict, *, download: bool = True) -> str:
    """The concrete provider for ``provider``: ``auto`` is resolved once per plan (into ``resolved``),
    so that cache keys, task runs, the manifest and the session log all name what really runs."""
    if provider != "auto":
        return provider
    if "auto" not in resolved:
        from depthcraft.tasks.providers.auto import resolve

        from .fetch import once_per_run

        # once per run: the flow's plan says what the command line's resolution did (downloaded
        # the model), not what a second look finds (the model in the cache)
        resolved["auto"] = dict(once_per_run(("provider auto", download), lambda: resolve(download=download).record()))
    return resolved["auto"]["provider"]


def provider_identity(provider: str, mode: str, cache: dict) -> dict:
    if provider == "auto":  # not resolved (no step of the plan uses a provider): nothing ran with it
        return {"provider": "auto", "mode": mode}
    if provider not in cache:
        from depthcraft.tasks.providers import get_provider

        cache[provider] = get_provider(provider).identity()
    return {**cache[provider], "mode": mode}


def output_dir(recipe: Recipe, root: Path, image: str, session: str, *, src: RecipeSource | None = None,
               origin: str | None = None) -> Path:
    """The input's output folder under ``root``; a folder that resolves outside it (a symbolic
    link on the way) is the recipe's ``output`` error, naming the recipe file and line (``src``)
    and the input (``origin``)."""
    rel = recipe.output.format(recipe=recipe.name, image=image, session=session)
    d = (root / rel).resolve()
    if root.resolve() not in (d, *d.parents):
        what = f"the output folder of input {origin} ({rel})" if origin else f"output folder {rel}"
        msg = f"{what} is {d}, which escapes the output root {root} (a symbolic link on the way?)"
        if src is not None:
            raise src.error(msg, ("output",), hint="remove the link, or choose another output root with --out")
        raise RecipeError(msg, key="output")
    return d


def compile_plan(recipe: Recipe, src: RecipeSource, ws: Workspace, *, out_root: str | Path | None = None,
                 fetch: bool = True, pull_models: bool | None = None) -> Plan:
    """``pull_models`` (default: ``fetch``): may ``provider: auto`` download a model now."""
    order = order_steps(recipe, src)
    validated = validate_params(recipe, src)
    images = resolve_inputs(recipe, src, ws, fetch=fetch, out_root=out_root)
    plan = Plan(recipe=recipe, src=src, session_id=derive_session_id(recipe, images), images=images, order=order,
                specs={sid: validated[sid][0] for sid in order}, out_root=Path(out_root or Path.cwd()).resolve())
    decls = {s.id: s for s in recipe.steps}
    ident_cache: dict = {}
    options = plan.key_options()
    uses_provider = any(validated[s.id][0].uses_provider or s.provider for s in recipe.steps)
    for img in images:
        plan.out_dirs[img.name] = output_dir(recipe, plan.out_root, img.name, plan.session_id, src=src,
                                             origin=img.origin)
    from .outfolders import check_distinct

    check_distinct(recipe, src, plan.out_dirs)  # two inputs in one folder would overwrite each other

    for img in images:
        if img.source is None:
            continue
        for sid in order:
            spec, params = validated[sid]
            d = decls[sid]
            requested = d.provider or recipe.provider
            provider = requested
            if uses_provider:  # resolved for every node, so that turns and tags name what ran
                provider = resolve_provider(requested, plan.resolved,
                                            download=fetch if pull_models is None else pull_models)
            body = {
                "step": spec.kind, "version": spec.version, "params": params.model_dump(mode="json"),
                "image": img.source.sha256, "upstream": [plan.nodes[(u, img.name)].key for u in d.from_],
                "options": options,
            }
            from depthcraft.tasks.lib.images import decode_revision

            if decode_revision(img.source.path):  # (the photo decodes otherwise than it once did)
                body["decode"] = decode_revision(img.source.path)
            if spec.key_extra is not None:  # names the output embeds (the viewer's default title)
                body["extra"] = spec.key_extra(params, img.name)
            if img.given_depth is not None:
                body["given_depth"] = [img.given_depth.sha256, img.given_depth.meta.get("kind")]
            if spec.uses_provider or d.provider:
                try:
                    body["provider"] = provider_identity(provider, recipe.mode, ident_cache)
                except DepthcraftError as e:
                    i = recipe.steps.index(d)
                    raise src.error(str(e), ("steps", i, "provider") if d.provider else ("provider",)) from None
                body["answers"] = recipe.answers
                from depthcraft.tasks.providers.options import key_options

                body["provider_options"] = key_options(provider, recipe.provider_options)  # a default given = omitted
                if d.provider and spec.kind == "refine" and body["provider_options"]:
                    # (a refine turn never got the options, though keyed, before: not what they make now)
                    body["provider_options_read"] = True
            plan.nodes[(sid, img.name)] = StepNode(step_id=sid, kind=spec.kind, image=img.name, key=stable_hash(body),
                                                   params=params, provider=provider, upstream=list(d.from_),
                                                   step_provider=bool(d.provider),
                                                   requested_provider=requested if requested != provider else None)
    working_sizes(plan)
    if any(i.source is not None and i.source.kind == "video" for i in images):
        from .outputcheck import check_clip_defaults
        from .segments import expand_clips

        check_clip_defaults(recipe, src, plan.specs, {sid: validated[sid][1] for sid in order})
        from .recipe_inert import check_clip_inert

        check_clip_inert(recipe, src, validated, images)  # photo-only settings when every input is a clip

        expand_clips(plan, ws)
    return plan


def working_sizes(plan: Plan) -> None:
    """Each photo's size and the size its steps work at (headers only), for the manifest; with
    ``downscale`` the same one-line notice the one-shot commands give, said at plan time so that
    a run served from the cache says it too."""
    from depthcraft.tasks.lib.images import header_size, within_decode_budget, working_size
    from depthcraft.tasks.lib.notices import notice

    limit, downscale = plan.max_pixels(), plan.recipe.inputs.downscale
    for img in plan.images:
        if img.source is None or img.source.kind != "image":
            continue
        img.size = header_size(img.source.path)
        if img.size is None:
            continue
        w, h = img.size
        if w * h <= limit:
            img.working_size = img.size
        elif downscale and within_decode_budget(img.source.path, limit):  # else its step refuses it, by name
            img.working_size = working_size(w, h, limit)
            nw, nh = img.working_size
            # the text decode_image says (read_image names the same resolved path): said once
            notice(f"{img.source.path}: downscaled from {w}x{h} to {nw}x{nh} to fit {limit / 1e6:g} MP (--downscale)")
