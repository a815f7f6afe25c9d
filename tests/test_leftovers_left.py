"""Defects found by hostile testers, each with the test that failed before its fix."""

from __future__ import annotations

import pytest

from conftest import REPO, run_cli

PHOTO = REPO / "recipes" / "photos" / "coffee.jpg"


def _recipe(tmp_path, text: str | None = None, name: str = "r.yaml"):
    p = tmp_path / name
    p.write_text(text or (f"version: 1\nname: t\ninputs: {{images: ['{PHOTO}']}}\n"
                          "steps:\n  - {id: depth, uses: estimate}\n"))
    return p


def _one_line_error(r, *needles):
    # (provider auto says once which provider it is: a line of its own, not of the error)
    lines = [ln for ln in r.stderr.strip().splitlines() if not ln.startswith(("auto: ", "notice: "))]
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    err = lines[0]
    for n in needles:
        assert n in err, (n, err)
    return err


# -- 1. an empty string for a path-valued option is refused, naming the option ----------------
@pytest.mark.parametrize("argv, option", [
    (["--workspace", "", "validate", "{recipe}"], "--workspace"),
    (["--workspace", " ", "validate", "{recipe}"], "--workspace"),
    (["validate", "{recipe}", "--out", ""], "--out"),
    (["run", "{recipe}", "--out", ""], "--out"),
    (["validate", ""], "RECIPE"),
    (["reproduce", ""], "MANIFEST"),
    (["reproduce", "{recipe}", "--out", ""], "--out"),
    (["deploy", "{recipe}", "--out", ""], "--out"),
    (["serve", "{recipe}", ""], "RECIPE"),
    (["runs", ""], "RECIPE"),
    (["estimate", "", "-o", "{tmp}/d.png"], "IMAGE"),
    (["estimate", str(PHOTO), "-o", ""], "-o"),
    (["stereo", str(PHOTO), "--depth", "", "-o", "{tmp}/s.png"], "--depth"),
    (["focus-stack", str(PHOTO), "", "-o", "{tmp}/a.png"], "IMAGE"),
    (["focus-stack", str(PHOTO), str(PHOTO), "-o", "{tmp}/a.png", "--depth-out", ""], "--depth-out"),
    # names and addresses: as silently "not given" (auto, no work pool, threads, every model)
    (["estimate", str(PHOTO), "-o", "{tmp}/d.png", "--provider", ""], "--provider"),
    (["deploy", "{recipe}", "--work-pool", ""], "--work-pool"),
    (["run", "{recipe}", "--dask-address", ""], "--dask-address"),
    (["models", "verify", ""], "NAME"),
    (["session", "list", ""], "ID"),
])
def test_an_empty_path_option_is_refused_naming_it(tmp_path, workspace, monkeypatch, argv, option):
    """`--workspace ''` and `--out ''` silently ran against the default folder, `stereo --depth ''`
    estimated depth as if no map was given: an empty path is one line naming the option, exit 2."""
    monkeypatch.chdir(tmp_path)
    recipe = _recipe(tmp_path)
    args = [a.replace("{recipe}", str(recipe)).replace("{tmp}", str(tmp_path)) for a in argv]
    before = sorted(p.name for p in tmp_path.iterdir())
    r = run_cli(*args, timeout=120)
    _one_line_error(r, f"'{option}'", "empty")
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


@pytest.mark.parametrize("var", ["DEPTHCRAFT_HOME", "DEPTHCRAFT_MODELS_DIR"])
def test_an_empty_path_variable_is_refused_naming_it(tmp_path, workspace, var):
    """DEPTHCRAFT_HOME='' used the user's default workspace without a word."""
    r = run_cli("validate", _recipe(tmp_path), env={var: ""})
    _one_line_error(r, var, "empty")


def test_an_empty_home_variable_is_not_read_when_workspace_is_given(tmp_path):
    """--workspace is the workspace: an empty DEPTHCRAFT_HOME left in the environment is not read
    (it was refused all the same)."""
    r = run_cli("--workspace", tmp_path / "ws", "validate", _recipe(tmp_path), env={"DEPTHCRAFT_HOME": ""})
    assert r.returncode == 0, r.stderr


