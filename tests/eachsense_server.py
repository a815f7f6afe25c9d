"""A loopback each::sense server for the ``eachsense`` provider's tests, with fault injection.

It speaks the protocol of ``../shared/protocol/each-sense.md``: ``POST /chat`` (SSE ``data:``
lines ending with ``data: [DONE]``), ``GET/DELETE /memory``, the storage API (initiate,
presigned ``PUT``, status polling) and the generated files. It records every request with its
full headers (in memory only) so that tests can check what the client sent.

Depth maps are simple and recognisable: nearness grows down the image (a vertical ramp, the
ground-plane prior); a refinement turn (a message mentioning edges) adds a bright disc in the
centre. White = near unless the message asks for black = near / inverse. A message asking for
meters gets a 16-bit PNG in millimeters, and says so.

Faults are queued per request kind; each is used by exactly one request, in order::

    srv.chat_faults += ["http_429", "drop_after_record"]
    srv.storage_faults += ["initiate_503"]
    srv.download_faults += ["download_503"]

Chat faults: ``http_<status>`` (429 carries ``Retry-After``: ``srv.retry_after``),
``drop_before_record`` (closes after one event; nothing generated), ``drop_after_record``
(generates and records in the session memory, closes before ``generation_response``),
``drop_after_generation`` (closes right after ``generation_response``), ``slow`` (sleeps
``srv.slow_delay`` s before each event), ``malformed``, ``unknown_event``, ``balance``,
``clarify``, ``error_event``, ``session_busy``, ``rate_limited_event``, ``content_filter``,
``no_done`` (``complete`` but no ``[DONE]``), ``says_inverse`` (returns black = near and says
so), ``colour`` (returns a colour-mapped picture), ``text_only`` (no generation).
Storage faults: ``initiate_503``, ``upload_error`` (status ERROR), ``never_completes``.
Download faults: ``download_503``.

Run by hand: ``python tests/eachsense_server.py --port 8765`` (keys ``good-key``, ``broke-key``).
"""

from __future__ import annotations

import argparse
import io
import json
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

MAX_IMAGES = 4


def ramp_nearness(w: int, h: int, refined: bool = False) -> np.ndarray:
    """The server's 'depth': 0..1 nearness, growing down the image; a disc in the centre when refined."""
    a = np.repeat(np.linspace(0.0, 0.8, h, dtype=np.float32)[:, None], w, axis=1)
    if refined:
        yy, xx = np.mgrid[0:h, 0:w]
        disc = (xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (min(w, h) / 4) ** 2
        a[disc] = 1.0
    return a


def png(a: np.ndarray, *, bits: int = 8) -> bytes:
    out = io.BytesIO()
    if bits == 16:
        Image.fromarray(np.asarray(a, dtype=np.uint16)).save(out, format="PNG")
    else:
        Image.fromarray(np.clip(a * 255.0 + 0.5, 0, 255).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


class EachSenseTestServer:
    """Start with :meth:`start` (returns the base URL); every field may be changed by a test."""

    def __init__(self, keys: dict | None = None):
        self.keys = keys or {"good-key": "ok", "broke-key": "balance"}
        self.lock = threading.Lock()
        self.chat_faults: list = []
        self.storage_faults: list = []
        self.download_faults: list = []
        self.requests: list[dict] = []
        self.sessions: dict = {}  # (key, session_id) -> [exchange]
        self.uploads: dict = {}
        self.outputs: dict = {}
        self.generated = 0  # depth maps produced (what a real service bills)
        self.inflight = 0
        self.max_inflight = 0
        self.retry_after = "1"
        self.slow_delay = 1.0
        self.event_delay = 0.0  # between events of every stream (concurrency tests)
        self.max_messages: int | None = None  # the service's per-session memory limit (50 in production)
        self.required_headers_extra = {"x-amz-meta-origin": "depthcraft-test"}
        self.httpd: ThreadingHTTPServer | None = None
        self.base_url = ""

    # ---- lifecycle -----------------------------------------------------------------------------
    def start(self, port: int = 0) -> str:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), _make_handler(self))
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self.base_url

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()

    def reset(self) -> None:
        with self.lock:
            self.chat_faults.clear(), self.storage_faults.clear(), self.download_faults.clear()
            self.requests.clear()
            self.generated = self.max_inflight = 0
            self.retry_after, self.slow_delay, self.event_delay = "1", 1.0, 0.0
            self.max_messages = None

    # ---- queries for tests ---------------------------------------------------------------------
    def chats(self) -> list[dict]:
        return [r for r in self.requests if r["method"] == "POST" and r["path"] == "/chat"]

    def of(self, method: str, prefix: str) -> list[dict]:
        return [r for r in self.requests if r["method"] == method and r["path"].startswith(prefix)]

    def pop(self, queue: list):
        with self.lock:
            return queue.pop(0) if queue else None


