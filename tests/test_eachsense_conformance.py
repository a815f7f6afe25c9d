"""The eachsense provider against the independent reference server ../shared/fakes/each_sense_server.py.

The server runs as a subprocess on 127.0.0.1; faults are queued with ``POST /_control``. The
one-shot command of the issue is run as written (``depthcraft estimate PHOTO --provider
eachsense -o OUT.png``) when the ``depthcraft`` entry point is installed. Skipped when ../shared
is absent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import skimage.data
from PIL import Image

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FAKE = SHARED / "fakes" / "each_sense_server.py"
pytestmark = pytest.mark.skipif(not FAKE.exists(), reason="../shared/fakes/each_sense_server.py is absent")

from depthcraft.tasks.providers.eachsense import client as ec  # noqa: E402
from depthcraft.tasks.providers.base import DepthRequest  # noqa: E402
from depthcraft.tasks.providers.eachsense import EachSenseProvider  # noqa: E402


def _cli() -> str | None:
    exe = Path(sys.executable).parent / "depthcraft"
    return str(exe) if exe.exists() else shutil.which("depthcraft")


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    port_file = tmp_path_factory.mktemp("fake") / "port"
    proc = subprocess.Popen([sys.executable, str(FAKE), "--port", "0", "--port-file", str(port_file)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if port_file.exists() and port_file.read_text().strip():
                break
            if proc.poll() is not None:
                pytest.fail("the reference server did not start")
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port_file.read_text().strip()}"
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def env(fake, monkeypatch):
    httpx.post(f"{fake}/_control", json={"reset": True})
    vals = {"EACHLABS_API_KEY": "test-key", "EACHLABS_ORG": "org-test", "EACHSENSE_BASE_URL": fake,
            "EACHLABS_STORAGE_URL": fake, "EACHSENSE_POLL_INTERVAL": "0.05", "EACHSENSE_BACKOFF_BASE": "0.05"}
    for k, v in vals.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("EACHLABS_API_KEY_BLOCK", raising=False)
    return vals


def queue(base, *faults):
    httpx.post(f"{base}/_control", json={"faults": list(faults)}).raise_for_status()


def seen(base):
    return httpx.get(f"{base}/_requests").json()["requests"]


def chats(base):
    return [r for r in seen(base) if r["method"] == "POST" and r["path"] == "/chat"]


@pytest.fixture(scope="module")
def photo_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("photo") / "astronaut.png"
    Image.fromarray(skimage.data.astronaut()[::2, ::2]).save(p)  # 256x256
    return p


# ---- the provider ---------------------------------------------------------------------------------
def test_estimate_and_refine_in_one_session(env, fake):
    img = skimage.data.chelsea()
    p = EachSenseProvider()
    dm = p.estimate(DepthRequest(image=img, session_id="conf-chain", use_case="parallax"))
    assert dm.kind == "relative_inverse" and dm.shape == img.shape[:2]
    # the reference server's map is mostly a vertical ramp, white (near) at the bottom
    assert dm.data[-20:].mean() > dm.data[:20].mean() + 0.4
    refined = p.refine(DepthRequest(image=img, session_id="conf-chain", depth=dm))
    assert refined.shape == img.shape[:2] and refined.meta["session_id"] == "conf-chain"
    c = chats(fake)
    assert [x["body"]["session_id"] for x in c] == ["conf-chain", "conf-chain"]
    assert c[0]["headers"].get("X-API-Key") == "<redacted>" and c[0]["headers"].get("Accept") == "text/event-stream"
    assert c[0]["body"]["image_urls"][0].startswith(fake + "/files/")
    mem = p.client.memory("conf-chain")
    assert mem["total_exchanges"] == 2
    puts = [r for r in seen(fake) if r["method"] == "PUT"]
    assert len(puts) == 2 and all("X-API-Key" not in r["headers"] for r in puts)


@pytest.mark.parametrize("fault", ["http_429", "http_500", "http_502", "http_503", "http_504", "drop",
                                   "malformed", "unknown_event", "session_busy"])
def test_transient_faults_still_succeed(env, fake, fault):
    queue(fake, fault)
    dm = EachSenseProvider().estimate(DepthRequest(image=skimage.data.coffee(), session_id=f"conf-{fault}"))
    assert dm.shape == (400, 600)
    c = chats(fake)
    assert {x["body"]["session_id"] for x in c} == {f"conf-{fault}"}
    # drop: the reference server had finished; the session memory gives the result back
    assert len(c) == {"http_429": 2, "http_500": 2, "http_502": 2, "http_503": 2, "http_504": 2,
                      "session_busy": 2}.get(fault, 1)


@pytest.mark.parametrize("fault,cls,text", [("balance", ec.BalanceError, "top up"),
                                            ("error_event", ec.GenerationError, "Model returned error"),
                                            ("clarify", ec.ClarificationNeeded, "Which output format")])
def test_permanent_faults_fail_at_once(env, fake, fault, cls, text):
    queue(fake, fault)
    with pytest.raises(cls, match=text):
        EachSenseProvider().estimate(DepthRequest(image=skimage.data.coffee(), session_id=f"conf-{fault}"))
    assert len(chats(fake)) == 1


def test_clarification_answered_from_the_recipe(env, fake):
    queue(fake, "clarify")
    dm = EachSenseProvider().estimate(DepthRequest(image=skimage.data.coffee(), session_id="conf-ans",
                                                   answers={"output format": 1}))
    c = chats(fake)
    assert dm.shape == (400, 600) and c[1]["body"]["message"] == "Grayscale (white = near)"
    assert c[0]["body"]["session_id"] == c[1]["body"]["session_id"]


def test_image_limits(env, fake):
    client = ec.EachSenseClient.from_env()
    tiny = np.zeros((32, 32, 3), np.uint8)
    import io

    buf = io.BytesIO()
    Image.fromarray(tiny).save(buf, format="PNG")
    url = client.upload(buf.getvalue())
    with pytest.raises(ec.ImageRejectedError, match="below minimum 64x64"):
        client.chat("depth map", session_id="conf-lim", image_urls=[url])
    with pytest.raises(ec.InvalidRequestError, match="Maximum 4 images"):
        client.chat("depth map", session_id="conf-lim", image_urls=[url] * 5, validate=False)
    assert len(chats(fake)) == 2


def test_slow_stream_over_the_read_timeout(env, fake):
    # the reference server has finished the job when it starts streaming: the timed-out turn is
    # found in the session memory, not asked (and paid) again
    queue(fake, "slow")
    client = ec.EachSenseClient.from_env(read_timeout=0.5, max_retries=1)
    dm = EachSenseProvider(client).estimate(DepthRequest(image=skimage.data.coffee(), session_id="conf-slow"))
    assert dm.meta.get("recovered_from_memory") is True and len(chats(fake)) == 1
    # without the memory lookup, the timeout is retried and then reported
    queue(fake, "slow", "slow")
    client = ec.EachSenseClient.from_env(read_timeout=0.5, max_retries=1, recover_from_memory=False)
    with pytest.raises(ec.StreamTimeoutError, match="EACHSENSE_READ_TIMEOUT"):
        EachSenseProvider(client).estimate(DepthRequest(image=skimage.data.coffee(), session_id="conf-slow2"))
    assert len(chats(fake)) == 3


# ---- the command of the issue -------------------------------------------------------------------
def _run(env, photo_file, out, **extra):
    cli = _cli()
    if cli is None:
        pytest.skip("the depthcraft command is not installed")
    e = {**os.environ, **env, **extra}
    t = time.monotonic()
    r = subprocess.run([cli, "estimate", str(photo_file), "--provider", "eachsense", "-o", str(out)],
                       capture_output=True, text=True, env=e, timeout=120)
    return r, time.monotonic() - t


@pytest.mark.parametrize("faults", [[], ["http_429"], ["http_503"], ["drop"], ["http_429", "http_503", "drop"]])
def test_cli_succeeds_through_transient_faults(env, fake, photo_file, tmp_path, faults):
    queue(fake, *faults)
    out = tmp_path / "OUT.png"
    r, _ = _run(env, photo_file, out)
    assert r.returncode == 0, r.stderr
    a = np.asarray(Image.open(out))
    assert a.shape == (256, 256) and a.dtype == np.uint8 and a[-10:].mean() > a[:10].mean()
    assert "test-key" not in r.stdout + r.stderr


@pytest.mark.parametrize("how", ["balance", "poor-key"])
def test_cli_fails_at_once_on_balance(env, fake, photo_file, tmp_path, how):
    extra = {}
    if how == "balance":
        queue(fake, "balance")
    else:
        extra["EACHLABS_API_KEY"] = "poor-key"
    out = tmp_path / "OUT.png"
    r, seconds = _run(env, photo_file, out, EACHSENSE_BACKOFF_BASE="2", **extra)
    assert r.returncode != 0 and not out.exists()
    assert "insufficient balance" in r.stderr and "top up" in r.stderr and "request id" in r.stderr
    assert len(chats(fake)) == 1  # no retry
    assert "poor-key" not in r.stdout + r.stderr


def test_cli_invalid_and_missing_key(env, fake, photo_file, tmp_path):
    out = tmp_path / "OUT.png"
    r, _ = _run(env, photo_file, out, EACHLABS_API_KEY="nope-not-a-key")
    assert r.returncode != 0 and "refused" in r.stderr and "EACHLABS_API_KEY" in r.stderr
    assert "nope-not-a-key" not in r.stderr
    assert len([x for x in seen(fake) if x["method"] == "POST" and x["path"].startswith("/api/v1/uploads")]) == 1
    assert chats(fake) == []  # the upload was refused first; nothing retried
    r, _ = _run(env, photo_file, out, EACHLABS_API_KEY="")
    assert r.returncode != 0 and "no API key" in r.stderr and "EACHLABS_API_KEY" in r.stderr
