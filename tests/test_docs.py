"""The README stays true: every step and parameter is documented, every recipe it lists exists."""

from __future__ import annotations

import re
from pathlib import Path

from depthcraft.tasks.catalog import steps

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def test_every_step_parameter_is_in_the_readme():
    for kind, spec in steps().items():
        assert f"#### `{kind}`" in README, f"step {kind} missing from README (depthcraft steps --markdown)"
        for name in spec.params.model_fields:
            assert f"| `{name}` |" in README, f"{kind}.{name} missing from README"


def test_every_recipe_is_listed_and_every_listed_recipe_exists():
    table = README.split("### The recipe language")[0].split("## Recipes")[1]
    listed = set(re.findall(r"`([a-z0-9-]+\.yaml)`", table))
    present = {p.name for p in (REPO / "recipes").glob("*.yaml")}
    assert listed == present


def test_the_two_commands_are_what_ci_runs():
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in README
    assert ".venv/bin/depthcraft run recipes/showcase.yaml" in README


def test_linked_docs_and_images_exist():
    for target in re.findall(r"\]\(((?:docs|recipes)/[^)#]+)\)", README):
        assert (REPO / target).exists(), target
