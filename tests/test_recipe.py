"""The recipe language: structure, overrides, DAG checks, and errors that name file, line and key."""

from __future__ import annotations

import textwrap

import pytest

from depthcraft.flows.compile import compile_plan, order_steps
from depthcraft.flows.recipe import load_recipe
from depthcraft.flows.workspace import Workspace
from depthcraft.tasks.lib.errors import RecipeError

BASE = """\
version: 1
name: t
inputs:
  images: [{img}]
steps:
  - id: depth
    uses: estimate
  - id: files
    uses: export
    from: depth
    with: {{formats: [grayscale]}}
"""


def write(tmp_path, text, name="r.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def compile_text(tmp_path, text, **kw):
    p = write(tmp_path, text)
    r, src = load_recipe(p, **kw)
    return compile_plan(r, src, Workspace.default(tmp_path / "ws"), out_root=tmp_path)


def test_valid_recipe_compiles_with_keys(tmp_path, photos):
    plan = compile_text(tmp_path, BASE.format(img=photos["astronaut"]))
    assert plan.order == ["depth", "files"]
    a, b = plan.nodes[("depth", "astronaut")], plan.nodes[("files", "astronaut")]
    assert len(a.key) == 64 and a.key != b.key
    assert plan.out_dirs["astronaut"] == (tmp_path / "out" / "t" / "astronaut").resolve()
    assert plan.session_id.startswith("t-")


def test_keys_are_stable_and_change_only_downstream(tmp_path, photos):
    text = BASE.format(img=photos["astronaut"])
    p1 = compile_text(tmp_path, text)
    p2 = compile_text(tmp_path, text)
    assert {k: n.key for k, n in p1.nodes.items()} == {k: n.key for k, n in p2.nodes.items()}
    p3 = compile_text(tmp_path, text, overrides=["steps.files.with.formats=[inverse]"])
    assert p3.nodes[("depth", "astronaut")].key == p1.nodes[("depth", "astronaut")].key
    assert p3.nodes[("files", "astronaut")].key != p1.nodes[("files", "astronaut")].key


def test_unknown_top_level_key_names_line(tmp_path, photos):
    text = BASE.format(img=photos["astronaut"]) + "colour: blue\n"
    with pytest.raises(RecipeError) as e:
        load_recipe(write(tmp_path, text))
    msg = str(e.value)
    assert "r.yaml:12" in msg and "unknown key 'colour'" in msg


def test_unknown_step_kind_names_line(tmp_path, photos):
    text = BASE.format(img=photos["astronaut"]).replace("uses: export", "uses: teleport")
    with pytest.raises(RecipeError) as e:
        compile_text(tmp_path, text)
    assert "r.yaml:9" in str(e.value) and "teleport" in str(e.value)


def test_unknown_parameter_names_line_and_lists_known(tmp_path, photos):
    text = BASE.format(img=photos["astronaut"]).replace("{formats: [grayscale]}", "{formats: [grayscale], colour: red}")
    with pytest.raises(RecipeError) as e:
        compile_text(tmp_path, text)
    msg = str(e.value)
    assert "r.yaml:11" in msg and "colour" in msg and "formats" in msg


def test_bad_parameter_value(tmp_path, photos):
    text = BASE.format(img=photos["astronaut"]).replace("[grayscale]", "[sepia]")
    with pytest.raises(RecipeError) as e:
        compile_text(tmp_path, text)
    assert "steps.1.with.formats" in str(e.value)


def test_bad_from_reference(tmp_path, photos):
    text = BASE.format(img=photos["astronaut"]).replace("from: depth", "from: dept")
    with pytest.raises(RecipeError) as e:
        compile_text(tmp_path, text)
    assert "r.yaml:10" in str(e.value) and "'dept'" in str(e.value)


def test_cycle_is_refused(tmp_path, photos):
    text = f"""\
    version: 1
    name: c
    inputs: {{images: ["{photos['astronaut']}"]}}
    steps:
      - {{id: a, uses: export, from: b}}
      - {{id: b, uses: export, from: a}}
    """
    r, src = load_recipe(write(tmp_path, text))
    with pytest.raises(RecipeError, match="cycle: a -> b -> a|cycle: b -> a -> b"):
        order_steps(r, src)


def test_duplicate_step_ids(tmp_path, photos):
    text = BASE.format(img=photos["astronaut"]).replace("id: files", "id: depth")
    with pytest.raises(RecipeError, match="duplicate step id"):
        compile_text(tmp_path, text)


def test_malformed_yaml_names_line(tmp_path):
    with pytest.raises(RecipeError) as e:
        load_recipe(write(tmp_path, "version: 1\nname: x\nsteps: [\n  - id: a\n"))
    assert "malformed YAML" in str(e.value) and "r.yaml:" in str(e.value)


@pytest.mark.parametrize("template", ["../escape/{image}", "/abs/{image}", "out/{colour}/"])
def test_output_template_cannot_escape(tmp_path, photos, template):
    text = BASE.format(img=photos["astronaut"]) + f"output: {template}\n"
    with pytest.raises(RecipeError) as e:
        load_recipe(write(tmp_path, text))
    assert "output" in str(e.value)


def test_override_values_are_yaml_typed(tmp_path, photos):
    r, _ = load_recipe(write(tmp_path, BASE.format(img=photos["astronaut"])),
                       overrides=["steps.files.with.formats=[npy, pfm]", "mode=eco"])
    assert r.mode == "eco" and r.steps[1].with_["formats"] == ["npy", "pfm"]


def test_override_unknown_step(tmp_path, photos):
    with pytest.raises(RecipeError, match="no step with id 'nope'"):
        load_recipe(write(tmp_path, BASE.format(img=photos["astronaut"])), overrides=["steps.nope.with.x=1"])


def test_globs_and_missing_files(tmp_path, photos):
    folder = photos["astronaut"].parent
    text = BASE.format(img=f'"{folder}/*.png", "{tmp_path}/missing.jpg"')
    plan = compile_text(tmp_path, text)
    names = [i.name for i in plan.images]
    assert {"astronaut", "chelsea", "coffee"} <= set(names)
    bad = [i for i in plan.images if i.error]
    assert len(bad) == 1 and "missing.jpg" in bad[0].error and "no such file" in bad[0].error
    assert ("depth", "astronaut") in plan.nodes and ("depth", "missing") not in plan.nodes


def test_glob_matching_nothing(tmp_path):
    with pytest.raises(RecipeError, match="no image matches"):
        compile_text(tmp_path, BASE.format(img=f'"{tmp_path}/none/*.jpg"'))


def test_unreachable_url_is_an_input_error(tmp_path):
    # port 9 on loopback: nothing listens, the connection is refused at once
    plan = compile_text(tmp_path, BASE.format(img='"http://127.0.0.1:9/photo.jpg"'))
    assert plan.images[0].error and "unreachable URL" in plan.images[0].error
    assert "http://127.0.0.1:9/photo.jpg" in plan.images[0].error


def test_step_needing_depth_without_from(tmp_path, photos):
    text = BASE.format(img=photos["astronaut"]).replace("    from: depth\n", "")
    with pytest.raises(RecipeError, match="needs a depth map"):
        compile_text(tmp_path, text)


def test_no_step_parameter_takes_nan_or_infinity():
    """Every float parameter of every step refuses nan and ±inf with a validation error naming
    it (`--scale nan` crashed the stereo renderer with a traceback; `validate` said ok)."""
    import typing

    import pydantic

    from depthcraft.tasks.catalog import steps

    checked = 0
    for kind, spec in steps().items():
        for name, field in spec.params.model_fields.items():
            ann = field.annotation
            args = typing.get_args(ann) or (ann,)
            if float not in args:
                continue
            for bad in (float("nan"), float("inf"), float("-inf")):
                with pytest.raises(pydantic.ValidationError, match="finite"):
                    spec.params.model_validate({name: bad})
            checked += 1
    assert checked >= 10  # divergence, scale, intensity, duration, fps, ...


def test_a_set_template_in_braces_stays_text():
    """`--set output={image}` was read by YAML as the mapping {image: null} ("should be a valid
    string"); braces without a colon are a template. A real mapping stays a mapping."""
    from depthcraft.flows.recipe import apply_overrides

    data = apply_overrides({}, ["output={image}", "provider_options={upsample: bilinear}", "x.y={a, b}"])
    assert data["output"] == "{image}" and data["x"]["y"] == "{a, b}"
    assert data["provider_options"] == {"upsample": "bilinear"}


def test_mappings_whose_entries_are_all_commented_out_read_as_empty(tmp_path, photos):
    """`provider_options:` with every entry commented out is YAML null: the same as leaving it out
    (it was refused as "Input should be a valid dictionary"); the cache keys are the same too."""
    base = BASE.format(img=photos["astronaut"])
    plain = compile_text(tmp_path, base)
    head, rest = base.split("inputs:", 1)
    nulls = head + "provider_options:\n  # upsample: bilinear\nanswers:\nconcurrency:\ninputs:" + rest
    plan = compile_text(tmp_path, nulls)
    assert plan.recipe.provider_options == {} and plan.recipe.answers == {} and plan.recipe.concurrency == {}
    assert {k: n.key for k, n in plan.nodes.items()} == {k: n.key for k, n in plain.nodes.items()}
