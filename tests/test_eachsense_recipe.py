"""The multi-turn each::sense recipe, run as it is (with a shorter video) through Prefect against
the loopback test server: one session for the whole batch, the refine turn continues it, a
re-run pays for nothing, and the key is written nowhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eachsense_server import EachSenseTestServer

REPO = Path(__file__).resolve().parents[1]
KEY = "sk-recipe-SECRET-1234"


@pytest.fixture
def service(monkeypatch):
    srv = EachSenseTestServer(keys={KEY: "ok"})
    srv.start()
    for k, v in {"EACHLABS_API_KEY": KEY, "EACHLABS_ORG": "org-test", "EACHSENSE_BASE_URL": srv.base_url,
                 "EACHLABS_STORAGE_URL": srv.base_url, "EACHSENSE_BACKOFF_BASE": "0.01",
                 "EACHSENSE_POLL_INTERVAL": "0.01"}.items():
        monkeypatch.setenv(k, v)
    yield srv
    srv.stop()


def test_multiturn_recipe_keeps_one_session_and_caches(prefect_server, tmp_path, service):
    from depthcraft.flows.runner import run_recipe

    recipe = REPO / "recipes" / "multiturn-eachsense.yaml"
    sets = ['inputs.images=["photos/astronaut.jpg", "photos/chelsea.jpg"]', "steps.video.with.duration=1",
            "steps.video.with.fps=10"]
    ws = tmp_path / "ws"
    s = run_recipe(recipe, overrides=sets, out_root=str(tmp_path), workspace=str(ws))
    assert s["failures"] == [] and s["computed"] == 6

    chats = [r["body"] for r in service.chats()]
    assert len(chats) == 4  # estimate + refine for each photo
    assert {c["session_id"] for c in chats} == {s["session_id"]}  # one session for the batch
    refines = [c for c in chats if "Enhance the edges" in c["message"]]
    assert len(refines) == 2 and all(c["mode"] == "max" for c in chats)
    for name in ("astronaut", "chelsea"):
        assert (tmp_path / "out" / "multiturn-eachsense" / name / "video.mp4").exists()

    turns = [json.loads(x) for x in (ws / "sessions" / f"{s['session_id']}.jsonl").read_text().splitlines()]
    assert {t["provider"] for t in turns if t["step"] in ("depth", "edges")} == {"eachsense"}
    man = json.loads(Path(s["manifest"]).read_text())
    assert man["session_id"] == s["session_id"]

    again = run_recipe(recipe, overrides=sets, out_root=str(tmp_path), workspace=str(ws))
    assert again["cached"] == 6 and len(service.chats()) == 4  # nothing paid twice

    for f in list(tmp_path.rglob("*")):
        if f.is_file() and f.stat().st_size < 50_000_000:
            assert KEY.encode() not in f.read_bytes(), f"the API key leaked into {f}"


def test_provider_options_reach_the_refine_turn(prefect_server, tmp_path, service):
    """`send_depth: false` and `model:` in provider_options were keyed for a refine step with
    provider eachsense but never sent: the turn still carried the depth map."""
    import numpy as np
    from PIL import Image

    from depthcraft.flows.runner import run_recipe

    photo = tmp_path / "p.png"
    Image.fromarray((np.random.default_rng(3).random((72, 96, 3)) * 255).astype(np.uint8)).save(photo)
    recipe = tmp_path / "r.yaml"
    body = ("version: 1\nname: opts\nprovider: eachsense\n"
            "provider_options: {{send_depth: {send}, model: eachsense/depth-pro}}\n"
            f"inputs:\n  images: ['{photo}']\n"
            "steps:\n  - {{id: depth, uses: estimate}}\n"
            "  - {{id: edges, uses: refine, from: depth, provider: eachsense}}\n")
    recipe.write_text(body.format(send="false"))
    ws = tmp_path / "ws"
    s = run_recipe(recipe, out_root=str(tmp_path), workspace=str(ws))
    assert s["failures"] == [], s["failures"]
    refine = [r["body"] for r in service.chats()][-1]
    assert len(refine["image_urls"]) == 1, refine  # the photo only: no depth map sent
    assert refine.get("model") == "eachsense/depth-pro", refine
    recipe.write_text(body.format(send="true"))
    s = run_recipe(recipe, out_root=str(tmp_path), workspace=str(ws))
    refine = [r["body"] for r in service.chats()][-1]
    assert len(refine["image_urls"]) == 2, refine  # the photo and its depth map


def test_send_depth_false_still_sends_the_depth_when_the_estimate_was_not_eachsense(prefect_server, tmp_path,
                                                                                      service):
    """`send_depth: false` leaves out the depth map because the service holds it from the
    estimate's turn; after a local (classic) estimate the service never saw one, and the refine
    turn went out with the photo alone (since provider_options reach the refine turn)."""
    import numpy as np
    from PIL import Image

    from depthcraft.flows.runner import run_recipe

    photo = tmp_path / "p.png"
    Image.fromarray((np.random.default_rng(4).random((72, 96, 3)) * 255).astype(np.uint8)).save(photo)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 1\nname: localfirst\nprovider: classic\n"
                      "provider_options: {send_depth: false}\n"
                      f"inputs:\n  images: ['{photo}']\n"
                      "steps:\n  - {id: depth, uses: estimate}\n"
                      "  - {id: edges, uses: refine, from: depth, provider: eachsense}\n")
    s = run_recipe(recipe, out_root=str(tmp_path), workspace=str(tmp_path / "ws"))
    assert s["failures"] == [], s["failures"]
    chats = [r["body"] for r in service.chats()]
    assert len(chats) == 1 and len(chats[0]["image_urls"]) == 2, chats  # the photo and its depth map
