"""A step's progress artifact never holds the step up when the Prefect API stops answering.

The server is a real loopback socket that accepts connections and never replies (a server
that hangs or died mid-request): Prefect's client retries such calls for minutes, and a
video render that reported its frames used to wait for each one (a run took 80 s to end
after its server died).
"""

from __future__ import annotations

import socket
import threading
import time
import uuid

import pytest


@pytest.fixture
def silent_api():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held, stop = [], threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])  # accepted, never answered
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}/api"
    stop.set()
    t.join()
    for c in held:
        c.close()
    srv.close()


def test_progress_reports_do_not_wait_for_an_api_that_does_not_answer(silent_api):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from depthcraft.flows.artifacts import ProgressArtifact

    with temporary_settings({PREFECT_API_URL: silent_api}):
        art = ProgressArtifact("clip[x]", uuid.uuid4(), uuid.uuid4(), interval=0.0, final_wait=1.0)
        t0 = time.monotonic()
        for i in range(1, 50):
            art(i, 50)
        middle = time.monotonic() - t0
        art(50, 50)  # the end: waited for, but only final_wait seconds
        end = time.monotonic() - t0
    assert middle < 0.5, f"49 reports took {middle:.1f} s"
    assert end < 3.0, f"the final report took {end - middle:.1f} s"
    assert art.id is None  # nothing was created: the API never answered


def test_no_report_is_sent_once_the_server_is_known_to_be_gone(monkeypatch):
    from depthcraft.flows import serverwatch
    from depthcraft.flows.artifacts import ProgressArtifact

    monkeypatch.setattr(serverwatch, "_lost", threading.Event())
    serverwatch._lost.set()
    art = ProgressArtifact("clip[x]", uuid.uuid4(), uuid.uuid4(), interval=0.0)
    art(1, 2)
    art(2, 2)
    assert art._thread is None  # no API call was even started