def _make_handler(srv: EachSenseTestServer):
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        # -- helpers --
        def rid(self):
            return "req_test_" + uuid.uuid4().hex[:10]

        def record(self, body):
            with srv.lock:
                srv.requests.append({"method": self.command, "path": self.path, "body": body, "t": time.time(),
                                     "headers": {k.lower(): v for k, v in self.headers.items()}})

        def send_json(self, status, obj, headers=None):
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Request-Id", self.rid())
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def key(self):
            k = self.headers.get("X-API-Key")
            auth = self.headers.get("Authorization", "")
            if not k and auth.lower().startswith("bearer "):
                k = auth[7:].strip()
            if not k:
                self.send_json(401, {"detail": "API key is required."})
                return None
            if k not in srv.keys:
                self.send_json(401, {"detail": "Invalid API key."})
                return None
            return k

        def body(self):
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        # -- routes --
        def do_GET(self):
            url = urllib.parse.urlparse(self.path)
            self.record(None)
            if url.path.startswith("/outputs/") or url.path.startswith("/files/") or url.path.startswith("/public/"):
                return self.serve_file(url.path)
            k = self.key()
            if k is None:
                return
            if url.path.startswith("/api/v1/uploads/"):
                up = srv.uploads.get(url.path.rsplit("/", 1)[-1])
                if up is None:
                    return self.send_json(404, {"status": 404, "error": "not found", "code": "NOT_FOUND",
                                                "request_id": self.rid()})
                if up["status"] == "PROCESSING" and not up.get("stuck"):
                    up["polls"] += 1
                    if up["polls"] >= 2:
                        up["status"] = "COMPLETED"
                    return self.send_json(200, {"id": up["id"], "status": "PROCESSING"})
                return self.send_json(200, {"id": up["id"], "status": up["status"], "error": up.get("error")})
            if url.path == "/memory":
                sid = urllib.parse.parse_qs(url.query).get("session_id", [""])[0]
                hist = srv.sessions.get((k, sid))
                if hist is None:
                    return self.send_json(404, {"detail": "Session not found", "error_code": "SESSION_NOT_FOUND"})
                return self.send_json(200, {"session_id": sid, "conversation_history": hist,
                                            "total_exchanges": len(hist),
                                            "generated_media_urls": [u for e in hist for u in e["generated_media_urls"]]})
            self.send_json(404, {"detail": "Not Found"})

        def serve_file(self, path):
            name = path.rsplit("/", 1)[-1]
            if path.startswith("/outputs/"):
                if srv.pop(srv.download_faults) == "download_503":
                    return self.send_json(503, {"detail": "busy"})
                data = srv.outputs.get(name)
            elif path.startswith("/public/"):  # an image "on the web", for URL pass-through
                data = srv.outputs.get("public-" + name)
            else:
                up = srv.uploads.get(name)
                data = up["bytes"] if up and up["status"] == "COMPLETED" else None
            if data is None:
                return self.send_json(404, {"detail": "Not Found"})
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_PUT(self):
            url = urllib.parse.urlparse(self.path)
            data = self.body()
            self.record({"bytes": len(data)})
            up = srv.uploads.get(url.path.rsplit("/", 1)[-1]) if url.path.startswith("/presigned/") else None
            if up is None or up["status"] != "PENDING":
                return self.send_json(403, {"detail": "Upload URL expired or already used"})
            sent = {k.lower(): v for k, v in self.headers.items()}
            need = {k.lower(): v for k, v in up["required"].items()}
            allowed = set(need) | {"host", "content-length"}
            if any(sent.get(k) != v for k, v in need.items()) or set(sent) - allowed:
                return self.send_json(403, {"detail": "SignatureDoesNotMatch: headers differ from required_headers"})
            up["bytes"] = data
            up["status"] = "ERROR" if up.get("error") else "PROCESSING"
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self):
            url = urllib.parse.urlparse(self.path)
            raw = self.body()
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                self.record({"raw": raw[:100].decode("latin-1")})
                return self.send_json(400, {"detail": "Malformed JSON"})
            self.record(body)
            if url.path == "/_control":
                srv.chat_faults.extend(body.get("faults", []))
                return self.send_json(200, {"queued": len(srv.chat_faults)})
            if url.path == "/chat":
                fault = srv.pop(srv.chat_faults)
                if isinstance(fault, str) and fault.startswith("http_"):
                    status = int(fault[5:])
                    if status == 429:
                        return self.send_json(429, {"detail": "Rate limit exceeded.", "error_code": "RATE_LIMITED",
                                                    "retry_after": 1},
                                              {"Retry-After": srv.retry_after, "X-RateLimit-Remaining": "0"})
                    return self.send_json(status, {"detail": f"test fault {status}"})
                k = self.key()
                if k is None:
                    return
                return self.chat(k, body, fault)
            k = self.key()
            if k is None:
                return
            if url.path == "/api/v1/uploads":
                fault = srv.pop(srv.storage_faults)
                if fault == "initiate_503":
                    return self.send_json(503, {"status": 503, "error": "busy", "code": "INTERNAL_ERROR"})
                if body.get("uploader") != "customer" or not str(body.get("owner", "")).startswith("org-") \
                        or body.get("file_type") != "image" or not body.get("content_type"):
                    return self.send_json(400, {"status": 400, "error": "owner, uploader, file_type and content_type "
                                                "are required", "code": "BAD_REQUEST", "request_id": self.rid()})
                fid = uuid.uuid4().hex
                req_h = {"Content-Type": body["content_type"], **srv.required_headers_extra}
                srv.uploads[fid] = {"id": fid, "status": "PENDING", "bytes": None, "required": req_h, "polls": 0,
                                    "error": "virus scan failed" if fault == "upload_error" else None,
                                    "stuck": fault == "never_completes"}
                b = srv.base_url
                return self.send_json(200, {"id": fid, "upload_url": f"{b}/presigned/{fid}", "public_url": f"{b}/files/{fid}",
                                            "status": "PENDING", "expires_at": "2099-01-01T00:00:00Z",
                                            "required_headers": req_h})
            self.send_json(404, {"detail": "Not Found"})

        # -- chat --
        def fetch(self, u):
            p = urllib.parse.urlparse(u)
            name = p.path.rsplit("/", 1)[-1]
            if p.path.startswith("/files/"):
                up = srv.uploads.get(name)
                return up["bytes"] if up and up["status"] == "COMPLETED" else None
            if p.path.startswith("/public/"):
                return srv.outputs.get("public-" + name)
            return None

        def chat(self, key, body, fault):
            msg = str(body.get("message") or "")
            if not msg.strip():
                return self.send_json(422, {"detail": [{"loc": ["body", "message"], "msg": "field required"}]})
            if body.get("mode", "max") not in ("max", "eco"):
                return self.send_json(422, {"detail": "mode must be max or eco"})
            sid = body.get("session_id") or "default"
            hist = srv.sessions.setdefault((key, sid), [])
            low = msg.lower()
            ev = [{"type": "thinking_delta", "content": "Looking at the photo."},
                  {"type": "status", "message": "Choosing a depth model", "tool_name": "search_models"}]
            urls = body.get("image_urls") or []
            media: list[str] = []
            text = "Here is the depth map (white = near)."
            stop_after = None
            record = True

            def fail(message, **kw):
                return ev + [{"type": "error", "message": message, **kw}]

            if srv.max_messages is not None and len(hist) >= srv.max_messages:
                # as the service does: the turn is refused, and still kept in the session's memory
                hist.append({"timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "user_prompt": msg,
                             "chatbot_response": "", "generated_media_urls": []})
                return self.stream(fail(f"Session memory limit reached. Maximum {srv.max_messages} messages per "
                                        "session."), None, None)
            if fault == "malformed":
                ev.insert(0, "{this is not json")
            if fault == "unknown_event":
                ev.insert(0, {"type": "hologram_ready", "payload": 1})
            if fault == "clarify":
                ev += [{"type": "clarification_needed", "question": "Which depth convention do you want?",
                        "options": ["White = near", "Black = near"], "context": "The request was ambiguous."},
                       {"type": "complete", "task_id": "t_clar", "status": "awaiting_input"}]
            elif fault == "balance" or srv.keys.get(key) == "balance":
                ev = fail("Failed to create prediction: HTTP 422", error_code="INSUFFICIENT_BALANCE")
            elif fault == "error_event":
                ev = fail("Failed to generate image: Model returned error", suggestion="try mode max")
            elif fault == "session_busy":
                ev = fail("Session is currently processing another request", error_code="SESSION_BUSY")
            elif fault == "rate_limited_event":
                ev = fail("Too many requests", error_code="RATE_LIMITED", retry_after=0.05)
            elif fault == "content_filter":
                ev = fail("Content flagged by the safety checker", error_code="CONTENT_FILTER")
            elif len(urls) > MAX_IMAGES:
                ev = fail("Maximum 4 images allowed per request")
            elif not urls or fault == "text_only":
                ev += [{"type": "text_response", "content": "Please send an image."},
                       {"type": "complete", "task_id": "t_txt", "status": "ok"}]
            else:
                for u in urls[:1]:  # the first image is the photo; a second is context (refinement)
                    data = self.fetch(u)
                    if data is None:
                        ev = fail("Invalid image URL: Unable to fetch image from provided URL")
                        break
                    w, h = Image.open(io.BytesIO(data)).size
                    if w < 64 or h < 64:
                        ev = fail(f"Invalid image: Dimensions {w}x{h} are below minimum 64x64")
                        break
                    near = ramp_nearness(w, h, refined=len(urls) > 1 or "enhance" in low)
                    name = uuid.uuid4().hex[:12] + ".png"
                    if fault == "colour":
                        rgb = np.stack([near, 1 - near, near * 0.5], axis=2)
                        out = io.BytesIO()
                        Image.fromarray((rgb * 255).astype(np.uint8)).save(out, format="PNG")
                        srv.outputs[name] = out.getvalue()
                    elif "meters" in low:
                        mm = (1000.0 + (1.0 - near) * 9000.0).astype(np.uint16)  # 1 m (near) .. 10 m
                        srv.outputs[name] = png(mm, bits=16)
                        text = "Metric depth as a 16-bit PNG in millimeters."
                    else:
                        black_near = fault == "says_inverse" or "black = near" in low or "inverse" in low
                        srv.outputs[name] = png(1.0 - near if black_near else near)
                        if fault == "says_inverse":
                            text = "Here is the depth map; note: black = near in this output."
                        elif black_near:
                            text = "Here is the depth map, as requested."
                    media.append(f"{srv.base_url}/outputs/{name}")
                    srv.generated += 1
                if media:
                    gen = {"type": "generation_response", "url": media[0], "generations": media, "total": len(media),
                           "model": "test-depth-v1"}
                    ev += [{"type": "status", "message": "Generating", "model": "test-depth-v1"},
                           {"type": "text_response", "content": text}, gen,
                           {"type": "complete", "task_id": "t_" + uuid.uuid4().hex[:6], "status": "ok",
                            "generations": media, "model": "test-depth-v1"}]
                    if fault == "drop_after_record":
                        stop_after = 2
                    elif fault == "drop_after_generation":
                        stop_after = ev.index(gen) + 1
            if fault == "drop_before_record":
                # the request dies before the service does anything: nothing generated, nothing kept
                for u in media:
                    srv.outputs.pop(u.rsplit("/", 1)[-1], None)
                srv.generated -= len(media)
                media, record, stop_after = [], False, 1
            if fault in ("slow", "trickle"):
                record = False  # a slow job is recorded when it ends, which the client does not wait for
            if record:
                hist.append({"timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "user_prompt": msg,
                             "chatbot_response": text if media else "", "generated_media_urls": media})
            self.stream(ev, fault, stop_after)

        def stream(self, events, fault, stop_after):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.send_header("X-Request-Id", self.rid())
            self.end_headers()
            self.close_connection = True
            with srv.lock:
                srv.inflight += 1
                srv.max_inflight = max(srv.max_inflight, srv.inflight)
            try:
                if fault == "trickle":  # progress events for ever, never the result (until the client hangs up)
                    for i in range(100000):
                        status = {"type": "status", "message": f"still working ({i})"}
                        self.wfile.write(f"data: {json.dumps(status)}\n\n".encode())
                        self.wfile.flush()
                        time.sleep(0.05)
                    return
                for i, e in enumerate(events):
                    if stop_after is not None and i >= stop_after:
                        return
                    if fault == "slow":
                        time.sleep(srv.slow_delay)
                    if srv.event_delay:
                        time.sleep(srv.event_delay)
                    line = e if isinstance(e, str) else json.dumps(e)
                    self.wfile.write(f"data: {line}\n\n".encode())
                    self.wfile.flush()
                if fault != "no_done":
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                with srv.lock:
                    srv.inflight -= 1

    return H


def main():
    ap = argparse.ArgumentParser(description="loopback each::sense test server")
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args()
    srv = EachSenseTestServer()
    print(srv.start(a.port), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        srv.stop()


if __name__ == "__main__":
    main()
