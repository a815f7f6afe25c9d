"""Recipes run as real Prefect flows against a real Prefect server on loopback.

Checks the artifact cache (Prefect shows hits as Cached; a changed parameter recomputes exactly
its dependants), failure isolation in a batch, sessions, manifests and reproduction.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from conftest import run_cli, save_photo, settled_task_runs

RECIPE = """\
version: 1
name: {name}
{session}inputs:
  images: {images}
steps:
  - id: depth
    uses: estimate
  - id: files
    uses: export
    from: depth
    with: {{formats: [grayscale, npy]}}
output: out/{{recipe}}/{{image}}/
"""


def make_recipe(tmp_path: Path, images: list[Path], name="t", session=None) -> Path:
    p = tmp_path / f"{name}.yaml"
    s = f"session: {session}\n" if session else ""
    p.write_text(RECIPE.format(name=name, session=s, images=json.dumps([str(i) for i in images])))
    return p


def run(recipe, ws, tmp_path, overrides=(), refresh=False):
    from depthcraft.flows.runner import RunFailed, run_recipe

    try:
        return run_recipe(recipe, overrides=list(overrides), out_root=str(tmp_path), workspace=str(ws), refresh=refresh)
    except RunFailed as e:
        return e.summary


def task_states(run_id: str) -> dict[str, str]:
    return {tr.name: tr.state.name for tr in settled_task_runs(run_id)}


def test_cache_hits_show_as_cached_and_changes_recompute_dependants(prefect_server, tmp_path, photos):
    ws = tmp_path / "ws"
    recipe = make_recipe(tmp_path, [photos["astronaut"], photos["chelsea"]])
    first = run(recipe, ws, tmp_path)
    assert first["failures"] == [] and first["computed"] == 4 and first["cached"] == 0
    out = tmp_path / "out" / "t" / "astronaut"
    gray = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(out / "files.png"))
    assert gray.dtype == np.uint8 and gray.shape == (256, 256) and gray.min() == 0 and gray.max() == 255
    raw = np.load(out / "files-npy.npy")
    assert raw.dtype == np.float32 and raw.shape == (256, 256)
    assert 0.0 <= raw.min() and raw.max() <= 1.0
    assert (out / "depth.png").exists()

    second = run(recipe, ws, tmp_path)
    assert second["computed"] == 0 and second["cached"] == 4
    states = task_states(second["run_id"])
    assert sorted(states) == ["depth[astronaut]", "depth[chelsea]", "files[astronaut]", "files[chelsea]"]
    assert set(states.values()) == {"Cached"}

    third = run(recipe, ws, tmp_path, overrides=["steps.files.with.formats=[inverse]"])
    states = task_states(third["run_id"])
    assert states["depth[astronaut]"] == "Cached" and states["depth[chelsea]"] == "Cached"
    assert states["files[astronaut]"] == "Completed" and states["files[chelsea]"] == "Completed"
    assert third["computed"] == 2 and third["cached"] == 2
    inv = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(out / "files.png"))
    assert np.abs(inv.astype(int) + gray.astype(int) - 255).max() <= 1  # inverse of the first


def test_broken_image_in_batch_costs_only_itself(prefect_server, tmp_path, photos):
    ws = tmp_path / "ws"
    broken = tmp_path / "broken.png"
    data = photos["coffee"].read_bytes()
    broken.write_bytes(data[: len(data) // 4])
    tiny = save_photo(tmp_path / "tiny.png", np.zeros((20, 20, 3), np.uint8))
    recipe = make_recipe(tmp_path, [photos["astronaut"], broken, tiny, tmp_path / "gone.png"], name="batch")
    s = run(recipe, ws, tmp_path)
    assert s["computed"] == 2  # astronaut: depth + files
    failed = {(f["step"], f["image"]): f["error"] for f in s["failures"]}
    assert "truncated" in failed[("depth", "broken")] and "broken.png" in failed[("depth", "broken")]
    assert "at least 64" in failed[("depth", "tiny")]
    assert failed[("files", "broken")].startswith("skipped")
    assert "no such file" in failed[(None, "gone")]
    assert (tmp_path / "out" / "batch" / "astronaut" / "files.png").exists()
    man = json.loads(Path(s["manifest"]).read_text())
    assert len(man["failures"]) == len(s["failures"])
    again = run(recipe, ws, tmp_path)  # finished work was kept: only the failures are retried
    assert again["cached"] == 2 and again["computed"] == 0


def test_session_turns_accumulate_and_show(prefect_server, tmp_path, photos):
    ws = tmp_path / "ws"
    recipe = make_recipe(tmp_path, [photos["astronaut"]], name="sess", session="depth-project-001")
    run(recipe, ws, tmp_path)
    run(recipe, ws, tmp_path, overrides=["steps.files.with.formats=[pfm]"])
    lines = (ws / "sessions" / "depth-project-001.jsonl").read_text().splitlines()
    turns = [json.loads(x) for x in lines]
    assert [t["step"] for t in turns] == ["depth", "files", "depth", "files"]
    assert [t["status"] for t in turns] == ["computed", "computed", "cached", "computed"]
    assert all(t["session_id"] == "depth-project-001" and t["provider"] == "classic" for t in turns)
    assert turns[3]["params"]["formats"] == ["pfm"]
    r = run_cli("--workspace", ws, "session", "show", "depth-project-001", "--json")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)) == 4


def test_manifest_records_everything_and_reproduces(prefect_server, tmp_path, photos):
    ws = tmp_path / "ws"
    recipe = make_recipe(tmp_path, [photos["chelsea"]], name="man")
    s = run(recipe, ws, tmp_path)
    mpath = Path(s["manifest"])
    assert mpath == tmp_path / "out" / "man" / "chelsea" / "manifest.json"
    m = json.loads(mpath.read_text())
    assert m["session_id"] == s["session_id"] and m["run_id"] == s["run_id"]
    assert m["recipe"]["text"] == recipe.read_text() and len(m["recipe"]["sha256"]) == 64
    assert {"prefect", "numpy", "opencv-python-headless", "ffmpeg"} <= set(m["versions"])
    assert m["inputs"][0]["sha256"] and m["provider"]["identities"]["classic"]["provider"] == "classic"
    import hashlib

    for step in m["steps"]:
        assert step["status"] == "computed" and step["seconds"] >= 0
        for o in step["outputs"].values():
            assert hashlib.sha256(Path(o["path"]).read_bytes()).hexdigest() == o["sha256"]

    r = run_cli("--workspace", ws, "reproduce", mpath)
    assert r.returncode == 0, r.stderr
    assert "reproduced" in r.stderr and "recomputed" in r.stderr
    # a manifest that recorded another hash is reported, with the file named
    m["steps"][1]["outputs"]["main"]["sha256"] = "0" * 64
    bad = tmp_path / "tampered.json"
    bad.write_text(json.dumps(m))
    r = run_cli("--workspace", ws, "reproduce", bad)
    assert r.returncode == 1 and "files.png" in r.stderr and "differ" in r.stderr


def test_cli_run_and_plan(prefect_server, tmp_path, photos):
    ws = tmp_path / "ws"
    recipe = make_recipe(tmp_path, [photos["astronaut"]], name="cli")
    r = run_cli("--workspace", ws, "run", recipe, "--out", tmp_path / "o", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["computed"] == 2 and (tmp_path / "o" / "out" / "cli" / "astronaut" / "files.png").exists()
    r = run_cli("--workspace", ws, "plan", recipe)
    assert r.returncode == 0 and r.stdout.count("yes") == 2
    r = run_cli("--workspace", ws, "run", recipe, "--set", "steps.files.with.formats=[sepia]")
    assert r.returncode == 2 and "sepia" in r.stderr and "cli.yaml:" in r.stderr
