"""Shared fixtures: a real Prefect server on loopback, sample photos, and ../shared data.

The Prefect server is started once per test session (``prefect_server``) by the same code
that ``depthcraft run`` uses, with its SQLite database in a temporary workspace. Prefect reads
its settings when it is imported, so the fixture both exports ``PREFECT_API_URL`` (for
subprocesses) and enters ``temporary_settings`` (for this process).
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

# No test touches the internet: `provider: auto` (the default) never downloads in the suite, and
# finds an empty model cache rather than the developer's, so that it resolves to `classic` unless
# a test says otherwise (tests of the download delete DEPTHCRAFT_OFFLINE and serve on loopback).
# Set at import, before any test or subprocess starts, so that the CLI subprocesses inherit it.
os.environ["DEPTHCRAFT_OFFLINE"] = "1"
os.environ["DEPTHCRAFT_MODELS_DIR"] = _EMPTY_MODELS = tempfile.mkdtemp(prefix="depthcraft-test-models-")
atexit.register(shutil.rmtree, _EMPTY_MODELS, True)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DEPTHCRAFT = [sys.executable, "-m", "depthcraft.flows.cli"]


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    from depthcraft.flows import server
    from depthcraft.flows.workspace import Workspace

    ws = Workspace.default(tmp_path_factory.mktemp("prefect-server-ws"))
    st = server.start(ws, ui=False)
    server.hold_lease(ws)  # this test session uses it: no idle stop in the middle of a long session
    old = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = st["url"]
    from prefect.settings import PREFECT_API_URL, temporary_settings

    try:
        with temporary_settings(updates={PREFECT_API_URL: st["url"]}):
            yield st["url"]
    finally:
        # send what Prefect still holds (logs, events) before its server goes away, or the
        # interpreter's exit waits on retries to a closed port
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        for worker in (APILogWorker, EventsWorker):
            try:
                worker.drain_all(timeout=10)
            except Exception:  # noqa: BLE001 - best effort at teardown
                pass
        server.release_lease()
        server.stop(ws)
        if old is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = old


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A fresh workspace (store, sessions, results) for one test."""
    ws = tmp_path / "ws"
    monkeypatch.setenv("DEPTHCRAFT_HOME", str(ws))
    return ws


def settled_task_runs(run_id: str, count: int = 0, settle_s: float = 60.0) -> list:
    """The task runs of a flow run, once the API has at least ``count`` of them and all final.

    Prefect 3 records task-run states from events, a moment after the flow has returned: under
    load the server can still show a finished step as Running for a while. After ``settle_s``
    the runs are returned as they are (a state that never settles fails the caller's assert)."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    end = time.monotonic() + settle_s
    while True:
        with get_client(sync_client=True) as c:
            trs = c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
        if (len(trs) >= count and all(t.state is not None and t.state.is_final() for t in trs)) \
                or time.monotonic() > end:
            return trs
        time.sleep(0.5)


def save_photo(path: Path, rgb: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)
    return path


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> dict[str, Path]:
    """Real photos from scikit-image, written as files (small versions for speed)."""
    import cv2
    import skimage.data as d

    root = tmp_path_factory.mktemp("photos")
    out = {}
    for name, img in (("astronaut", d.astronaut()), ("chelsea", d.chelsea()), ("coffee", d.coffee())):
        small = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
        out[name] = save_photo(root / f"{name}.png", small)
    return out


def run_cli(*args, env=None, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    """Run the real ``depthcraft`` command line in a subprocess."""
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([*DEPTHCRAFT, *map(str, args)], capture_output=True, text=True, env=e, cwd=cwd,
                          timeout=timeout)


def shared_or_skip() -> Path:
    if not (SHARED / "data" / "stereo").exists():
        pytest.skip("../shared/data is not beside this checkout")
    return SHARED
