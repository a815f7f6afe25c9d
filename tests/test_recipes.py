"""Every bundled recipe runs as it is, offline, through Prefect, and produces what it says."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
OFFLINE = sorted(p for p in (REPO / "recipes").glob("*.yaml") if p.stem != "multiturn-eachsense")


@pytest.fixture(scope="module")
def shared_ws(tmp_path_factory):
    return tmp_path_factory.mktemp("recipes-ws")


def video_info(path: Path) -> tuple[tuple[int, int], int]:
    import imageio_ffmpeg

    gen = imageio_ffmpeg.read_frames(str(path))
    meta = next(gen)
    return meta["size"], sum(1 for _ in gen)


@pytest.mark.parametrize("recipe", OFFLINE, ids=lambda p: p.stem)
def test_recipe_runs_as_it_is(prefect_server, tmp_path, shared_ws, recipe):
    from depthcraft.flows.runner import run_recipe

    s = run_recipe(recipe, out_root=str(tmp_path), workspace=str(shared_ws))
    assert s["failures"] == [] and s["nodes"] > 0
    m = json.loads(Path(s["manifest"]).read_text())
    outputs = 0
    for node in m["steps"]:
        assert node["status"] in ("computed", "cached")
        for o in node["outputs"].values():
            p = Path(o["path"])
            assert p.is_file() and p.stat().st_size > 0
            assert hashlib.sha256(p.read_bytes()).hexdigest() == o["sha256"]
            outputs += 1
            if "segments" in node:  # a clip's step: every frame of the clip, in one file
                assert video_info(p)[1] == m["clips"][node["image"]]["frames"]
            elif p.suffix == ".mp4" and "mask" not in p.name:
                size, frames = video_info(p)
                assert frames == round(node["params"]["duration"] * node["params"]["fps"])
    assert outputs >= len(m["steps"])
    # every run can be looked at: its gallery beside the manifest, its artifacts in Prefect
    index = Path(s["manifest"]).parent / "index.html"
    assert s["gallery"] == str(index) and index.is_file()
    page = index.read_text()
    for node in m["steps"]:
        for o in node["outputs"].values():
            assert Path(o["path"]).name in page
    for src in re.findall(r'(?:src|poster)="([^"]+)"', page):
        assert not re.match(r"^[a-z]+:|^/", src) and (index.parent / src).is_file(), src
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as c:
        arts = c.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[s["run_id"]])))
    keys = {a.key for a in arts if a.key}
    assert {f"depthcraft-{recipe.stem}", f"depthcraft-{recipe.stem}-outputs"} <= keys


def test_showcase_outputs_follow_conventions(prefect_server, tmp_path, shared_ws):
    from depthcraft.flows.runner import run_recipe

    s = run_recipe(REPO / "recipes" / "showcase.yaml", out_root=str(tmp_path), workspace=str(shared_ws))
    out = tmp_path / "out" / "showcase" / "astronaut"
    photo = np.asarray(Image.open(REPO / "recipes" / "photos" / "astronaut.jpg"))
    depth = np.asarray(Image.open(out / "depth.png"))
    assert depth.dtype == np.uint8 and depth.shape == photo.shape[:2] and depth.max() == 255 and depth.min() == 0
    edges = np.asarray(Image.open(out / "edges.png"))
    assert edges.shape == depth.shape
    assert np.corrcoef(edges.ravel().astype(float), depth.ravel().astype(float))[0, 1] > 0.8
    pair = np.asarray(Image.open(out / "pair.png").convert("RGB"))
    assert pair.shape == (photo.shape[0], 2 * photo.shape[1], 3)
    assert not np.array_equal(pair[:, : photo.shape[1]], pair[:, photo.shape[1]:])  # two different eyes
    size, frames = video_info(out / "video.mp4")
    assert size == (photo.shape[1], photo.shape[0]) and frames == 4 * 30
    assert (out / "preview.png").exists() and (out / "manifest.json").exists()
    assert s["session_id"].startswith("showcase-")


def test_product_recipe_makes_the_viewer(prefect_server, tmp_path, shared_ws):
    """The e-commerce recipe's answer to "a 3D view for our website": one self-contained page."""
    from depthcraft.flows.runner import run_recipe

    run_recipe(REPO / "recipes" / "product-depth.yaml", out_root=str(tmp_path), workspace=str(shared_ws))
    view = tmp_path / "out" / "product-depth" / "coffee" / "view.html"
    page = view.read_text()
    assert page.count("data:image/jpeg;base64,") == 1 and page.count("data:image/png;base64,") == 1
    assert "default-src &#x27;none&#x27;" in page and '"intensity":0.035' in page
    assert 'src="view.html"' in (view.parent / "index.html").read_text()
