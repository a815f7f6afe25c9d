"""The viewer page: one self-contained file that moves with depth in a real browser.

A synthetic scene with known depth (a textured near square over a textured background ramp)
is rendered by headless Chromium (WebGL on SwiftShader) at two camera offsets set through the
URL fragment; the optical flow between the two screenshots (Farneback) must be what the depth
says, pixel band by pixel band.
"""

from __future__ import annotations

import re
from html import unescape
import time

import cv2
import numpy as np
import pytest

from browser import PageLog, launch, wait_until
from conftest import REPO, run_cli
from depthcraft.tasks.viewer import ViewerParams, build_viewer

W, H = 320, 240
SQUARE = (70, 170, 120, 220)  # y0, y1, x0, x1
RAMP = 0.3  # background nearness goes 0 -> RAMP from left to right


def _texture(rng, h, w, colour) -> np.ndarray:
    n = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 1.2)
    n = (n - n.min()) / (n.max() - n.min())
    return (np.array(colour, np.float32)[None, None] * (0.35 + 0.65 * n[..., None])).astype(np.uint8)


def scene() -> tuple[np.ndarray, np.ndarray]:
    """(uint8 RGB HxWx3, nearness float32 HxW): blue background ramp, red near square."""
    rng = np.random.default_rng(1)
    img = _texture(rng, H, W, (60, 110, 255))
    near = np.tile(np.linspace(0.0, RAMP, W, dtype=np.float32), (H, 1))
    y0, y1, x0, x1 = SQUARE
    img[y0:y1, x0:x1] = _texture(rng, y1 - y0, x1 - x0, (255, 90, 40))
    near[y0:y1, x0:x1] = 1.0
    return img, near


@pytest.fixture(scope="module")
def page_file(tmp_path_factory):
    img, near = scene()
    html, facts = build_viewer(img, near, ViewerParams(fit="cover"), title="scene")
    p = tmp_path_factory.mktemp("viewer") / "scene.html"
    p.write_text(html, encoding="utf-8")
    return p, html, facts


@pytest.fixture(scope="module")
def chromium():
    with launch() as b:
        yield b


def _open(browser, url: str, *, cam: str | None = None, **ctx):
    page = browser.new_page(viewport={"width": W, "height": H}, **ctx)
    log = PageLog(page)
    page.goto(url)
    wait_until(page, "document.documentElement.dataset.state !== 'loading'", timeout=90)
    if cam is not None:
        wait_until(page, f"document.documentElement.dataset.cam === {cam!r}", timeout=30)
    return page, log


def _shot(page) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(page.screenshot(), np.uint8), cv2.IMREAD_COLOR)[..., ::-1]


def test_pixels_move_by_what_the_depth_says(chromium, page_file):
    path, _, _ = page_file
    intensity = 0.05
    shots = []
    for x in (0, 1):  # focus 0: the farthest plane stays still, everything nearer moves
        page, log = _open(chromium, f"{path.as_uri()}#x={x}&y=0&focus=0&intensity={intensity}",
                          cam=f"{x:.3f},0.000,0.000")
        assert page.evaluate("document.documentElement.dataset.state") == "ready"
        shots.append(_shot(page))
        assert log.problems() == [], log.problems()
        page.close()
    a, b = (cv2.cvtColor(s, cv2.COLOR_RGB2GRAY) for s in shots)
    flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 4, 21, 5, 7, 1.5, 0)
    fx, fy = flow[..., 0], flow[..., 1]
    # at x = 0 the page shows the photo zoomed about its centre by the overscan the page
    # computes (the largest shift it allows for, at focus 0: intensity x width x aspect)
    zoom = 1 / (1 - 2 * intensity * max(1, W / H, 1 + 0.15 * W / H))
    img, near = scene()
    m = np.array([[zoom, 0, W / 2 * (1 - zoom)], [0, zoom, H / 2 * (1 - zoom)]], np.float32)
    seen = cv2.warpAffine(near, m, (W, H), flags=cv2.INTER_LINEAR)
    predicted = -seen * intensity * W * zoom  # camera to the right: nearer surfaces move left
    ok = np.zeros((H, W), bool)
    ok[12:-12, 12:-12] = True
    edges = np.abs(cv2.Laplacian(seen, cv2.CV_32F)) > 0.05
    ok &= ~cv2.dilate(edges.astype(np.uint8), np.ones((25, 25), np.uint8)).astype(bool)
    near_band, far_band = ok & (seen > 0.8), ok & (seen < 0.35)
    assert near_band.sum() > 2000 and far_band.sum() > 20000
    near_dx, far_dx = np.median(fx[near_band]), np.median(fx[far_band])
    assert near_dx == pytest.approx(np.median(predicted[near_band]), abs=1.0)  # about -18.5 px
    assert far_dx == pytest.approx(np.median(predicted[far_band]), abs=1.0)
    assert abs(near_dx) > 4 * abs(far_dx)
    # band by band along the background ramp, and over the whole picture
    for lo in (0.0, 0.1, 0.2):
        band = ok & (seen >= lo) & (seen < lo + 0.1)
        assert np.median(fx[band]) == pytest.approx(np.median(predicted[band]), abs=0.6), lo
    assert np.corrcoef(fx[ok], predicted[ok])[0, 1] > 0.95
    assert np.abs(np.median(fy[ok])) < 0.3  # a sideways camera moves nothing vertically


