"""Prefect artifacts of a run, read back through the Prefect API, and seen in the Prefect UI.

A small recipe (estimate, a short parallax video, a viewer) runs as a flow on the session's
loopback server; its markdown summary, outputs table and the video step's progress artifact
are read back by flow run id. Then the summary is shown by a Prefect server with its UI, in
headless Chromium: the data-URI previews must be decoded images there.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from browser import PageLog, launch, wait_until

REPO = Path(__file__).resolve().parents[1]

RECIPE = """
version: 1
name: Art_Check.v2
inputs: {images: [%s]}
steps:
  - {id: depth, uses: estimate}
  - {id: clip, uses: parallax, from: depth, with: {duration: 1, fps: 8, size: 96x64, preset: ultrafast}}
  - {id: view, uses: viewer, from: depth, with: {max_size: 128}}
output: out/{recipe}/{image}/
"""


@pytest.fixture(scope="module")
def run(prefect_server, tmp_path_factory):
    from depthcraft.flows.runner import run_recipe

    root = tmp_path_factory.mktemp("artifacts")
    recipe = root / "art.yaml"
    recipe.write_text(RECIPE % json.dumps(str(REPO / "recipes" / "photos" / "chelsea.jpg")))
    s = run_recipe(recipe, out_root=str(root), workspace=str(root / "ws"))
    return s, json.loads(Path(s["manifest"]).read_text())


def _artifacts(flow_run_id: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as c:
        return c.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))


def test_summary_table_and_progress_read_back(run):
    s, m = run
    arts = _artifacts(s["run_id"])
    by_type = {}
    for a in arts:
        by_type.setdefault(a.type, []).append(a)
    md = by_type["markdown"][0]
    assert md.key == "depthcraft-art-check-v2"  # keyed per recipe: the latest is one click away
    assert "# Art\\_Check.v2" in md.data and s["session_id"].replace("_", "\\_") in md.data
    assert md.data.count("](data:image/jpeg;base64,") >= 2  # previews of the depth and the video
    assert "3 computed" in md.data or "cached" in md.data
    table = by_type["table"][0]
    assert table.key == "depthcraft-art-check-v2-outputs"
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    outputs = {Path(o["path"]).name: o["sha256"] for n in m["steps"] for o in n["outputs"].values()}
    assert {r["file"] for r in rows} == set(outputs)
    for r in rows:
        assert outputs[r["file"]].startswith(r["sha256"]) and len(r["sha256"]) == 12
        assert set(r) == {"image", "step", "file", "size", "sha256", "cached"}
    # the video step reported its frames through a progress artifact of its task run
    prog = by_type["progress"]
    assert len(prog) == 1 and float(prog[0].data) == 100.0 and prog[0].task_run_id is not None
    assert "clip[chelsea]" in prog[0].description
    assert s["gallery"] == str(Path(s["manifest"]).parent / "index.html")


def test_cached_rerun_publishes_a_new_version_under_the_same_key(run, prefect_server):
    from depthcraft.flows.runner import run_recipe

    s, m = run
    again = run_recipe(m["recipe"]["file"], out_root=m["out_root"], workspace=str(Path(m["out_root"]) / "ws"))
    arts = _artifacts(again["run_id"])
    md = [a for a in arts if a.type == "markdown"][0]
    assert md.key == "depthcraft-art-check-v2" and "3 cached" in md.data
    rows = [a for a in arts if a.type == "table"][0].data
    rows = json.loads(rows) if isinstance(rows, str) else rows
    assert all(r["cached"] for r in rows)
    assert not [a for a in arts if a.type == "progress"]  # nothing long ran


def test_previews_show_in_the_prefect_ui(run, tmp_path):
    """The Prefect UI renders the summary's markdown images from data URIs (checked in Chromium)."""
    from depthcraft.flows import server
    from depthcraft.flows.artifacts import summary_markdown
    from depthcraft.flows.workspace import Workspace

    s, m = run
    md = summary_markdown(m, Path(s["manifest"]).parent)
    ws = Workspace.default(tmp_path / "ui-ws")
    try:
        st = server.start(ws, ui=True, timeout=300)
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"the Prefect server with its UI did not start here: {e}")
    try:
        r = httpx.post(f"{st['url']}/artifacts/", json={"key": "depthcraft-art-check-v2", "type": "markdown", "data": md},
                       timeout=30)
        r.raise_for_status()
        art = r.json()["id"]
        base = st["url"][: -len("/api")]
        with launch() as browser:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            log = PageLog(page)
            page.goto(f"{base}/artifacts/artifact/{art}")
            imgs = wait_until(page, """(() => { const i = [...document.images].filter(
                x => (x.getAttribute('src') || '').startsWith('data:image/jpeg'));
                return i.length && i.every(x => x.complete) ? i.map(x => x.naturalWidth) : null; })()""", timeout=120)
            assert len(imgs) == md.count("](data:image/jpeg") and all(w > 0 for w in imgs)
            assert "Art_Check.v2" in page.inner_text("body")
            # the UI fetched nothing but its own server (previews travel inside the markdown)
            assert all(u.startswith((base, "data:", f"blob:{base}")) for u in log.requests), log.requests
    finally:
        server.stop(ws)