def test_workspace_default_refuses_an_empty_root(monkeypatch):
    from depthcraft.flows.workspace import Workspace
    from depthcraft.tasks.lib.errors import ParameterError

    with pytest.raises(ParameterError, match="--workspace"):
        Workspace.default("")
    monkeypatch.setenv("DEPTHCRAFT_HOME", "")
    with pytest.raises(ParameterError, match="DEPTHCRAFT_HOME"):
        Workspace.default()


# -- 2. errors of a recipe given as a file name the file, never "<recipe>" --------------------
def test_an_output_folder_escaping_by_a_link_names_the_recipe_and_the_input(tmp_path, workspace):
    """An input's output folder that is a symbolic link out of the output root said
    `<recipe>: output: ...`: it names the recipe file, the line of `output` and the input."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "root" / "out").mkdir(parents=True)
    (tmp_path / "root" / "out" / "coffee").symlink_to(elsewhere)
    recipe = _recipe(tmp_path, f"version: 1\nname: t\ninputs: {{images: ['{PHOTO}']}}\n"
                               "steps:\n  - {id: depth, uses: estimate}\noutput: out/{image}/\n")
    r = run_cli("validate", recipe, "--out", tmp_path / "root")
    err = _one_line_error(r, f"{recipe}:6: output:", str(PHOTO), str(elsewhere))
    assert "<recipe>" not in err
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("override, key", [("steps.nope.with.x=1", "steps.nope.with.x"),
                                           ("noequals", "noequals"),
                                           ("inputs={a: 1, a: 2}", "inputs")])
def test_a_set_error_names_the_recipe_file(tmp_path, workspace, override, key):
    """`--set` faults said `<recipe>: ...` although the recipe was a file."""
    recipe = _recipe(tmp_path)
    err = _one_line_error(run_cli("validate", recipe, "--set", override), f"{recipe}: {key}: --set")
    assert "<recipe>" not in err


def test_a_concurrency_limit_below_one_is_refused_by_validate_with_its_line(tmp_path, workspace):
    """`concurrency: {x: 0}` passed validate and failed the run as `<recipe>: concurrency.x`."""
    recipe = _recipe(tmp_path, f"version: 1\nname: t\ninputs: {{images: ['{PHOTO}']}}\n"
                               "steps:\n  - {id: depth, uses: estimate}\nconcurrency:\n  x: 0\n")
    _one_line_error(run_cli("validate", recipe), f"{recipe}:7: concurrency.x:")


def test_an_input_folder_and_a_missing_depth_name_their_recipe_line(tmp_path):
    from depthcraft.flows.compile import resolve_inputs
    from depthcraft.flows.recipe import load_recipe
    from depthcraft.flows.workspace import Workspace

    (tmp_path / "adir").mkdir()
    recipe = _recipe(tmp_path, f"version: 1\nname: t\ninputs:\n  images:\n    - {tmp_path / 'adir'}\n"
                               f"    - {{image: '{PHOTO}', depth: nosuch.png}}\nsteps:\n  - {{id: depth, uses: estimate}}\n")
    rec, src = load_recipe(recipe)
    items = resolve_inputs(rec, src, Workspace.default(tmp_path / "ws"), out_root=tmp_path)
    assert [i.error for i in items] == [
        f"{tmp_path / 'adir'}: is a folder; use a glob such as photos/*.jpg (recipe {recipe}:5)",
        f"{tmp_path / 'nosuch.png'}: no such depth file (recipe {recipe}:6)"]


# -- 3. duplicate keys are found by the key's value, not its spelling -------------------------
SPELLINGS = [("true", "yes"), ("1", "1.0"), ('"a"', "a"), ("1", "0x1"), ("null", "~"), ("true", "1"), ("Off", "no")]


@pytest.mark.parametrize("first, second", SPELLINGS)
def test_duplicate_keys_spelled_differently_are_refused_with_the_line(tmp_path, first, second):
    """`{true: 1, yes: 2}` and `{1: a, 1.0: b}` loaded as one key, the last value silently kept."""
    from depthcraft.flows.recipe import load_recipe
    from depthcraft.tasks.lib.errors import RecipeError

    recipe = _recipe(tmp_path, f"version: 1\nname: t\ninputs: {{images: ['{PHOTO}']}}\nanswers:\n"
                               f"  {first}: x\n  {second}: y\nsteps:\n  - {{id: depth, uses: estimate}}\n")
    with pytest.raises(RecipeError) as e:
        load_recipe(recipe)
    msg = str(e.value)
    assert msg.startswith(f"{recipe}:6: answers.{second}: duplicate key {second!r}"), msg
    assert "first on line 5" in msg and "\n" not in msg


def test_duplicate_keys_spelled_differently_through_set_and_the_cli(tmp_path, workspace):
    recipe = _recipe(tmp_path)
    r = run_cli("validate", recipe, "--set", "answers={true: x, yes: y}")
    _one_line_error(r, f"{recipe}: answers: --set", "duplicate key 'yes'", "'true'")
    text = recipe.read_text() + "concurrency: {1: 2, 1.0: 3}\n"
    recipe.write_text(text)
    _one_line_error(run_cli("validate", recipe), f"{recipe}:6: concurrency.1.0: duplicate key '1.0'")


@pytest.mark.parametrize("text, data", [("{1: a, '1': b}", {1: "a", "1": "b"}),
                                        ("{2001-01-01: a, '2001-01-01': b}", None),
                                        ("<<: {a: 1}\na: 2", {"a": 2})])
def test_keys_that_differ_once_read_are_kept(text, data):
    """`1` and `"1"` are two keys (an int and a string): they were refused as one (by spelling);
    a merge key's values are YAML's way to be overridden."""
    from depthcraft.flows.yamlsafe import load

    got = load(text)[1]
    assert len(got) == 2 if data is None else got == data


# -- 4. photo-only step settings in a recipe whose inputs are all clips -----------------------
CLIP = REPO / "recipes" / "clips" / "sample.mp4"


def _clip_recipe(tmp_path, uses: str, with_: str, extra: str = "", images=(CLIP,)) -> "Path":
    frm = "" if uses == "estimate" else "    from: depth\n"
    return _recipe(tmp_path, f"version: 1\nname: c\ninputs: {{images: [{', '.join(repr(str(p)) for p in images)}]}}\n"
                             "steps:\n  - {id: depth, uses: estimate}\n"
                             f"  - id: s\n    uses: {uses}\n{frm}    with: {with_}\n{extra}")


def _compile(recipe, tmp_path):
    from depthcraft.flows.compile import compile_plan
    from depthcraft.flows.recipe import load_recipe
    from depthcraft.flows.workspace import Workspace

    rec, src = load_recipe(recipe)
    return compile_plan(rec, src, Workspace.default(tmp_path / "ws"), out_root=tmp_path / "out", fetch=False)


CLIP_REFUSED = [
    ("stereo", "{interpolation: cubic}", "", "interpolation"),
    ("stereo", "{mask: false}", "", "mask"),
    ("stereo", "{edge_dilation: 3}", "", "edge_dilation"),
    ("stereo", "{scale: 1}", "", "scale"),
    ("stereo", "{format: jpg}", "", "format"),
    ("stereo", "{format: jpg, quality: 80}", "    clip_output: folder\n", "quality"),
    ("parallax", "{duration: 2}", "", "duration"),
    ("parallax", "{fps: 10}", "", "fps"),
    ("parallax", "{crf: 20}", "", "crf"),
    ("parallax", "{preset: fast}", "", "preset"),
    ("parallax", "{supersample: 2}", "", "supersample"),
    ("parallax", "{mask: true}", "", "mask"),
    ("bokeh", "{format: jpg, quality: 80}", "    clip_output: folder\n", "quality"),
    ("bokeh", "{format: jpg}", "    clip_output: mp4\n", "format"),
    ("estimate", "{use_case: portrait}", "", "use_case"),
    ("estimate", "{output: metric}", "", "output"),
    # a metric format failed on every frame ("needs near and far", given or not); fov_deg was not written
    ("refine", "{format: metric, metric: {near: 1, far: 5}}", "    clip_output: folder\n", "format"),
    ("export", "{formats: [png16, metric_exr], metric: {near: 1, far: 5}}", "    clip_output: folder\n", "formats"),
    ("export", "{formats: [png16], metric: {fov_deg: 50}}", "    clip_output: folder\n", "metric.fov_deg"),
]


@pytest.mark.parametrize("uses, with_, extra, name", CLIP_REFUSED)
def test_a_photo_only_setting_is_refused_when_every_input_is_a_clip(tmp_path, uses, with_, extra, name):
    """`stereo quality: 80` (and the rest of the family) on a recipe of clips validated and ran,
    the setting silently unused by the clip engine."""
    from depthcraft.tasks.lib.errors import RecipeError

    recipe = _clip_recipe(tmp_path, uses, with_, extra)
    with pytest.raises(RecipeError) as e:
        _compile(recipe, tmp_path)
    msg = str(e.value)
    line = 8 if uses == "estimate" else 9
    assert msg.startswith(f"{recipe}:{line}: steps.1.with.{name}: "), msg
    assert "a clip" in msg and "\n" not in msg


@pytest.mark.parametrize("uses, with_, extra", [
    ("stereo", "{edge_dilation: 0, layout: hsbs, divergence: 3}", ""),
    ("stereo", "{format: jpg}", "    clip_output: folder\n"),  # the frames' file type
    ("parallax", "{pix_fmt: yuv444p, motion: dolly, size: 96x64}", ""),  # odd sides: trimmed or padded
    ("bokeh", "{aperture: 2, shape: polygon, blades: 5}", ""),
    ("estimate", "{temporal: false, keyframe_interval: 2, format: png16}", ""),
    ("layers", "{count: 2, feather: 1}", ""),
])
def test_settings_a_clip_reads_are_kept(tmp_path, uses, with_, extra):
    _compile(_clip_recipe(tmp_path, uses, with_, extra), tmp_path)


def test_a_photo_setting_stands_when_a_photo_is_among_the_clips(tmp_path):
    """An input list of a photo and a clip: the photo reads it."""
    _compile(_clip_recipe(tmp_path, "stereo", "{format: jpg, quality: 80, interpolation: cubic}",
                          images=(CLIP, PHOTO)), tmp_path)


def test_a_photo_only_setting_on_clips_is_one_line_from_validate(tmp_path, workspace):
    recipe = _clip_recipe(tmp_path, "parallax", "{duration: 2}")
    _one_line_error(run_cli("validate", recipe), f"{recipe}:9: steps.1.with.duration: duration 2.0 has no effect on a clip",
                    "leave out duration")


@pytest.mark.parametrize("argv, option", [
    (["export", "{clip}", "-o", "{tmp}/f/", "--set", "formats=[metric]", "--set", "metric.near=1",
      "--set", "metric.far=5"], "--set formats"),
    (["estimate", "{clip}", "-o", "{tmp}/f/", "--format", "metric_mm"], "--format"),
    (["export", "{clip}", "-o", "{tmp}/f/", "--set", "formats=[png16]", "--set", "metric.fov_deg=50"],
     "--set metric.fov_deg"),
])
def test_a_metric_setting_on_a_clip_is_refused_by_the_one_shot_commands(tmp_path, argv, option):
    """`export clip.mp4 --set formats=[metric] --set metric.near=1 ...` failed on the first frame
    with "metric depth needs near and far distances", although both were given."""
    from cliputil import make_clip

    clip = make_clip(tmp_path / "c.mp4", n=6, audio=False)
    args = [a.replace("{clip}", str(clip)).replace("{tmp}", str(tmp_path)) for a in argv]
    _one_line_error(run_cli(*args), f"'{option}'", "clip")
    assert not (tmp_path / "f").exists()


# -- 5. a provider option given with its default value keys as omitted ------------------------
def _onnx_recipe(tmp_path, options: str | None) -> "Path":
    from test_onnx import mean_graph

    model = tmp_path / "dyn.onnx"
    if not model.exists():
        mean_graph(model)
    return _recipe(tmp_path, f"version: 1\nname: po\nprovider: 'onnx:{model}'\n"
                             + (f"provider_options: {options}\n" if options is not None else "")
                             + f"inputs: {{images: ['{PHOTO}']}}\nsteps:\n  - {{id: depth, uses: estimate}}\n"
                               "  - {id: edges, uses: refine, from: depth}\n",
                   name=f"r{abs(hash(options))}.yaml")


def test_a_default_provider_option_reruns_fully_cached(tmp_path, workspace, prefect_server):
    """`provider_options: {upsample: guided}` (onnx's default) keyed differently from no
    provider_options: the same depth was computed again."""
    import json

    pytest.importorskip("onnx")
    out = tmp_path / "out"
    runs = []
    for options in (None, "{upsample: guided}", "{upsample: bilinear}"):
        r = run_cli("run", _onnx_recipe(tmp_path, options), "--json", "--out", out)
        assert r.returncode == 0, r.stderr
        runs.append(json.loads(r.stdout))
    first, spelled_out, other = runs
    assert first["computed"] == first["nodes"] == 2
    assert spelled_out["cached"] == spelled_out["nodes"] == 2 and spelled_out["computed"] == 0, spelled_out
    assert other["computed"] == 2  # (a value that is not the default is another computation)


@pytest.mark.parametrize("provider, options, kept", [
    ("onnx:x", {"upsample": "guided"}, {}),
    ("onnx:x", {"upsample": "bilinear"}, {"upsample": "bilinear"}),
    ("eachsense", {"web_search": False, "invert": None, "model": "m"}, {"model": "m"}),
    ("eachsense", {"web_search": 0, "invert": False}, {"web_search": 0, "invert": False}),  # not the defaults
    ("classic", {"upsample": "guided"}, {}),  # (classic reads no option: tests/test_provider_options_mixed.py)
    ("auto", {"upsample": "guided", "model": "m"}, {"upsample": "guided", "model": "m"}),
])
def test_key_options_leave_out_the_defaults_only(provider, options, kept):
    from depthcraft.tasks.providers.options import key_options

    assert key_options(provider, options) == kept


def test_the_default_pixel_limit_written_out_keys_as_omitted(tmp_path, monkeypatch):
    """`inputs.max_pixels: 50000000` (the default) gave every step another key than no limit."""
    monkeypatch.delenv("DEPTHCRAFT_MAX_PIXELS", raising=False)
    keys = []
    for extra in ("", "  max_pixels: 50000000\n", "  max_pixels: 40000000\n"):
        recipe = _recipe(tmp_path, f"version: 1\nname: t\ninputs:\n  images: ['{PHOTO}']\n{extra}"
                                   "steps:\n  - {id: depth, uses: estimate}\n")
        keys.append(_compile(recipe, tmp_path).nodes[("depth", "coffee")].key)
    assert keys[0] == keys[1] != keys[2]


def test_a_refine_steps_provider_on_clips_is_refused_with_its_line(tmp_path, workspace):
    """A clip's refine step refines its frames locally: `provider:` on that step was accepted and
    never asked (the frames were refined locally all the same)."""
    from depthcraft.tasks.lib.errors import RecipeError

    recipe = _clip_recipe(tmp_path, "refine", "{}", extra="    provider: eachsense\n")
    with pytest.raises(RecipeError) as e:
        _compile(recipe, tmp_path)
    msg = str(e.value)
    assert "provider eachsense has no effect on a refine step of a clip" in msg and "steps.1.provider" in msg, msg