def test_near_surfaces_occlude_and_holes_show_background(chromium, page_file):
    """The square slides over the background without tearing; the strip it uncovers shows
    background (blue), not a smear of the square's edge (red)."""
    path, _, _ = page_file
    page, log = _open(chromium, f"{path.as_uri()}#x=1&y=0&focus=0&intensity=0.06", cam="1.000,0.000,0.000")
    rgb = _shot(page).astype(int)
    page.close()
    zoom = 1 / (1 - 2 * 0.06 * max(1, W / H, 1 + 0.15 * W / H))
    shift = 0.06 * W * zoom
    y0, y1, x0, x1 = SQUARE
    cx, cy = W / 2, H / 2
    sx0, sx1 = (cx + (x0 - cx) * zoom - shift), (cx + (x1 - cx) * zoom - shift)  # the square, moved
    sy0, sy1 = cy + (y0 - cy) * zoom, cy + (y1 - cy) * zoom
    red = rgb[..., 0] > rgb[..., 2]
    inside = red[int(sy0) + 4:int(sy1) - 4, int(sx0) + 4:int(sx1) - 4]
    assert inside.mean() > 0.98  # the near square is whole where it moved to
    hole = red[int(sy0) + 4:int(sy1) - 4, int(sx1) + 3:int(sx1 + shift) - 3]  # uncovered strip
    assert hole.size > 500 and hole.mean() < 0.03
    assert log.problems() == []


def test_no_request_leaves_the_page_and_the_code_is_small(chromium, page_file):
    path, html, facts = page_file
    # nothing in the file points outside it
    assert not re.search(r"https?:|//\w", re.sub(r"data:[^\"']+", "", html))
    assert re.findall(r"""(?:src|href)\s*=\s*["'](?!data:)""", html) == []
    assert "Content-Security-Policy" in html and "default-src 'none'" in unescape(html)
    assert facts["code_bytes"] < 100_000
    page, log = _open(chromium, path.as_uri())
    page.wait_for_timeout(500)
    assert log.requests == [path.as_uri()]
    # the policy really is in force: a script that tries to fetch is refused
    blocked = page.evaluate("""() => new Promise(ok => {
        document.addEventListener('securitypolicyviolation', e => ok(e.effectiveDirective));
        const i = new Image(); i.onload = () => ok('loaded');
        i.src = 'http://127.0.0.1:9/x.png'; })""")
    assert blocked == "img-src"
    page.close()


def test_draws_only_when_the_camera_moves(chromium, page_file):
    path, _, _ = page_file
    page, log = _open(chromium, f"{path.as_uri()}#x=0.5&y=-0.5", cam="0.500,-0.500,0.000")
    n = int(page.evaluate("document.documentElement.dataset.frames"))
    page.wait_for_timeout(1200)
    assert int(page.evaluate("document.documentElement.dataset.frames")) == n  # still camera: no redraw
    page.close()
    # no fragment: the idle loop moves the camera, and so frames are drawn
    page, log = _open(chromium, path.as_uri() + "#period=2")
    f0, c0 = page.evaluate("[document.documentElement.dataset.frames, document.documentElement.dataset.cam]")
    page.wait_for_timeout(800)
    f1, c1 = page.evaluate("[document.documentElement.dataset.frames, document.documentElement.dataset.cam]")
    assert int(f1) > int(f0) and c1 != c0
    # the pointer takes over from the loop
    page.mouse.move(W - 1, H / 2)
    wait_until(page, "parseFloat(document.documentElement.dataset.cam) > 0.95", timeout=20)
    assert log.problems() == []
    page.close()


def test_canvas_follows_container_and_pixel_ratio(chromium, page_file):
    path, _, _ = page_file
    page, log = _open(chromium, f"{path.as_uri()}#x=0&y=0", cam="0.000,0.000,0.000", device_scale_factor=2)
    size = page.evaluate("[document.getElementById('dc-canvas').width, document.getElementById('dc-canvas').height]")
    assert size == [2 * W, 2 * H]
    page.set_viewport_size({"width": 200, "height": 100})
    wait_until(page, "document.getElementById('dc-canvas').width === 400", timeout=30)
    assert page.evaluate("document.getElementById('dc-canvas').height") == 200
    page.close()


def test_without_webgl_the_photo_shows(page_file):
    path, _, _ = page_file
    img, _ = scene()
    with launch(webgl=False) as b:
        page, log = _open(b, path.as_uri())
        state, reason, nat = page.evaluate("""[document.documentElement.dataset.state,
            document.documentElement.dataset.reason, document.getElementById('dc-photo').naturalWidth]""")
        shot = _shot(page)
        assert log.problems() == []
    assert state == "fallback" and reason and nat == W
    # what is on screen is the photo (the page fits it to the viewport, the same aspect here)
    assert np.abs(shot.astype(int) - img.astype(int)).mean() < 12


def test_one_shot_command_writes_one_page(tmp_path):
    photo = REPO / "recipes" / "photos" / "coffee.jpg"
    out = tmp_path / "view.html"
    r = run_cli("viewer", photo, "-o", out, "--intensity", "0.05", "--depth-bits", "16")
    assert r.returncode == 0, r.stderr
    html = out.read_text()
    assert '"intensity":0.05' in html and '"bits":16' in html
    assert [p.name for p in tmp_path.iterdir()] == ["view.html"]
    # with a given depth map, no estimate runs
    depth = tmp_path / "d.png"
    cv2.imwrite(str(depth), np.tile(np.linspace(0, 255, 600).astype(np.uint8), (400, 1)))
    t = time.time()
    r = run_cli("viewer", photo, "--depth", depth, "-o", tmp_path / "v2.html")
    assert r.returncode == 0, r.stderr
    # bad output suffix: one clear line, nothing written
    r = run_cli("viewer", photo, "-o", tmp_path / "v.png")
    assert r.returncode != 0 and "HTML" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "v.png").exists()
    assert time.time() - t < 120
