"""The ``eachsense`` provider: depth maps from the hosted each::sense chat API.

``estimate`` sends the photo (uploaded through the storage API, or its URL passed through) with
a message written for the use case (:mod:`.messages`), in the run's ``session_id`` and
``mode``; it follows the event stream, downloads the generated depth map and returns it as a
:class:`~depthcraft.tasks.lib.depthmap.DepthMap` at the photo's size: ``relative_inverse`` 0..1 (larger =
nearer) from a white = near grayscale PNG, or ``metric`` meters when metric was asked for and
the answer is metric (a float image, or a 16-bit PNG the service says is in millimeters).

``refine`` continues the same session with a message ("enhance the edges around the main
subject" by default) and the current depth map as a second image, and returns the refined map.

A ``clarification_needed`` question is answered from ``req.answers`` when the recipe has an
answer for it; otherwise the step fails with the question and its options. Nothing is guessed.
Networking, retries, errors and secrets are the client's job (:mod:`.client`).
"""

from __future__ import annotations

import io
import logging
from urllib.parse import urlparse

import numpy as np
from PIL import Image

from ...lib.depthmap import DepthMap, normalized_nearness, resize_depth
from ...lib.errors import InputError, ParameterError
from ..base import DepthRequest
from ..options import OPTION_DEFAULTS
from . import messages as msgs
from .client import (ClarificationNeeded, EachSenseClient, GenerationError, ImageRejectedError,
                     MAX_IMAGES, SessionError, session_lock)
from .sessions import max_messages, planner_for

log = logging.getLogger("depthcraft.eachsense")

MESSAGES_VERSION = "1"  # bump when the default wording changes what the service returns
MAX_SIDE = 8192
MAX_BYTES = 20 * 1024 * 1024
MIN_SIDE = 64
MAX_CLARIFICATIONS = 3


def is_url(s: str | None) -> bool:
    return bool(s) and urlparse(str(s)).scheme in ("http", "https")


