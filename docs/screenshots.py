"""Regenerate the README's screenshots of the viewer, a run's gallery and the Prefect UI's
artifact page, with headless Chromium (Debian's ``chromium`` driven by Playwright).

    depthcraft run recipes/product-depth.yaml --out /tmp/shots   # against a server with its UI
    python docs/screenshots.py /tmp/shots/out/product-depth/coffee http://127.0.0.1:PORT
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from browser import launch, wait_until  # noqa: E402


def main(run_folder: str, server: str | None = None) -> None:
    folder = Path(run_folder).resolve()
    img = HERE / "img"
    with launch() as b:
        page = b.new_page(viewport={"width": 900, "height": 600})
        page.goto((folder / "view.html").as_uri() + "#x=0.8&y=-0.3&intensity=0.05")
        wait_until(page, "document.documentElement.dataset.state === 'ready'", timeout=120)
        page.screenshot(path=str(img / "viewer.png"))
        page = b.new_page(viewport={"width": 1200, "height": 900})
        page.goto((folder / "index.html").as_uri())
        wait_until(page, "[...document.images].every(i => i.complete)", timeout=60)
        for frame in page.frames[1:]:  # the embedded viewers draw their first frames
            wait_until(frame, "document.documentElement.dataset.state === 'ready'", timeout=120)
        # a viewport as tall as the page rather than full_page=True: headless Chromium captures
        # WebGL canvases beyond the viewport as black
        page.set_viewport_size({"width": 1200, "height": page.evaluate("document.documentElement.scrollHeight")})
        time.sleep(2)
        page.screenshot(path=str(img / "gallery.png"))
        if server:
            import httpx

            arts = httpx.post(f"{server}/api/artifacts/filter", json={"artifacts": {"key": {"any_": [
                f"depthcraft-{folder.parent.name}"]}}, "sort": "CREATED_DESC", "limit": 1}).json()
            page = b.new_page(viewport={"width": 1300, "height": 1000})
            page.goto(f"{server}/artifacts/artifact/{arts[0]['id']}")
            wait_until(page, "[...document.images].filter(i => i.src.startsWith('data:')).length > 0", timeout=120)
            time.sleep(2)
            page.screenshot(path=str(img / "prefect_artifact.png"))


if __name__ == "__main__":
    main(*sys.argv[1:])
