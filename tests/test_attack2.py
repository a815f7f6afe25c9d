"""Hostile-user checks of features that landed together (pause/resume names, ...): each test failed
on the code before its fix."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _cli(*args, cwd, env=None):
    return subprocess.run([sys.executable, "-m", "depthcraft.flows.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env=env)


@pytest.mark.parametrize("name", ["a/b/c", "", " ", "a/", "/b"])
def test_pause_resume_refuse_a_malformed_name_in_one_line_without_a_server(tmp_path, name):
    """Before: `pause a/b/c` was a Prefect ValueError traceback (exit 1); `pause ''` said
    'e.g. depthcraft-/' and named nothing; each started a Prefect server first."""
    ws = tmp_path / "ws"
    for verb in ("pause", "resume"):
        r = _cli("--workspace", str(ws), verb, "ok/fine", name, cwd=tmp_path)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
        assert "FLOW/NAME" in lines[0] and (repr(name) if not name.strip() else name) in lines[0], lines[0]
        assert "depthcraft-/" not in lines[0]
    assert not (ws / "prefect").exists()  # no server was started for a name that cannot be one


# -- nested output folders (flows/outlock.py) ---------------------------------------------------------
@pytest.fixture
def registry_in(tmp_path, monkeypatch):
    """The host-wide registry of output folders, moved into the test's own temp folder."""
    import tempfile

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def test_a_folder_reached_through_a_link_is_refused_inside_a_running_runs(tmp_path, registry_in):
    """Before: folders were compared by their spelled path (abspath), so `link/x` (link -> real)
    was accepted while a run wrote `real/`, and both wrote the same files."""
    from depthcraft.flows import outlock

    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    held = outlock.claim_folder(tmp_path / "real", "run A")
    try:
        with pytest.raises(outlock.FolderInUse, match="inside"):
            outlock.claim_folder(tmp_path / "link" / "x", "run B")
        with pytest.raises(outlock.FolderInUse, match="around"):
            outlock.claim_folder(tmp_path / "out" / ".." / "link" / "..", "run C")
        same = outlock.claim_folder(tmp_path / "link", "run D")  # the same folder: takes turns (flock), not refused
        outlock.unclaim(same)
        sibling = outlock.claim_folder(tmp_path / "realx", "run E")  # a prefix that is no parent
        outlock.unclaim(sibling)
    finally:
        outlock.unclaim(held)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to chown")
