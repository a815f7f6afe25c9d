"""The eachsense provider against our own loopback server (tests/eachsense_server.py).

Checks what the client sends (headers, body, uploads, session continuity), which failures are
retried and which are not, the error messages, and that the API key never leaks.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import threading
import time

import httpx
import numpy as np
import pytest
import skimage.data
from PIL import Image

from depthcraft.tasks.lib.errors import InputError, ProviderError
from depthcraft.tasks.providers.eachsense import client as ec
from depthcraft.tasks.providers import get_provider
from depthcraft.tasks.providers.base import DepthRequest
from depthcraft.tasks.providers.eachsense import EachSenseProvider, decode_depth, find_answer
from depthcraft.tasks.providers.eachsense.client import EachSenseClient, iter_sse, parse_retry_after
from eachsense_server import EachSenseTestServer, ramp_nearness

SECRET = "sk-live-TOPSECRET-7f3a9c"


@pytest.fixture(scope="module")
def server():
    srv = EachSenseTestServer(keys={"good-key": "ok", "broke-key": "balance", SECRET: "ok"})
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def srv(server, monkeypatch):
    server.reset()
    monkeypatch.setenv("EACHLABS_API_KEY", "good-key")
    monkeypatch.setenv("EACHLABS_ORG", "org-test")
    monkeypatch.setenv("EACHSENSE_BASE_URL", server.base_url)
    monkeypatch.setenv("EACHLABS_STORAGE_URL", server.base_url)
    monkeypatch.delenv("EACHLABS_API_KEY_BLOCK", raising=False)
    monkeypatch.setenv("EACHSENSE_BACKOFF_BASE", "0.01")  # for providers built from the environment
    monkeypatch.setenv("EACHSENSE_POLL_INTERVAL", "0.01")
    return server


class Sleeps(list):
    """Records the retry delays instead of waiting them out."""

    def __call__(self, s):
        self.append(s)


def make(**kw):
    sleeps = kw.pop("sleep", None) or Sleeps()
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("poll_interval", 0.01)
    client = EachSenseClient.from_env(sleep=sleeps, **kw)
    return EachSenseProvider(client), sleeps


def photo(w=160, h=120, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


def corr(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


# ---- the normal path -----------------------------------------------------------------------------
def test_estimate_uploads_then_chats_and_returns_white_near_depth(srv):
    p, sleeps = make()
    img = photo()
    dm = p.estimate(DepthRequest(image=img, session_id="sess-1", mode="eco", use_case="portrait"))
    assert dm.kind == "relative_inverse" and dm.shape == (120, 160) and dm.data.dtype == np.float32
    assert 0.0 <= dm.data.min() and dm.data.max() <= 1.0
    # the server's nearness grows down the image: white = near read back as larger = nearer
    assert corr(dm.data, ramp_nearness(160, 120)) > 0.99
    assert dm.meta["session_id"] == "sess-1" and dm.meta["request_id"].startswith("req_test_")
    assert dm.source == "eachsense/test-depth-v1"
    # storage: initiate with the documented fields, PUT with exactly the required headers, polls
    init = srv.of("POST", "/api/v1/uploads")
    assert len(init) == 1
    assert init[0]["body"] == {"owner": "org-test", "uploader": "customer", "file_type": "image",
                               "content_type": "image/png"}
    assert init[0]["headers"]["x-api-key"] == "good-key"
    put = srv.of("PUT", "/presigned/")
    assert len(put) == 1
    assert set(put[0]["headers"]) == {"host", "content-length", "content-type", "x-amz-meta-origin"}
    assert len(srv.of("GET", "/api/v1/uploads/")) >= 2  # polled until COMPLETED
    # chat: both key headers, SSE accept, the documented body
    (chat,) = srv.chats()
    h = chat["headers"]
    assert h["x-api-key"] == "good-key" and h["authorization"] == "Bearer good-key"
    assert h["accept"] == "text/event-stream" and h["content-type"] == "application/json"
    b = chat["body"]
    assert b["session_id"] == "sess-1" and b["mode"] == "eco" and b["stream"] is True
    assert b["image_urls"][0].startswith(srv.base_url + "/files/")
    assert "portrait" in b["message"] and "white = near" in b["message"]
    # the download of the generated file carries no key (it may live on any host)
    (dl,) = srv.of("GET", "/outputs/")
    assert "x-api-key" not in dl["headers"] and "authorization" not in dl["headers"]
    assert sleeps == []


def test_url_inputs_are_passed_through_not_uploaded(srv):
    img = photo(100, 80)
    out = io.BytesIO()
    Image.fromarray(img).save(out, format="PNG")
    srv.outputs["public-cat.png"] = out.getvalue()
    url = f"{srv.base_url}/public/cat.png"
    p, _ = make()
    dm = p.estimate(DepthRequest(image=img, image_path=url, session_id="s-url"))
    assert dm.shape == (80, 100)
    assert srv.of("POST", "/api/v1/uploads") == [] and srv.of("PUT", "/") == []
    assert srv.chats()[0]["body"]["image_urls"] == [url]


def test_multiturn_refine_continues_the_session_and_reuses_the_upload(srv):
    p, _ = make()
    img = photo(200, 160)
    first = p.estimate(DepthRequest(image=img, session_id="chain-7", use_case="parallax"))
    refined = p.refine(DepthRequest(image=img, session_id="chain-7", depth=first))
    c1, c2 = srv.chats()
    assert c1["body"]["session_id"] == c2["body"]["session_id"] == "chain-7"
    assert "edges around the main subject" in c2["body"]["message"].lower()
    # the photo is uploaded once; the refinement adds the current depth map as a second image
    assert c2["body"]["image_urls"][0] == c1["body"]["image_urls"][0]
    assert len(c2["body"]["image_urls"]) == 2
    assert len(srv.of("POST", "/api/v1/uploads")) == 2
    assert refined.shape == (160, 200) and refined.meta["session_id"] == "chain-7"
    # the refined map is a different answer (the server adds a near disc in the centre)
    assert refined.data[80, 100] > first.data[80, 100] + 0.3
    assert srv.generated == 2


def test_refine_with_own_message_and_without_depth(srv):
    p, _ = make()
    img = photo()
    base = p.estimate(DepthRequest(image=img, session_id="s-r"))
    p.refine(DepthRequest(image=img, session_id="s-r", depth=base, message="sharpen the edges of the cat",
                          options={"send_depth": False, "service_session": base.meta["service_session"]}))
    body = srv.chats()[-1]["body"]
    assert body["message"] == "sharpen the edges of the cat" and len(body["image_urls"]) == 1
    # no service session holding this photo's depth (a local estimate): the depth map goes along
    p.refine(DepthRequest(image=img, session_id="s-r2", depth=base, options={"send_depth": False}))
    assert len(srv.chats()[-1]["body"]["image_urls"]) == 2


def test_metric_request_reads_millimeter_png_as_meters(srv):
    p, _ = make()
    dm = p.estimate(DepthRequest(image=photo(), session_id="s-m", output="metric"))
    assert "meters" in srv.chats()[0]["body"]["message"]
    assert dm.kind == "metric"
    assert 0.99 < float(np.nanmin(dm.data)) and float(np.nanmax(dm.data)) < 10.01
    assert dm.data[-1].mean() < dm.data[0].mean()  # the bottom is near: fewer meters


@pytest.mark.parametrize("how", ["message", "answer"])
def test_black_near_answers_are_flipped_to_larger_nearer(srv, how):
    p, _ = make()
    if how == "message":
        req = DepthRequest(image=photo(), session_id="s-inv", message="Depth map please, black = near.")
    else:
        srv.chat_faults.append("says_inverse")
        req = DepthRequest(image=photo(), session_id="s-inv2")
    dm = p.estimate(req)
    assert corr(dm.data, ramp_nearness(160, 120)) > 0.99


def test_colour_answer_and_text_only_answer_fail_clearly(srv):
    p, _ = make()
    srv.chat_faults.append("colour")
    with pytest.raises(ec.GenerationError, match="colour image"):
        p.estimate(DepthRequest(image=photo(), session_id="s-c"))
    srv.chat_faults.append("text_only")
    with pytest.raises(ec.GenerationError, match="no depth map in the answer.*Please send an image"):
        p.estimate(DepthRequest(image=photo(), session_id="s-c"))


# ---- retried faults ------------------------------------------------------------------------------
def test_429_waits_at_least_retry_after_and_reuses_the_session(srv):
    srv.chat_faults.append("http_429")
    p, sleeps = make()
    dm = p.estimate(DepthRequest(image=photo(), session_id="s-429"))
    assert dm.shape == (120, 160)
    c = srv.chats()
    assert len(c) == 2 and {x["body"]["session_id"] for x in c} == {"s-429"}
    assert len(sleeps) == 1 and sleeps[0] >= 1.0  # Retry-After: 1, though the backoff is 0.01 s
    assert srv.generated == 1


def test_429_in_real_time_honours_retry_after(srv):
    srv.chat_faults.append("http_429")
    p, _ = make(sleep=time.sleep)
    t = time.monotonic()
    p.estimate(DepthRequest(image=photo(), session_id="s-429b"))
    assert time.monotonic() - t >= 1.0


@pytest.mark.parametrize("fault", ["http_503", "http_500", "http_502", "http_504", "http_408",
                                   "session_busy", "rate_limited_event"])
def test_transient_failures_are_retried(srv, fault):
    srv.chat_faults.append(fault)
    p, sleeps = make()
    p.estimate(DepthRequest(image=photo(), session_id=f"s-{fault}"))
    assert len(srv.chats()) == 2 and len(sleeps) == 1 and srv.generated == 1


def test_backoff_grows_and_gives_up_with_a_clear_message(srv):
    srv.chat_faults.extend(["http_503"] * 3)
    p, sleeps = make(max_retries=2, backoff_base=0.1)
    with pytest.raises(ec.ServiceUnavailableError) as ei:
        p.estimate(DepthRequest(image=photo(), session_id="s-giveup"))
    msg = str(ei.value)
    assert "gave up after 3 attempts" in msg and "wait" in msg and "request id req_test_" in msg
    assert len(srv.chats()) == 3
    assert 0.05 <= sleeps[0] <= 0.1 and 0.1 <= sleeps[1] <= 0.2  # base * 2**n, jittered


def test_huge_retry_after_fails_at_once_saying_how_long_to_wait(srv):
    srv.chat_faults.append("http_429")
    srv.retry_after = "9000"
    p, sleeps = make()
    with pytest.raises(ec.RateLimitError, match="wait 9000 s"):
        p.estimate(DepthRequest(image=photo(), session_id="s-ra"))
    assert len(srv.chats()) == 1 and sleeps == []


def recovery_lookups(srv) -> list[dict]:
    """Memory lookups after the first chat request: the ones that recover an interrupted turn
    (before it, the session planner reads how many messages a service session holds)."""
    first = min((r["t"] for r in srv.chats()), default=float("inf"))
    return [r for r in srv.of("GET", "/memory") if r["t"] > first]


def test_stream_dropped_before_the_service_did_anything_is_asked_again(srv):
    srv.chat_faults.append("drop_before_record")
    p, sleeps = make()
    dm = p.estimate(DepthRequest(image=photo(), session_id="s-drop1"))
    assert dm.shape == (120, 160)
    assert len(srv.chats()) == 2 and len(recovery_lookups(srv)) == 1
    assert {c["body"]["session_id"] for c in srv.chats()} == {"s-drop1"}
    assert srv.generated == 1


def test_stream_dropped_after_the_service_finished_is_recovered_without_paying_twice(srv):
    srv.chat_faults.append("drop_after_record")
    p, sleeps = make()
    dm = p.estimate(DepthRequest(image=photo(), session_id="s-drop2"))
    assert corr(dm.data, ramp_nearness(160, 120)) > 0.99
    assert len(srv.chats()) == 1 and srv.generated == 1 and sleeps == []
    assert dm.meta["recovered_from_memory"] is True


def test_memory_recovery_never_hands_back_an_earlier_images_result(srv):
    # batch: same session, same message; the second request drops before anything happened, so
    # the memory's last exchange (same prompt) belongs to the first image and must not be used
    p, _ = make()
    p.estimate(DepthRequest(image=photo(160, 120, 1), session_id="batch"))
    srv.chat_faults.append("drop_before_record")
    dm = p.estimate(DepthRequest(image=photo(90, 200, 2), session_id="batch"))
    assert len(srv.chats()) == 3 and srv.generated == 2
    assert "recovered_from_memory" not in dm.meta and dm.shape == (200, 90)


def test_memory_recovery_can_be_switched_off(srv):
    srv.chat_faults.append("drop_after_record")
    p, _ = make(recover_from_memory=False)
    p.estimate(DepthRequest(image=photo(), session_id="s-norec"))
    assert len(srv.chats()) == 2 and recovery_lookups(srv) == []


def test_stream_dropped_after_generation_uses_the_delivered_url(srv):
    srv.chat_faults.append("drop_after_generation")
    p, sleeps = make()
    dm = p.estimate(DepthRequest(image=photo(), session_id="s-drop3"))
    assert dm.shape == (120, 160)
    assert len(srv.chats()) == 1 and recovery_lookups(srv) == [] and sleeps == []


def test_complete_without_done_is_a_finished_stream(srv):
    srv.chat_faults.append("no_done")
    p, sleeps = make()
    p.estimate(DepthRequest(image=photo(), session_id="s-nodone"))
    assert len(srv.chats()) == 1 and sleeps == []


def test_slow_stream_hits_the_read_timeout_then_fails_clearly(srv):
    srv.chat_faults.extend(["slow", "slow"])
    srv.slow_delay = 1.0
    p, sleeps = make(read_timeout=0.3, max_retries=1)
    with pytest.raises(ec.StreamTimeoutError) as ei:
        p.estimate(DepthRequest(image=photo(), session_id="s-slow"))
    assert "EACHSENSE_READ_TIMEOUT" in str(ei.value) and "gave up after 2 attempts" in str(ei.value)
    assert len(srv.chats()) == 2


def test_a_stream_of_progress_events_that_never_finishes_hits_the_stream_deadline(srv):
    """The read timeout times silence only: a stream that keeps saying "still working" and never
    sends its result used to hold the run for ever."""
    srv.chat_faults.extend(["trickle", "trickle"])
    p, _ = make(read_timeout=5.0, stream_deadline=0.5, max_retries=1)
    t0 = time.monotonic()
    with pytest.raises(ec.StreamTimeoutError) as ei:
        p.estimate(DepthRequest(image=photo(), session_id="s-trickle"))
    assert "EACHSENSE_STREAM_DEADLINE" in str(ei.value) and "gave up after 2 attempts" in str(ei.value)
    assert len(srv.chats()) == 2
    assert time.monotonic() - t0 < 30  # (each attempt ends at its deadline, not at the stream's end)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.invalid/d.png", "data:image/png;base64,AA"])
def test_a_generated_file_at_a_url_that_is_not_http_is_refused_at_once(srv, url):
    client = EachSenseClient.from_env(sleep=(sleeps := Sleeps()), backoff_base=0.01)
    with pytest.raises(ec.GenerationError, match="not http"):
        client.download(url)
    assert sleeps == []  # (was: a "network error", retried 4 times)


def test_malformed_lines_and_unknown_events_are_logged_and_skipped(srv, caplog):
    srv.chat_faults.extend(["malformed", "unknown_event"])
    p, _ = make()
    with caplog.at_level(logging.INFO, logger="depthcraft.eachsense"):
        p.estimate(DepthRequest(image=photo(), session_id="s-mal"))
        p.estimate(DepthRequest(image=photo(), session_id="s-mal"))
    text = caplog.text
    assert "malformed stream line" in text and "unknown type 'hologram_ready'" in text
    assert len(srv.chats()) == 2


def test_storage_and_download_faults_are_retried(srv):
    srv.storage_faults.append("initiate_503")
    srv.download_faults.append("download_503")
    p, sleeps = make()
    p.estimate(DepthRequest(image=photo(), session_id="s-st"))
    assert len(srv.of("POST", "/api/v1/uploads")) == 2 and len(srv.of("GET", "/outputs/")) == 2
    assert len(sleeps) == 2


# ---- failures that must not be retried ---------------------------------------------------------
def test_insufficient_balance_fails_at_once_with_top_up_advice(srv):
    srv.chat_faults.append("balance")
    p, sleeps = make()
    with pytest.raises(ec.BalanceError) as ei:
        p.estimate(DepthRequest(image=photo(), session_id="s-bal"))
    msg = str(ei.value)
    assert "insufficient balance" in msg and "top up" in msg and "request id req_test_" in msg
    assert len(srv.chats()) == 1 and sleeps == []


def test_balance_of_the_key_itself(srv, monkeypatch):
    monkeypatch.setenv("EACHLABS_API_KEY", "broke-key")
    p, sleeps = make()
    with pytest.raises(ec.BalanceError):
        p.estimate(DepthRequest(image=photo(), session_id="s-bal2"))
    assert len(srv.chats()) == 1 and sleeps == []


def test_missing_key_fails_before_any_request(srv, monkeypatch):
    monkeypatch.delenv("EACHLABS_API_KEY")
    p, _ = make()
    with pytest.raises(ec.AuthError, match="EACHLABS_API_KEY"):
        p.estimate(DepthRequest(image=photo(), session_id="s-nokey"))
    assert srv.requests == []


def test_invalid_key_is_reported_and_not_retried(srv, monkeypatch):
    monkeypatch.setenv("EACHLABS_API_KEY", "wrong-key-123")
    p, sleeps = make()
    with pytest.raises(ec.AuthError) as ei:
        p.estimate(DepthRequest(image=photo(), image_path="http://127.0.0.1:1/x.png", session_id="s-bad"))
    assert "refused" in str(ei.value) and "EACHLABS_API_KEY" in str(ei.value)
    assert "wrong-key-123" not in str(ei.value)
    assert len(srv.chats()) == 1 and sleeps == []


@pytest.mark.parametrize("fault,cls", [("http_400", ec.InvalidRequestError), ("http_403", ec.AuthError),
                                       ("http_404", ec.InvalidRequestError), ("http_422", ec.InvalidRequestError),
                                       ("error_event", ec.GenerationError), ("content_filter", ec.ContentFilterError)])
def test_permanent_failures_are_not_retried(srv, fault, cls):
    srv.chat_faults.append(fault)
    p, sleeps = make()
    with pytest.raises(cls) as ei:
        p.estimate(DepthRequest(image=photo(), session_id=f"s-{fault}"))
    assert len(srv.chats()) == 1 and sleeps == []
    assert ei.value.request_id and not ei.value.retryable


def test_error_event_fails_with_its_message_and_suggestion(srv):
    srv.chat_faults.append("error_event")
    p, _ = make()
    with pytest.raises(ec.GenerationError, match="Model returned error.*try mode max"):
        p.estimate(DepthRequest(image=photo(), session_id="s-err"))


def test_more_than_four_images(srv):
    p, _ = make()
    c = p.client
    urls = [f"{srv.base_url}/public/{i}.png" for i in range(5)]
    with pytest.raises(ec.InvalidRequestError, match="at most 4"):
        c.chat("depth", session_id="s5", image_urls=urls)
    assert srv.chats() == []
    # and what the service says when a request gets there anyway
    with pytest.raises(ec.InvalidRequestError, match="Maximum 4 images") as ei:
        c.chat("depth", session_id="s5", image_urls=urls, validate=False)
    assert "at most 4" in str(ei.value) and len(srv.chats()) == 1


def test_too_small_image(srv):
    p, _ = make()
    tiny = photo(32, 32)
    with pytest.raises(InputError, match="64x64"):
        p.estimate(DepthRequest(image=tiny, session_id="s-tiny"))
    assert srv.requests == []  # refused locally
    out = io.BytesIO()
    Image.fromarray(tiny).save(out, format="PNG")
    url = p.client.upload(out.getvalue())
    with pytest.raises(ec.ImageRejectedError, match="32x32 are below minimum 64x64") as ei:
        p.client.chat("depth map please", session_id="s-tiny", image_urls=[url])
    assert "shrink, enlarge" in str(ei.value) and len(srv.chats()) == 1


def test_upload_errors(srv, monkeypatch):
    srv.storage_faults.append("upload_error")
    p, _ = make()
    with pytest.raises(ec.UploadError, match="virus scan failed"):
        p.estimate(DepthRequest(image=photo(), session_id="s-up"))
    srv.storage_faults.append("never_completes")
    p, _ = make(upload_timeout=0.1)
    with pytest.raises(ec.UploadError, match="still PROCESSING"):
        p.estimate(DepthRequest(image=photo(), session_id="s-up"))
    monkeypatch.delenv("EACHLABS_ORG")
    n = len(srv.requests)
    p, _ = make()
    with pytest.raises(ec.UploadError, match="EACHLABS_ORG"):
        p.estimate(DepthRequest(image=photo(), session_id="s-up"))
    assert len(srv.requests) == n
    assert srv.chats() == []


# ---- clarification -------------------------------------------------------------------------------
def test_clarification_without_an_answer_shows_question_and_options(srv):
    srv.chat_faults.append("clarify")
    p, sleeps = make()
    with pytest.raises(ec.ClarificationNeeded) as ei:
        p.estimate(DepthRequest(image=photo(), session_id="s-q"))
    msg = str(ei.value)
    assert "Which depth convention do you want?" in msg and "White = near" in msg and "Black = near" in msg
    assert "answers:" in msg and ei.value.options == ["White = near", "Black = near"]
    assert len(srv.chats()) == 1 and sleeps == []


@pytest.mark.parametrize("answers,sent", [({"Which depth convention do you want?": "White = near"}, "White = near"),
                                          ({"depth convention": 1}, "White = near"),
                                          ({"which depth convention do you want": "Black = near"}, "Black = near")])
def test_clarification_answered_from_the_recipe_in_the_same_session(srv, answers, sent):
    srv.chat_faults.append("clarify")
    p, _ = make()
    dm = p.estimate(DepthRequest(image=photo(), session_id="s-qa", answers=answers))
    c1, c2 = srv.chats()
    assert c2["body"]["message"] == sent and c2["body"]["session_id"] == c1["body"]["session_id"] == "s-qa"
    assert dm.shape == (120, 160)


def test_find_answer_never_guesses():
    assert find_answer({}, "Which format?", ["a"]) is None
    assert find_answer({"format": "a", "output format": "b"}, "Which output format?", []) is None  # ambiguous
    assert find_answer({"unrelated": "x"}, "Which format?", []) is None
    assert find_answer({"format": 2}, "Which format?", ["png", "tiff"]) == "tiff"


# ---- concurrency ---------------------------------------------------------------------------------
def test_concurrency_limit_and_one_turn_at_a_time_per_session(srv):
    ec.set_max_concurrency(2)
    try:
        srv.event_delay = 0.03
        p, _ = make()
        imgs = [photo(96, 96, i) for i in range(6)]
        errs = []

        def go(i, sid):
            try:
                p.estimate(DepthRequest(image=imgs[i], session_id=sid))
            except Exception as e:  # noqa: BLE001
                errs.append(e)

        ts = [threading.Thread(target=go, args=(i, f"par-{i}")) for i in range(6)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        assert not errs and srv.max_inflight == 2
        srv.max_inflight = 0
        ts = [threading.Thread(target=go, args=(i, "one-session")) for i in range(3)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        assert not errs and srv.max_inflight == 1
    finally:
        ec.set_max_concurrency(ec.max_concurrency())


# ---- units ---------------------------------------------------------------------------------------
def test_sse_framing():
    lines = [": keep-alive", "event: message", "data: {\"type\": \"status\",", "data:  \"message\": \"hi\"}", "",
             "data:{\"type\":\"text_response\",\"content\":\"x\"}\r", "", "data: [1, 2]", "", "garbage", "",
             "data: [DONE]", ""]
    evs = list(iter_sse(lines))
    assert evs[0] == {"type": "status", "message": "hi"}
    assert evs[1] == {"type": "text_response", "content": "x"}
    assert evs[2] is ec.DONE and len(evs) == 3


def test_retry_after_parsing_and_backoff_bounds():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    c = EachSenseClient(backoff_base=1.0, backoff_max=8.0)
    for n, hi in [(0, 1), (1, 2), (2, 4), (5, 8)]:
        d = [c.backoff(n) for _ in range(50)]
        assert min(d) >= hi / 2 and max(d) <= hi
    assert c.backoff(0, retry_after=5) >= 5


def test_mock_transport_and_non_streaming_answer():
    """The transport is swappable (httpx.MockTransport); a JSON answer is understood too."""
    seen = []

    def handler(request: httpx.Request):
        seen.append(request)
        if request.url.path == "/chat":
            return httpx.Response(200, json={"task_id": "t1", "status": "ok", "generations": ["http://cdn.test/d.png"],
                                             "text_response": "done", "model": "m"},
                                  headers={"X-Request-Id": "req_mock"})
        img = io.BytesIO()
        Image.fromarray(np.full((70, 80), 200, np.uint8)).save(img, format="PNG")
        return httpx.Response(200, content=img.getvalue())

    client = EachSenseClient(api_key=lambda: "k-mock", transport=httpx.MockTransport(handler), org="org-x")
    res = client.chat("depth", session_id="m1", image_urls=["http://cdn.test/p.png"])
    assert res.generations == ["http://cdn.test/d.png"] and res.request_id == "req_mock"
    assert json.loads(seen[0].content)["session_id"] == "m1"
    a, sample = decode_depth(client.download(res.generations[0]))
    assert sample == "u8" and a.shape == (70, 80) and "x-api-key" not in seen[1].headers


def test_registry_and_identity_hold_no_secret(srv, monkeypatch):
    monkeypatch.setenv("EACHLABS_API_KEY", SECRET)
    prov = get_provider("eachsense")
    assert isinstance(prov, EachSenseProvider) and prov.name == "eachsense"
    ident = prov.identity()
    assert ident["provider"] == "eachsense" and SECRET not in json.dumps(ident)
    prov.estimate(DepthRequest(image=photo(), session_id="s-id"))
    blob = pickle.dumps(prov)
    assert SECRET.encode() not in blob
    assert pickle.loads(blob).identity() == ident


# ---- secrets end to end --------------------------------------------------------------------------
def test_no_secret_in_any_file_log_or_error(srv, monkeypatch, tmp_path, caplog):
    """Run the estimate step through its StepContext; then grep every file and log for the key."""
    from depthcraft.tasks import estimate
    from depthcraft.tasks.lib.step import StepContext
    from depthcraft.tasks.lib.store import Artifact, sha256_file

    monkeypatch.setenv("EACHLABS_API_KEY", SECRET)
    src = tmp_path / "in" / "coffee.png"
    src.parent.mkdir()
    Image.fromarray(skimage.data.coffee()).save(src)
    art = Artifact(str(src), sha256_file(src), "image")
    errors = []
    with caplog.at_level(logging.DEBUG):
        srv.retry_after = "0"
        srv.chat_faults.extend(["http_429", "drop_before_record", "malformed"])
        ctx = StepContext(step_id="depth", image_name="coffee", source=art, workdir=tmp_path / "work",
                          session_id="secret-run", provider="eachsense", mode="max")
        outs = estimate.run(ctx, estimate.EstimateParams())
        (tmp_path / "outs.json").write_text(json.dumps({k: {"path": str(o.path), "meta": o.meta}
                                                        for k, o in outs.items()}))
        (tmp_path / "pickled.bin").write_bytes(pickle.dumps(outs))
        for fault in ("balance", "http_401", "error_event", "clarify"):
            srv.chat_faults.append(fault)
            try:
                estimate.run(StepContext(step_id="d2", image_name="coffee", source=art, workdir=tmp_path / "w2",
                                         session_id="secret-run", provider="eachsense"), estimate.EstimateParams())
            except ProviderError as e:
                errors.append(e)
    assert len(errors) == 4
    assert outs["depth"].meta["session_id"] == "secret-run"
    assert Image.open(outs["main"].path).size == (600, 400)
    leaks = [str(f) for f in tmp_path.rglob("*") if f.is_file() and SECRET.encode() in f.read_bytes()]
    assert leaks == []
    assert SECRET not in caplog.text
    for e in errors:
        assert SECRET not in str(e) and SECRET not in repr(e.args) and SECRET.encode() not in pickle.dumps(e)
    # the key was really used (so that the greps above mean something)
    assert srv.chats()[0]["headers"]["x-api-key"] == SECRET


def test_error_text_is_scrubbed_of_the_key():
    ec._known_keys.add(SECRET)
    e = ec.GenerationError(f"the service echoed {SECRET} back")
    assert SECRET not in str(e) and "***" in str(e)


def test_prefect_secret_block_is_read_lazily(monkeypatch):
    monkeypatch.delenv("EACHLABS_API_KEY", raising=False)
    monkeypatch.setenv("EACHLABS_API_KEY_BLOCK", "no-such-block-for-tests")
    ec._block_cache["no-such-block-for-tests"] = "from-block"
    try:
        assert ec.api_key_from_env() == "from-block"
    finally:
        ec._block_cache.pop("no-such-block-for-tests", None)


def test_messages_per_use_case_fix_the_convention():
    from depthcraft.tasks.providers.eachsense import messages as m

    for uc in m.USE_CASES:
        text = m.estimate_message(uc)
        assert m.says_white_near(text) or "meters" in text, uc
        assert not m.says_black_near(text), uc
    assert m.estimate_message("portrait", override="  my words ") == "my words"
    assert "meters" in m.estimate_message("general", "metric")
    assert m.says_black_near("output: inverse grayscale") and m.says_black_near("black represents closer")


def test_decode_depth_formats():
    f = io.BytesIO()
    Image.fromarray(np.arange(64 * 64, dtype=np.float32).reshape(64, 64)).save(f, format="TIFF")
    a, s = decode_depth(f.getvalue())
    assert s == "float" and a[0, 1] == 1.0
    f = io.BytesIO()
    np.save(f, np.ones((4, 5), np.float32))
    assert decode_depth(f.getvalue())[1] == "float"
    g = np.stack([np.full((8, 8), 77, np.uint8)] * 3, axis=2)
    f = io.BytesIO()
    Image.fromarray(g).save(f, format="PNG")
    a, s = decode_depth(f.getvalue())
    assert s == "u8" and a.shape == (8, 8) and a[0, 0] == 77
    with pytest.raises(ec.GenerationError, match="cannot be decoded"):
        decode_depth(b"not an image")


def test_a_clip_says_how_many_billed_calls_it_will_make():
    """One chat per estimated frame: a clip's cost is said before it is spent (was: silent)."""
    from depthcraft.tasks import clips
    from depthcraft.tasks.catalog import get_step
    from depthcraft.tasks.lib.notices import set_sink

    said = []
    set_sink(said.append)
    try:
        est = get_step("estimate").params()
        assert clips.remote_calls_notice("walk.mp4", "estimate", est, "eachsense", 240) == 240
        assert clips.remote_calls_notice("walk.mp4", "stereo", get_step("stereo").params(), "eachsense", 240) == 10
        sparse = get_step("estimate").params(keyframe_interval=8)
        assert clips.remote_calls_notice("walk.mp4", "estimate", sparse, "eachsense", 240) == 30
        assert clips.remote_calls_notice("walk.mp4", "estimate", est, "classic", 240) == 0
    finally:
        set_sink(None)
    assert len(said) == 3
    assert said[0] == ("walk.mp4: estimate asks each::sense for the depth of about 240 of its 240 frames, one billed "
                       "call each; keyframe_interval N (--keyframe-interval N) asks for every Nth frame only")
    assert "about 10 of its 240" in said[1] and "keyframe_interval" not in said[1]