def encode_photo(rgb: np.ndarray) -> tuple[bytes, str]:
    """PNG bytes of an RGB photo within the service's limits (JPEG when the PNG is over 20 MB).

    The decoded array is sent rather than the original file so that the service sees exactly
    the photo the other steps see (EXIF orientation applied, downscaling done).
    """
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise InputError(f"image is {w}x{h}; each::sense needs at least {MIN_SIDE}x{MIN_SIDE} px")
    img = Image.fromarray(np.ascontiguousarray(rgb[..., :3]).astype(np.uint8))
    if max(h, w) > MAX_SIDE:  # the answer is resized back to the photo's size
        f = MAX_SIDE / max(h, w)
        img = img.resize((max(MIN_SIDE, round(w * f)), max(MIN_SIDE, round(h * f))), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    img.save(out, format="PNG", compress_level=6)
    if out.tell() <= MAX_BYTES:
        return out.getvalue(), "image/png"
    for q in (95, 85, 75):
        out = io.BytesIO()
        img.save(out, format="JPEG", quality=q)
        if out.tell() <= MAX_BYTES:
            return out.getvalue(), "image/jpeg"
    raise InputError(f"image is over {MAX_BYTES // (1024 * 1024)} MB even as JPEG", hint="shrink the image")


def decode_depth(data: bytes, *, request_id: str | None = None) -> tuple[np.ndarray, str]:
    """A downloaded depth file as float32 HxW and its sample type: ``u8``, ``u16`` or ``float``."""
    if data[:6] == b"\x93NUMPY":
        from numpy.lib import format as npf

        from depthcraft.tasks.lib.images import decode_budget

        f = io.BytesIO(data)
        version = npf.read_magic(f)
        shape = (npf.read_array_header_1_0 if version == (1, 0) else npf.read_array_header_2_0)(f)[0]
        if float(np.prod(shape, dtype=np.float64)) > 4 * decode_budget():  # the header may claim any shape
            raise GenerationError(f"the generated depth array claims shape {tuple(shape)}, over the decoding budget",
                                  request_id=request_id)
        a = np.load(io.BytesIO(data), allow_pickle=False)
        a = a[..., 0] if a.ndim == 3 else a
        return np.asarray(a, dtype=np.float32), "float"
    from depthcraft.tasks.lib.images import decode_budget

    try:
        img = Image.open(io.BytesIO(data))
        if img.size[0] * img.size[1] > decode_budget():  # a header may claim any size: checked before decoding
            raise GenerationError(f"the generated depth map claims {img.size[0]}x{img.size[1]} pixels, over the "
                                  f"decoding budget of {decode_budget() / 1e6:,.0f} MP", request_id=request_id)
        img.load()
    except GenerationError:
        raise
    except Exception as e:  # noqa: BLE001 - anything undecodable is the answer's fault
        raise GenerationError(f"the generated depth map cannot be decoded ({type(e).__name__})", request_id=request_id,
                              hint="ask for a grayscale PNG in the message") from None
    mode = img.mode
    if mode == "F":
        return np.asarray(img, dtype=np.float32), "float"
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(img).astype(np.float32)
        return a, ("u16" if a.max(initial=0) <= 65535 else "float")
    if mode == "L":
        return np.asarray(img, dtype=np.float32), "u8"
    if mode in ("LA", "La"):
        return np.asarray(img.getchannel(0), dtype=np.float32), "u8"
    rgb = np.asarray(img.convert("RGB")).astype(np.int16)
    spread = np.abs(rgb - rgb[..., :1]).max(initial=0)
    if spread > 3:  # a colour-mapped picture is not a depth map: its values cannot be read back
        raise GenerationError("the service returned a colour image, not a grayscale depth map", request_id=request_id,
                              hint="ask for a single-channel grayscale PNG (white = near) in the message")
    return rgb[..., 0].astype(np.float32), "u8"


def _chain(req: DepthRequest) -> str:
    """What ties a photo's turns together: its path or URL, else a hash of its pixels."""
    if req.image_path:
        return str(req.image_path)
    import hashlib

    return "sha256:" + hashlib.sha256(np.ascontiguousarray(req.image).tobytes()).hexdigest()


def find_answer(answers: dict | None, question: str, options: list):
    """The recipe's answer to ``question``: exact text, the same text up to case/spacing/final
    punctuation, or the one key contained in the question. An integer picks option n (1-based)."""
    if not answers:
        return None

    def norm(s):
        return " ".join(str(s).lower().split()).rstrip("?.!: ")

    q = norm(question)
    found = answers.get(question)
    if found is None:
        same = [v for k, v in answers.items() if norm(k) == q]
        found = same[0] if same else None
    if found is None:
        inside = [v for k, v in answers.items() if norm(k) and norm(k) in q]
        found = inside[0] if len(inside) == 1 else None
    if found is None:
        return None
    if isinstance(found, bool):  # YAML turns yes/no into booleans
        return "yes" if found else "no"
    if isinstance(found, int) and options and 1 <= found <= len(options):
        return str(options[found - 1])
    return str(found)


class EachSenseProvider:
    """``provider: eachsense``. Holds no secret: the key is read by the client at request time."""

    name = "eachsense"

    def __init__(self, client: EachSenseClient | None = None, *, mode: str | None = None):
        self._client = client
        self.mode = mode

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_client"] = None  # rebuilt from the environment where it is unpickled
        return d

    @property
    def client(self) -> EachSenseClient:
        if self._client is None:
            self._client = EachSenseClient.from_env()
        return self._client

    def identity(self) -> dict:
        """What makes the output what it is (enters cache keys); no key, no session id."""
        c = self.client
        ident = {"provider": "eachsense", "service": urlparse(c.base_url).netloc, "messages": MESSAGES_VERSION}
        if self.mode:
            ident["mode"] = self.mode
        return ident

    # -- the two operations ----------------------------------------------------------------------
    def estimate(self, req: DepthRequest) -> DepthMap:
        message = msgs.estimate_message(req.use_case, req.output, req.message)
        self.client._key()  # no key: fail before uploading anything
        urls = [self._photo_url(req)]  # checks the photo first: a refused one costs no request
        chain = _chain(req)
        sid = planner_for(self.client).place(req.session_id, chain)
        with session_lock(sid):
            res = self._converse(message, urls, req, sid, chain)
        return self._depth_from(res, req, message, step="estimate", service_session=sid)

    def refine(self, req: DepthRequest) -> DepthMap:
        """Continue the photo's service session (the one its estimate used, ``service_session`` in
        ``req.options``) with ``req.message`` (default: enhance the subject's edges)."""
        if req.depth is None:
            raise ParameterError("refine with eachsense needs the current depth map", parameter="from")
        self.client._key()
        urls = [self._photo_url(req)]  # checks the photo first: a refused one costs no request
        chain, before = _chain(req), req.options.get("service_session")
        sid = planner_for(self.client).place(req.session_id, chain, continues=before)
        # the service holds the depth map only from this photo's own estimate turn, in this service
        # session: after a local estimate (no service session) or a chain moved to a new one it has
        # none, and the depth map goes along whatever send_depth says
        send_depth = bool(req.options.get("send_depth", OPTION_DEFAULTS["eachsense"]["send_depth"])) or before is None or sid != before
        message = msgs.refine_message(req.message, with_depth=send_depth, output=req.output)
        if send_depth:
            urls.append(self._depth_url(req.depth, req.image.shape[1::-1]))
        with session_lock(sid):
            res = self._converse(message, urls, req, sid, chain)
        return self._depth_from(res, req, message, step="refine", service_session=sid)

    # -- helpers ---------------------------------------------------------------------------------
    def _photo_url(self, req: DepthRequest) -> str:
        if is_url(req.image_path):
            return str(req.image_path)  # the service fetches it; nothing to upload
        data, ctype = encode_photo(req.image)
        return self.client.upload(data, ctype)

    def _depth_url(self, dm: DepthMap, size: tuple[int, int]) -> str:
        unit = normalized_nearness(resize_depth(dm, size))
        out = io.BytesIO()
        Image.fromarray(np.clip(unit * 255.0 + 0.5, 0, 255).astype(np.uint8)).save(out, format="PNG")
        return self.client.upload(out.getvalue(), "image/png")

    def _converse(self, message: str, urls: list[str], req: DepthRequest, sid: str, chain: str):
        """One turn, plus one turn per clarification the recipe answers, all in service session ``sid``."""
        if len(urls) > MAX_IMAGES:
            raise ImageRejectedError(f"{len(urls)} images in one request; at most {MAX_IMAGES}")
        opts = req.options
        extra = {k: opts[k] for k in ("model", "behavior", "web_search", "enable_safety_checker") if k in opts}
        extra.setdefault("web_search", OPTION_DEFAULTS["eachsense"]["web_search"])  # a depth map needs no web search; it costs time
        mode = req.mode or "max"
        planner = planner_for(self.client)
        log.info("eachsense: session %s (service session %s), mode %s, %d image(s)", req.session_id, sid, mode,
                 len(urls))

        def turn(text: str):
            if planner.room(sid) < 1:
                raise SessionError(f"service session {sid} holds {max_messages()} messages, the service's limit, "
                                   "in the middle of a conversation",
                                   hint="raise EACHSENSE_TURNS_PER_PHOTO (turns reserved per photo), then re-run")
            return self.client.chat(text, session_id=sid, mode=mode, image_urls=urls,
                                    on_attempt=lambda: planner.sent(sid, chain), **extra)

        res = turn(message)
        for _ in range(MAX_CLARIFICATIONS):
            if not res.clarification or res.generations:
                return res
            c = res.clarification
            answer = find_answer(req.answers, c["question"], c["options"])
            if answer is None:
                raise ClarificationNeeded(c["question"], c["options"], c.get("context"),
                                          request_id=res.request_id, session_id=req.session_id)
            log.info("eachsense: answering %r with %r (from the recipe)", c["question"], answer)
            res = turn(answer)
        if res.clarification and not res.generations:
            c = res.clarification
            raise ClarificationNeeded(c["question"], c["options"], c.get("context"),
                                      request_id=res.request_id, session_id=req.session_id)
        return res

    def _depth_from(self, res, req: DepthRequest, message: str, *, step: str, service_session: str) -> DepthMap:
        if not res.generations:
            said = " ".join(res.text.split())[:200]
            raise GenerationError(f"{step}: no depth map in the answer" + (f"; the service said: {said!r}" if said else ""),
                                  request_id=res.request_id,
                                  hint="ask explicitly for a depth map of the image in the recipe's message")
        url = res.generations[0]
        a, sample = decode_depth(self.client.download(url), request_id=res.request_id)
        want_metric = req.output == "metric" or req.use_case == "vr"
        kind, meta = "relative_inverse", {}
        if want_metric and sample == "float":
            kind = "metric"
        elif want_metric and sample == "u16" and msgs.says_millimeters(res.text):
            a = np.where(a > 0, a / 1000.0, np.nan).astype(np.float32)  # 0 = invalid in millimeter maps
            kind = "metric"
        elif want_metric:
            log.warning("eachsense: metric depth was asked for but the answer is a relative %s map; "
                        "using it as relative depth", sample)
            meta["metric"] = "not provided by the service"
        if kind == "relative_inverse":
            a = self._relative(a, sample)
            invert = req.options.get("invert", OPTION_DEFAULTS["eachsense"]["invert"])
            if invert is None:  # what the request asked for, unless the answer says otherwise
                invert = msgs.says_black_near(res.text) or (msgs.says_black_near(message)
                                                            and not msgs.says_white_near(res.text))
            if invert:
                a = 1.0 - a
        h, w = req.image.shape[:2]
        dm = DepthMap(data=a, kind=kind, source=f"eachsense/{res.model}" if res.model else "eachsense")
        if dm.shape != (h, w):
            dm = resize_depth(dm, (w, h))
        dm.meta = {**meta, "session_id": req.session_id, "service_session": service_session, "mode": req.mode,
                   "remote_url": url,
                   **{k: v for k, v in (("request_id", res.request_id), ("task_id", res.task_id),
                                        ("model", res.model)) if v}}
        if res.recovered:
            dm.meta["recovered_from_memory"] = True
        log.info("eachsense: %s done in session %s (service session %s) [request id %s]", step, req.session_id,
                 service_session, res.request_id)
        return dm

    @staticmethod
    def _relative(a: np.ndarray, sample: str) -> np.ndarray:
        if sample == "u8":
            return (a / 255.0).astype(np.float32)
        if sample == "u16":
            return (a / 65535.0).astype(np.float32)
        ok = np.isfinite(a)
        lo, hi = (float(a[ok].min()), float(a[ok].max())) if ok.any() else (0.0, 1.0)
        return np.clip((np.where(ok, a, lo) - lo) / max(hi - lo, 1e-12), 0, 1).astype(np.float32)
