"""The gallery of a run (index.html beside the manifest), looked at in headless Chromium.

The manifest here is written by hand over real files of every kind a run makes (8/16-bit PNG,
NPY depth, a wide stereo pair, RGBA layers, an H.264 video, a viewer page, a mesh, a sidecar)
plus a failed step and a failed input, so the page is checked on all of them at once without
running a flow (the recipes' own galleries are checked in test_recipes.py).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from browser import PageLog, launch, wait_until
from depthcraft.flows.gallery import THUMBS, write_gallery
from depthcraft.tasks.lib.store import sha256_file


def _video(path: Path, w=96, h=64, n=8):
    import imageio_ffmpeg

    gen = imageio_ffmpeg.write_frames(str(path), (w, h), fps=8, codec="libx264", pix_fmt_out="yuv420p",
                                      output_params=["-loglevel", "error"])
    gen.send(None)
    for i in range(n):
        gen.send(np.full((h, w, 3), 30 * i, np.uint8).tobytes())
    gen.close()


def make_run(folder: Path) -> dict:
    from depthcraft.tasks.viewer import ViewerParams, build_viewer

    out = folder / "out" / "demo" / "cat"
    out.mkdir(parents=True)
    rng = np.random.default_rng(0)
    photo = (rng.random((120, 160, 3)) * 255).astype(np.uint8)
    src = folder / "inputs" / "cat.png"
    src.parent.mkdir()
    Image.fromarray(photo).save(src)
    ramp = np.tile(np.linspace(0, 1, 160, dtype=np.float32), (120, 1))
    files = {
        ("depth", "main"): ("depth.png", lambda p: Image.fromarray((ramp * 255).astype(np.uint8)).save(p)),
        ("export", "png16"): ("export-png16.png", lambda p: Image.fromarray((ramp * 65535).astype(np.uint16)).save(p)),
        ("export", "npy"): ("export-npy.npy", lambda p: np.save(p, ramp)),
        ("export", "npy_meta"): ("export-npy.npy.json", lambda p: p.write_text('{"kind": "relative_inverse"}')),
        ("pair", "main"): ("pair.png", lambda p: Image.fromarray(np.hstack([photo, photo])).save(p)),
        ("planes", "layer_0"): ("planes-layer_0.png", lambda p: Image.fromarray(
            np.dstack([photo, (ramp * 255).astype(np.uint8)])).save(p)),
        ("video", "main"): ("video.mp4", _video),
        ("view", "main"): ("view.html", lambda p: p.write_text(build_viewer(photo, ramp, ViewerParams(), title="cat")[0])),
        ("model", "main"): ("model.glb", lambda p: p.write_bytes(b"glTF" + bytes(60))),
    }
    steps: dict[str, dict] = {}
    for (step, name), (fname, make) in files.items():
        p = out / fname
        make(p)
        node = steps.setdefault(step, {"step": step, "kind": step, "image": "cat", "status": "computed",
                                       "cached": False, "seconds": 0.5, "outputs": {}})
        node["outputs"][name] = {"path": str(p), "sha256": sha256_file(p), "kind": "image"}
    steps["video"]["status"], steps["video"]["cached"] = "cached", True
    nodes = list(steps.values()) + [{"step": "bokeh", "kind": "bokeh", "image": "cat", "status": "failed",
                                     "cached": False, "error": "bokeh <b>exploded</b>: focus point outside"}]
    return {
        "depthcraft_manifest": 1, "created": "2026-01-01T00:00:00+0000", "run_id": "r-1", "session_id": "demo-1",
        "recipe": {"name": "demo", "file": "/x/demo.yaml", "text": "", "sha256": "ab" * 32, "overrides": []},
        "provider": {"name": "classic", "mode": "max", "identities": {"classic": {"provider": "classic", "version": "2"}}},
        "inputs": [{"name": "cat", "origin": str(src), "sha256": sha256_file(src), "error": None},
                   {"name": "broken", "origin": "/x/broken.jpg", "sha256": None,
                    "error": "/x/broken.jpg: not an image (truncated)"}],
        "steps": nodes,
        "failures": [{"step": "bokeh", "image": "cat", "error": "bokeh <b>exploded</b>: focus point outside"},
                     {"step": None, "image": "broken", "error": "/x/broken.jpg: not an image (truncated)"}],
        "versions": {"depthcraft": "0.1.0"}, "duration_s": 3.2, "out_root": str(folder),
    }, out


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    root = tmp_path_factory.mktemp("gallery")
    m, out = make_run(root)
    index = write_gallery(m, out)
    return m, out, index


def test_gallery_page_links_only_relative(gallery):
    m, out, index = gallery
    page = index.read_text()
    assert index == out / "index.html"
    links = re.findall(r"""(?:src|href|poster)="([^"]*)\"""", page)
    assert links and all(not re.match(r"^[a-z]+:", u) or u.startswith("data:") for u in links)
    assert not any(u.startswith("/") for u in links)
    # every output is linked; escaping holds (an error's markup is shown, never interpreted)
    for n in m["steps"]:
        for o in (n.get("outputs") or {}).values():
            assert Path(o["path"]).name in page
    assert "bokeh &lt;b&gt;exploded&lt;/b&gt;" in page and "<b>exploded</b>" not in page
    assert "not an image (truncated)" in page
    assert 'iframe src="view.html"' in page and 'video src="video.mp4"' in page
    # thumbnails are content-addressed: a second write makes none anew and keeps them all
    before = {p.name: p.stat().st_mtime_ns for p in (out / THUMBS).iterdir()}
    write_gallery(m, out)
    assert {p.name: p.stat().st_mtime_ns for p in (out / THUMBS).iterdir()} == before


def test_gallery_in_chromium_shows_every_thumbnail(gallery, tmp_path):
    m, out, index = gallery
    # relative links only: the folder still works once moved elsewhere (zipped, served...)
    moved = tmp_path / "copy"
    shutil.copytree(out, moved)
    with launch() as browser:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        log = PageLog(page)
        page.goto((moved / "index.html").as_uri())
        wait_until(page, "document.readyState === 'complete'")
        imgs = page.evaluate("[...document.images].map(i => [i.getAttribute('src'), i.naturalWidth])")
        # input, depth, png16, npy, pair, layer: every one decoded (no broken image)
        assert len(imgs) >= 6 and all(w > 0 for _, w in imgs), imgs
        video = wait_until(page, """(() => { const v = document.querySelector('video');
            return v && v.readyState >= 1 ? [v.videoWidth, v.getAttribute('poster')] : null; })()""", timeout=30)
        assert video[0] == 96 and video[1].startswith(THUMBS + "/")
        assert page.evaluate("document.querySelector('iframe').getAttribute('src')") == "view.html"
        text = page.inner_text("body")
        assert "failed" in text and "focus point outside" in text and "broken" in text
        assert "demo-1" in text and "classic" in text and "cached" in text and "computed" in text
        shot = np.asarray(Image.open(__import__("io").BytesIO(page.screenshot(full_page=True))).convert("L"))
        assert shot.std() > 20  # thumbnails, not a blank page
        assert log.problems() == [], log.problems()
        assert all(u.startswith(moved.as_uri()) or u.startswith("data:") for u in log.requests)
