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
    err = r.stderr.strip()
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and len(err.splitlines()) == 1, r.stderr
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
