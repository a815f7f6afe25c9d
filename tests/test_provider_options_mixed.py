"""``provider_options`` of a recipe whose steps ask more than one provider (an onnx estimate refined
by eachsense): every provider the recipe uses is checked (tasks/providers/options.py). Before, an
eachsense step in the recipe turned the check off: a typo in an onnx option, or in an eachsense
one, passed `validate` and `run`."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "depthcraft.flows.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=180)


@pytest.fixture
def mixed(tmp_path):
    """A recipe writer: onnx estimate + eachsense refine (or eachsense only), provider_options on line 3."""
    pytest.importorskip("onnx")
    from test_onnx import mean_graph

    mean_graph(tmp_path / "m.onnx")
    Image.fromarray(np.full((64, 80, 3), 128, np.uint8)).save(tmp_path / "p.png")

    def write(options: str, providers: str = "mixed"):
        head = f"provider: 'onnx:{tmp_path / 'm.onnx'}'" if providers == "mixed" else "provider: eachsense"
        steps = ("steps: [{id: d, uses: estimate}, {id: e, uses: refine, from: d, provider: eachsense}]\n"
                 if providers == "mixed" else "steps: [{id: d, uses: estimate}]\n")
        recipe = tmp_path / "r.yaml"
        recipe.write_text(f"name: r\n{head}\nprovider_options: {options}\ninputs: {{images: [p.png]}}\n{steps}")
        return recipe
    return write


BAD = [
    ("{upsampel: bilinear}", "mixed", "provider_options.upsampel", "options: behavior, enable_safety_checker"),
    ("{upsample: GUIDED}", "mixed", "provider_options.upsample", "got 'GUIDED'"),
    ("{web_serach: true}", "mixed", "provider_options.web_serach", "no provider of this recipe (eachsense, onnx)"),
    ("{web_search: 'no'}", "mixed", "provider_options.web_search", "web_search must be true or false, got 'no'"),
    ("{invert: 1}", "mixed", "provider_options.invert", "invert must be true or false or null, got 1"),
    ("{model: 3}", "eachsense", "provider_options.model", "model must be text, got 3"),
    ("{upsample: bilinear}", "eachsense", "provider_options.upsample", "no provider of this recipe (eachsense)"),
    ("{sendepth: false}", "eachsense", "provider_options.sendepth", "send_depth"),
    ("{model: ''}", "eachsense", "provider_options.model", "model is empty"),  # (was sent to the service)
    ("{behavior: '  '}", "mixed", "provider_options.behavior", "behavior is empty"),
]


@pytest.mark.parametrize("options, providers, key, said", BAD)
def test_a_provider_option_no_provider_of_a_mixed_recipe_reads_is_refused_by_validate(mixed, tmp_path, options,
                                                                                   providers, key, said):
    r = _cli("--workspace", str(tmp_path / "ws"), "validate", str(mixed(options, providers)), cwd=tmp_path)
    assert r.returncode == 2 and f"r.yaml:3: {key}" in r.stderr and said in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("options, providers", [
    ("{upsample: bilinear, web_search: true}", "mixed"), ("{invert: null, send_depth: false, model: m}", "mixed"),
    ("{web_search: false, behavior: agent, enable_safety_checker: true}", "eachsense"),
])
def test_the_options_some_provider_of_the_recipe_reads_validate(mixed, tmp_path, options, providers):
    r = _cli("--workspace", str(tmp_path / "ws"), "validate", str(mixed(options, providers)), cwd=tmp_path)
    assert r.returncode == 0, r.stderr


def test_run_refuses_a_typo_in_a_mixed_recipe_before_anything_runs(mixed, tmp_path):
    r = _cli("--workspace", str(tmp_path / "ws"), "run", str(mixed("{upsampel: bilinear}")), "--out",
             str(tmp_path / "out"), cwd=tmp_path)
    assert r.returncode == 2 and "r.yaml:3: provider_options.upsampel" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.png"))


def test_an_option_keys_only_the_steps_whose_provider_reads_it(tmp_path, monkeypatch):
    """One recipe-wide provider_options serves every provider of a mixed recipe; an option keyed
    every provider's steps: turning eachsense's `send_depth` recomputed the local estimate, and
    onnx's `upsample` re-sent (and paid for) an eachsense estimate of another step."""
    from test_cache_truth import plan_of

    monkeypatch.setenv("EACHSENSE_API_KEY", "k")
    Image.fromarray(np.full((64, 80, 3), 128, np.uint8)).save(tmp_path / "p.png")

    def keys(options: str) -> dict:
        plan = plan_of(tmp_path, "version: 1\nname: r\nprovider: classic\n"
                                 f"provider_options: {options}\ninputs: {{images: [p.png]}}\n"
                                 "steps:\n  - {id: d, uses: estimate}\n"
                                 "  - {id: e, uses: refine, from: d, provider: eachsense}\n")
        return {sid: n.key for (sid, _), n in plan.nodes.items()}

    a, b = keys("{send_depth: true}"), keys("{send_depth: false}")
    assert a["d"] == b["d"]  # classic reads no option: the local estimate is the same computation
    assert a["e"] != b["e"]  # the refine turn is not
    assert keys("{send_depth: true}") == keys("{web_search: false}")  # eachsense's defaults written out = omitted
