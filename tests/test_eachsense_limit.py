"""each::sense keeps at most 50 messages per session: a batch of any size must still succeed.

Against the loopback test server with the service's 50-message limit switched on: 27 photos
with an estimate and a refine turn each (54 turns; one session would refuse the last 4), each
photo's turns in one service session, no service session over the limit, the mapping recorded in
the session log and the manifest, and a re-run in a new process that finds sessions already used.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from eachsense_server import EachSenseTestServer
from PIL import Image

from depthcraft.tasks.providers.base import DepthRequest
from depthcraft.tasks.providers.eachsense import EachSenseProvider
from depthcraft.tasks.providers.eachsense import sessions as S

KEY = "sk-limit-test-0000"
LIMIT = 50


@pytest.fixture
def service(monkeypatch):
    srv = EachSenseTestServer(keys={KEY: "ok"})
    srv.start()
    srv.max_messages = LIMIT
    for k, v in {"EACHLABS_API_KEY": KEY, "EACHLABS_ORG": "org-test", "EACHSENSE_BASE_URL": srv.base_url,
                 "EACHLABS_STORAGE_URL": srv.base_url, "EACHSENSE_BACKOFF_BASE": "0.01",
                 "EACHSENSE_POLL_INTERVAL": "0.01"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("EACHLABS_API_KEY_BLOCK", raising=False)
    S.reset_planners()  # every test is a fresh process as far as placements go
    yield srv
    srv.stop()
    S.reset_planners()


def _photos(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [(rng.random((64, 80, 3)) * 255).astype(np.uint8) for _ in range(n)]


def _per_session(srv) -> Counter:
    return Counter(r["body"]["session_id"] for r in srv.chats())


def test_the_service_limit_is_real(service):
    """The test server refuses the 51st message of a session, as the service does."""
    prov = EachSenseProvider()
    for i in range(LIMIT):
        service.sessions.setdefault((KEY, "full"), []).append({"user_prompt": str(i), "generated_media_urls": []})
    from depthcraft.tasks.providers.eachsense.client import SessionFullError

    with pytest.raises(SessionFullError, match="limit"):
        prov.client.chat("depth please", session_id="full", image_urls=[])


def test_planner_keeps_chains_whole_and_sessions_under_the_limit():
    used = {"batch": 49}  # an earlier run left one message of room in the first session
    p = S.SessionPlanner(lambda sid: used.get(sid, 0))
    where = {}
    for i in range(40):
        sid = p.place("batch", f"photo{i}")
        p.sent(sid, f"photo{i}")
        where[i] = sid
    for i in range(40):  # the refine turns continue their estimates
        sid = p.place("batch", f"photo{i}", continues=where[i])
        assert sid == where[i]
        p.sent(sid, f"photo{i}")
    counts = Counter()
    for sid in where.values():
        counts[sid] += 2
    assert "batch" not in counts  # 1 message of room is not enough for a chain
    assert all(n <= S.DEFAULT_MAX_MESSAGES for n in counts.values()) and len(counts) == 3
    assert p.mapping("batch") == sorted(counts)
    # an estimate cached from another recipe session does not pull this session's chain into it
    assert S.belongs("batch~2", "batch") and not S.belongs("other", "batch") and not S.belongs("batch~x", "batch")
    assert p.place("fresh", "photo0", continues=where[0]) == "fresh"


def test_27_photos_estimate_and_refine_in_one_named_session(service):
    prov = EachSenseProvider()
    photos = _photos(27)
    est = {}
    for i, rgb in enumerate(photos):
        est[i] = prov.estimate(DepthRequest(image=rgb, image_path=f"photo{i}.png", session_id="shoot"))
    for i, rgb in enumerate(photos):
        dm = prov.refine(DepthRequest(image=rgb, image_path=f"photo{i}.png", session_id="shoot", depth=est[i],
                                      options={"service_session": est[i].meta["service_session"]}))
        assert dm.meta["service_session"] == est[i].meta["service_session"]  # a refine continues its estimate
    per = _per_session(service)
    assert sum(per.values()) == 54 and max(per.values()) <= LIMIT and len(per) >= 2
    assert "shoot" in per  # the first service session is the recipe's own session id
    # each photo's two turns went to one service session
    by_photo = defaultdict(set)
    for r in service.chats():
        by_photo[r["body"]["image_urls"][0]].add(r["body"]["session_id"])
    assert all(len(v) == 1 for v in by_photo.values())
    # the service's memory agrees: no session over the limit, no refused turn
    for (key, sid), hist in service.sessions.items():
        assert len(hist) <= LIMIT and all(h["generated_media_urls"] for h in hist), sid


def test_a_rerun_in_a_new_process_counts_what_the_service_already_holds(service):
    """A new process does not know what earlier runs sent: it reads the service's memory."""
    hist = service.sessions.setdefault((KEY, "again"), [])
    hist += [{"user_prompt": str(i), "generated_media_urls": ["x"]} for i in range(LIMIT - 1)]
    prov = EachSenseProvider()
    for i, rgb in enumerate(_photos(3)):
        dm = prov.estimate(DepthRequest(image=rgb, image_path=f"p{i}.png", session_id="again"))
        assert dm.meta["service_session"] == "again~2"
    assert _per_session(service) == Counter({"again~2": 3})


def test_recipe_batch_of_27_records_the_mapping(prefect_server, tmp_path, service):
    """The issue's case end to end: 27 photos, estimate + eachsense refine, one named session."""
    from depthcraft.flows.runner import run_recipe

    (tmp_path / "photos").mkdir()
    for i, rgb in enumerate(_photos(27)):
        Image.fromarray(rgb).save(tmp_path / "photos" / f"p{i:02d}.png")
    recipe = tmp_path / "batch.yaml"
    recipe.write_text("version: 1\nname: batch\nsession: studio\nprovider: eachsense\n"
                      "inputs: {images: ['photos/*.png']}\n"
                      "steps:\n  - {id: depth, uses: estimate}\n"
                      "  - {id: edges, uses: refine, from: depth, provider: eachsense}\n")
    ws = tmp_path / "ws"
    s = run_recipe(recipe, out_root=str(tmp_path), workspace=str(ws))
    assert s["failures"] == [] and s["computed"] == 54
    per = _per_session(service)
    assert sum(per.values()) == 54 and max(per.values()) <= LIMIT

    turns = [json.loads(x) for x in (ws / "sessions" / "studio.jsonl").read_text().splitlines()]
    svc = defaultdict(set)
    for t in turns:
        assert t["session_id"] == "studio" and t.get("service_session"), t
        svc[t["image"]].add(t["service_session"])
    assert all(len(v) == 1 for v in svc.values())  # estimate and refine of a photo: one service session
    man = json.loads(Path(s["manifest"]).read_text())
    assert man["service_sessions"] == {"studio": sorted(per)}
