"""Local images to public URLs through the each::labs storage API.

The protocol (``../shared/protocol/each-sense.md``, "Local images"): initiate an upload
(``POST /api/v1/uploads``), ``PUT`` the bytes to the presigned URL with exactly the
``required_headers`` (their signature covers them; no key is sent there), then poll the
upload's status until ``COMPLETED``. Each request is retried on its own; polling is not a retry.
"""

from __future__ import annotations

import hashlib
import logging
import time
import httpx

from .concurrency import remote_slot
from .errors import EachSenseError, ImageRejectedError, InvalidRequestError, UploadError, http_error
from .transport import short_url

log = logging.getLogger("depthcraft.eachsense")


def storage_error(e: EachSenseError) -> EachSenseError:
    """A refused storage request is an upload problem, unless the image itself was refused."""
    if isinstance(e, InvalidRequestError) and not isinstance(e, ImageRejectedError):
        return UploadError(e.raw_message, request_id=e.request_id, status=e.status, code=e.code)
    return e


def upload(client, data: bytes, content_type: str = "image/png") -> str:
    """Upload bytes and return their ``public_url``; the same bytes are uploaded once per client.

    ``client`` is the :class:`~.client.EachSenseClient` (its connection pool, key, retry loop and
    storage settings; not imported here: the client imports this module).

    Raises :class:`~.errors.UploadError` (no or malformed ``EACHLABS_ORG``, a refused or failed
    upload, one that never completes within ``client.upload_timeout`` s).
    """
    digest = hashlib.sha256(data).hexdigest()
    if digest in client._uploads:
        return client._uploads[digest]
    org = (client.org or "").strip()
    if not org:
        raise UploadError("EACHLABS_ORG is not set; it is needed to upload local images",
                          hint="set EACHLABS_ORG to your organisation id (org-...), or pass the image as a URL")
    if not org.startswith("org-"):
        raise UploadError(f"EACHLABS_ORG={org!r} does not look like an organisation id (org-...)",
                          hint="set EACHLABS_ORG to the org-... id shown in the each::labs console")
    api = f"{client.storage_url}/api/v1/uploads"
    http = client.http

    def initiate(_n):
        with remote_slot():
            r = http.post(api, json={"owner": org, "uploader": "customer", "file_type": "image",
                                     "content_type": content_type},
                          headers={"Content-Type": "application/json", **client._auth_headers(bearer=False)})
        if r.status_code not in (200, 201):
            raise storage_error(http_error(r, "upload"))
        info = r.json()
        for k in ("id", "upload_url", "public_url"):
            if not info.get(k):
                raise UploadError(f"upload: the storage answer lacks {k!r}", request_id=r.headers.get("x-request-id"))
        return info

    info = client._retrying("upload", initiate)
    required = {str(k): str(v) for k, v in (info.get("required_headers") or {"Content-Type": content_type}).items()}

    def put(_n):
        # exactly the required headers: a presigned URL's signature covers them; no key here
        req = httpx.Request("PUT", info["upload_url"], content=data, headers=required)
        with remote_slot():
            r = http.send(req)
        if r.status_code not in (200, 201, 204):
            raise storage_error(http_error(r, "upload PUT"))

    client._retrying("upload PUT", put)
    deadline = time.monotonic() + client.upload_timeout
    status_url = f"{api}/{info['id']}"
    while True:
        def poll(_n):
            with remote_slot():
                r = http.get(status_url, headers=client._auth_headers(bearer=False))
            if r.status_code != 200:
                raise storage_error(http_error(r, "upload status"))
            return r

        r = client._retrying("upload status", poll)
        st = r.json()
        status = str(st.get("status", "")).upper()
        if status == "COMPLETED":
            break
        if status in ("ERROR", "FAILED"):
            raise UploadError(f"upload failed: {st.get('error') or 'status ERROR'}",
                              request_id=r.headers.get("x-request-id") or st.get("request_id"))
        if time.monotonic() > deadline:
            raise UploadError(f"upload still {status or 'unknown'} after {client.upload_timeout:.0f} s",
                              hint="retry later, or raise EACHSENSE_UPLOAD_TIMEOUT")
        time.sleep(client.poll_interval)  # polling is not a retry: ``sleep`` records retries only
    client._uploads[digest] = info["public_url"]
    log.info("eachsense: uploaded %d bytes as %s", len(data), short_url(info["public_url"]))
    return info["public_url"]
