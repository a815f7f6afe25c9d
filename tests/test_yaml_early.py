"""A recipe over the YAML limits is refused as soon as a node is known to be over one, by a walk
over libyaml's events that builds no node (flows/yamlcount.py), in the composer's own words."""

from __future__ import annotations

import pytest
import yaml

from depthcraft.flows import yamlcount, yamlsafe

needs_libyaml = pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML without libyaml")


def _outcome(fn):
    try:
        fn()
        return "ok"
    except Exception as e:  # noqa: BLE001 - the outcome compared is the error's kind, line, key and words
        return (type(e).__name__, getattr(e, "line", None), getattr(e, "key", None),
                str(e).split("\n")[0])  # (libyaml shows no snippet of the line)


SMALL = [  # under DEPTHCRAFT_YAML_MAX_NODES=40, DEPTHCRAFT_YAML_MAX_DEPTH=6
    "\n".join(f"k{i}: {i}" for i in range(30)),
    "name: r\nsteps:\n" + "".join(f"  - {{id: s{i}, uses: stereo}}\n" for i in range(12)),
    "a: 1\nb:\n  c: [" + ", ".join(map(str, range(50))) + "]\n",
    "a: 1\nb: [[" + ", ".join(map(str, range(30))) + "], [" + ", ".join(map(str, range(30))) + "]]\n",
    "x: &x [1, 2, 3, 4, 5, 6, 7, 8]\ny: [*x, *x, *x, *x, *x, *x]\n",
    "{1: a, 0x1: b, " + ", ".join(f"k{i}: {i}" for i in range(30)) + "}",
    "{010: a, 8: b, " + ", ".join(f"{i}: {i}" for i in range(10, 40)) + "}",
    "{" + ", ".join(f"{i}: {i}" for i in range(30)) + ", '7': x, 7: y}",
    "{true: a, " + ", ".join(f"k{i}: {i}" for i in range(30)) + ", yes: b}",
    "a: {b: 1, b: 2}\nc: [" + ", ".join(map(str, range(50))) + "]\n",
    "a: &a [1, *a]\n", "a: *nowhere\n", "a: &d 1\nb: &d 2\n", "{&k k: 1, *k : 2, z: [" + "1, " * 50 + "]}",
    "a: " + "[" * 8 + "]" * 8, "a: [1, 2\n", "- a\n---\n- b\n",
    "{" + ", ".join(f"? [{i}]\n: {i}" for i in range(30)) + "}",
]


@needs_libyaml
@pytest.mark.parametrize("doc", SMALL)
def test_the_early_walk_says_what_the_composer_says(doc, monkeypatch):
    monkeypatch.setenv("DEPTHCRAFT_YAML_MAX_NODES", "40")
    monkeypatch.setenv("DEPTHCRAFT_YAML_MAX_DEPTH", "6")
    pure = _outcome(lambda: yamlsafe._load(yamlsafe.LimitedSafeLoader, doc))
    assert _outcome(lambda: yamlsafe._load(yamlsafe._FastLimitedSafeLoader, doc)) == pure
    assert _outcome(lambda: yamlsafe.load(doc)) == pure
    early = _outcome(lambda: yamlcount.refuse_early(doc, yamlsafe._limits()))
    assert early == "ok" or early == pure  # never a refusal the composer would not make


def test_a_collection_is_refused_at_its_first_value_over_the_limit(monkeypatch):
    """Before: refused once complete ("60 values"), after composing all of it."""
    monkeypatch.setenv("DEPTHCRAFT_YAML_MAX_NODES", "40")
    with pytest.raises(yamlsafe.YamlLimitError) as e:
        yamlsafe._load(yamlsafe.LimitedSafeLoader, "a: 1\nb: [" + ", ".join(map(str, range(60))) + "]\n")
    assert (e.value.line, e.value.key) == (2, "b") and "41 values so far" in str(e.value)


@needs_libyaml
def test_a_mapping_of_a_hundred_thousand_keys_is_refused_without_composing_it(monkeypatch):
    """Before: the 10^5 keys were composed into nodes first (1.3 s), then refused."""
    def composing(*a, **k):
        raise AssertionError("composed")

    monkeypatch.setattr(yamlsafe, "_load", composing)
    for doc in ("\n".join(f"k{i}: {i}" for i in range(100_000)),
                "{" + ", ".join(f"{i}: {i}" for i in range(100_000)) + "}"):
        with pytest.raises(yamlsafe.YamlLimitError) as e:
            yamlsafe.load(doc)
        assert (e.value.line, e.value.key) == (1, None)
        assert "more than 100,000 values (100,001 values so far" in str(e.value)