def test_a_registry_folder_made_by_another_user_is_not_trusted(tmp_path, registry_in):
    """Before: the registry's name in the shared temp folder is predictable; another user who made
    it first (world-writable) could keep a held record of folder "/" there, and every run of ours
    was refused ("inside /, the output folder of a running run")."""
    import fcntl
    import json

    from depthcraft.flows import outlock

    reg = outlock._registry()
    reg.mkdir()
    os.chmod(reg, 0o777)
    os.chown(reg, 12345, 12345)
    planted = reg / "1-1.json"
    planted.write_text(json.dumps({"folder": "/", "pid": 1, "who": "someone else"}))
    fd = os.open(planted, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # (as its owner's live process would hold it)
    try:
        claim = outlock.claim_folder(tmp_path / "out", "our run")  # not refused: the registry is not ours
        assert claim is None and sorted(p.name for p in reg.iterdir()) == ["1-1.json"]
        with outlock.oneshot_writing(tmp_path / "o.png"):  # its locks are not taken there either
            assert not list(reg.glob("oneshot-*"))
    finally:
        os.close(fd)


# -- photo-only settings on clips (flows/recipe_inert.py) -------------------------------------------
def test_a_missing_photo_beside_a_clip_is_said_not_hidden_behind_a_clip_only_refusal(tmp_path):
    """Before: `images: [c.mp4, typo.png]` with stereo `interpolation: cubic` was refused as "no
    effect on a clip (every input of this recipe is one)": false, and its advice (leave out
    interpolation) was wrong once the photo's path is fixed; the missing photo was not said."""
    from cliputil import make_clip

    make_clip(tmp_path / "c.mp4", n=4, audio=False)
    (tmp_path / "r.yaml").write_text(
        "name: r\nprovider: classic\ninputs:\n  images: [c.mp4, typo.png]\nsteps:\n  - {id: depth, uses: estimate}\n"
        "  - {id: pair, uses: stereo, from: depth, with: {interpolation: cubic}}\n")
    r = _cli("--workspace", str(tmp_path / "ws"), "validate", str(tmp_path / "r.yaml"), cwd=tmp_path)
    assert r.returncode == 2 and "typo.png" in r.stderr and "interpolation" not in r.stderr, r.stderr
    # every input a clip: still refused, naming the recipe line of the setting
    (tmp_path / "r.yaml").write_text((tmp_path / "r.yaml").read_text().replace(", typo.png", ""))
    r = _cli("--workspace", str(tmp_path / "ws"), "validate", str(tmp_path / "r.yaml"), cwd=tmp_path)
    assert r.returncode == 2 and "r.yaml:7: steps.1.with.interpolation" in r.stderr, r.stderr


def test_parallax_pix_fmt_on_a_clip_of_odd_sides_is_not_refused_by_the_one_shot(tmp_path):
    """Before: `parallax odd.mp4 --pix-fmt yuv444p` was refused ("no effect on a clip"), while the
    same command's own notice says "give ... pix_fmt yuv444p to keep it" and a recipe's pix_fmt
    pads the odd frame (98x66) instead of trimming it (96x64)."""
    import cv2
    from cliputil import make_clip

    make_clip(tmp_path / "odd.mp4", n=3, size=(97, 65), audio=False)
    sizes = {}
    for extra in ([], ["--pix-fmt", "yuv444p"]):
        out = tmp_path / f"p{len(extra)}.mp4"
        r = _cli("--workspace", str(tmp_path / "ws"), "parallax", str(tmp_path / "odd.mp4"), "--provider", "classic",
                 "-o", str(out), *extra, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        cap = cv2.VideoCapture(str(out))
        sizes[len(extra)] = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        cap.release()
    assert sizes == {0: (96, 64), 2: (98, 66)}, sizes


# -- provider_options (tasks/providers/options.py) ---------------------------------------------------
@pytest.mark.parametrize("options, key, said", [
    ("{upsample: GUIDED}", "provider_options.upsample", "got 'GUIDED'"),
    ("{upsample: null}", "provider_options.upsample", "got None"),
    ("{upsampel: bilinear}", "provider_options.upsampel", "options: upsample"),
])
def test_a_provider_option_onnx_cannot_read_is_refused_by_validate(tmp_path, options, key, said):
    """Before: validate said ok; a wrong value failed every photo and clip at run time, and an
    option name with a typo was ignored without a word (the run computed the default)."""
    pytest.importorskip("onnx")
    from test_onnx import mean_graph

    mean_graph(tmp_path / "m.onnx")
    import numpy as np
    from PIL import Image

    Image.fromarray(np.full((64, 80, 3), 128, np.uint8)).save(tmp_path / "p.png")
    recipe = tmp_path / "r.yaml"
    for opts, ok in ((options, False), ("{upsample: bilinear}", True), ("{upsample: guided}", True)):
        recipe.write_text(f"name: r\nprovider: 'onnx:{tmp_path / 'm.onnx'}'\nprovider_options: {opts}\n"
                          "inputs: {images: [p.png]}\nsteps: [{id: d, uses: estimate}]\n")
        r = _cli("--workspace", str(tmp_path / "ws"), "validate", str(recipe), cwd=tmp_path)
        if ok:
            assert r.returncode == 0, r.stderr
        else:
            assert r.returncode == 2 and f"r.yaml:3: {key}" in r.stderr and said in r.stderr, r.stderr
            assert len(r.stderr.strip().splitlines()) == 1, r.stderr


# -- YAML in a one-shot's --set (flows/oneshot.py; recipes' --set had these checks) --------------------
@pytest.mark.parametrize("value, said", [
    ("metric={near: 1, near: 2, far: 5}", "duplicate key 'near'"),
    ("metric=[&a [1,1,1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a], &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b], "
     "&d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c], &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d], &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]]",
     "expands to more than"),
])
def test_a_one_shot_set_value_has_the_recipes_yaml_limits(tmp_path, value, said):
    """Before: a one-shot's --set used plain yaml.safe_load: `{near: 1, near: 2}` ran with near 2
    without a word, and an alias bomb was expanded (seconds, and an error line of megabytes)."""
    import numpy as np
    from PIL import Image

    Image.fromarray(np.full((64, 80, 3), 128, np.uint8)).save(tmp_path / "p.png")
    r = _cli("--workspace", str(tmp_path / "ws"), "estimate", str(tmp_path / "p.png"), "--provider", "classic",
             "-o", str(tmp_path / "d.npy"), "--set", "format=metric", "--set", value, cwd=tmp_path)
    assert r.returncode == 2 and said in r.stderr and "parameter '--set'" in r.stderr, r.stderr[:500]
    assert len(r.stderr) < 400 and not (tmp_path / "d.npy").exists()


# -- empty values in recipes (the counterpart of flows/cli_paths.py) -----------------------------------
@pytest.mark.parametrize("text, sets, where", [
    ("provider: ''\nsteps: [{id: d, uses: estimate}]\n", [], "r.yaml:2: provider"),
    ("provider: classic\nsteps: [{id: d, uses: estimate, provider: ' '}]\n", [], "r.yaml:4: steps.0.provider"),
    ("provider: classic\nsteps: [{id: d, uses: estimate}]\n", ["--set", "provider="], "r.yaml:2: provider"),
])
def test_an_empty_provider_in_a_recipe_is_refused_naming_its_line(tmp_path, text, sets, where):
    """Before: `provider: ""` (or `--set provider=$UNSET`) validated and ran as auto, the manifest
    recording provider ""; a step's empty provider ran as the recipe's. `--provider ''` on the
    command line was already refused."""
    import numpy as np
    from PIL import Image

    Image.fromarray(np.full((64, 80, 3), 128, np.uint8)).save(tmp_path / "p.png")
    first, rest = text.split("\n", 1)  # name on line 1, provider on line 2, the step on line 4
    (tmp_path / "r.yaml").write_text(f"name: r\n{first}\ninputs: {{images: [p.png]}}\n{rest}")
    r = _cli("--workspace", str(tmp_path / "ws"), "validate", str(tmp_path / "r.yaml"), *sets, cwd=tmp_path)
    assert r.returncode == 2 and where in r.stderr and "empty provider" in r.stderr, r.stderr


def test_pause_of_a_name_given_twice_says_it_once(prefect_server, tmp_path):
    """Before: `pause X X` paused X twice and said "X: paused" twice (the second time it already was)."""
    import numpy as np
    from PIL import Image

    Image.fromarray(np.full((64, 80, 3), 128, np.uint8)).save(tmp_path / "p.png")
    (tmp_path / "twice.yaml").write_text("name: twice\nprovider: classic\ninputs: {images: [p.png]}\n"
                                         "steps: [{id: d, uses: estimate}]\nschedule: {interval: 1d}\n")
    ws = str(tmp_path / "ws")
    assert _cli("--workspace", ws, "deploy", "twice.yaml", cwd=tmp_path).returncode == 0
    for verb, said in (("pause", "paused"), ("resume", "resumed")):
        r = _cli("--workspace", ws, verb, "depthcraft-twice/twice", "depthcraft-twice/twice", cwd=tmp_path)
        lines = [ln for ln in r.stderr.splitlines() if ln.startswith("depthcraft-twice/twice")]
        assert r.returncode == 0 and len(lines) == 1 and said in lines[0] and "already" not in lines[0], r.stderr


# -- YAML on libyaml's events (flows/yamlsafe.py) -------------------------------------------------------
DOCS = ["{1: a, 1.0: b}", "{true: a, yes: b}", "{null: a, ~: b}", "{1: a, '1': b}", "a: 1\nb: 2\na: 3\n",
        "x: &x {a: 1, b: 2}\ny:\n  <<: *x\n  a: 3\n", "y:\n  <<: [{a: 1}, {a: 2}]\n  a: 3\n", "{&a k: 1, *a: 2}",
        "x: " + "{a: " * 100 + "1" + "}" * 100, "[" * 5000 + "]" * 5000, "a: [1, 2\n", "a: b: c\n", "\t- x\n",
        "l0: &l0 [" + ", ".join(["x"] * 10) + "]\nl1: &l1 [" + ", ".join(["*l0"] * 10) + "]\n" + "l2: &l2 ["
        + ", ".join(["*l1"] * 10) + "]\nl3: &l3 [" + ", ".join(["*l2"] * 10) + "]\nl4: [" + ", ".join(["*l3"] * 10) + "]\n"]


def _outcome(fn):
    try:
        return "ok", fn()
    except Exception as e:  # noqa: BLE001 - the outcome compared is the error's kind, line and key
        return type(e).__name__, getattr(e, "line", None), getattr(e, "key", None), str(e)


@pytest.mark.parametrize("doc", DOCS)
def test_recipe_yaml_reads_as_on_the_pure_python_loader_only_faster(doc):
    """Before: recipes were read on PyYAML's pure-Python scanner only (10^5 keys: 5.2 s, refused
    over the limit only after all of it); the same composer now runs on libyaml's events
    (1.6 s, bench/bench_yaml.py). Every limit, duplicate key and error is the same."""
    from depthcraft.flows import yamlsafe

    import yaml

    if not yaml.__with_libyaml__:
        pytest.skip("PyYAML without libyaml: the pure-Python loader is the only one")
    assert yamlsafe._FastLimitedSafeLoader is not yamlsafe.LimitedSafeLoader
    pure = _outcome(lambda: yamlsafe._load(yamlsafe.LimitedSafeLoader, doc)[1])
    assert _outcome(lambda: yamlsafe.load(doc)[1]) == pure
