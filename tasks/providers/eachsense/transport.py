"""The HTTP layer: one ``httpx.Client`` per each::sense client, with a swappable transport.

``transport`` replaces the network (``httpx.MockTransport`` in tests, as httpx intends); the
timeouts follow the vendor's advice (connect 30 s, read long enough for a 10-minute depth job).
"""

from __future__ import annotations

from urllib.parse import urlparse

import httpx

from ...lib import cancel


def make_timeout(connect: float, read: float) -> httpx.Timeout:
    """Connect and pool waits of ``connect`` s, ``read`` s between bytes of a stream, 120 s writes."""
    return httpx.Timeout(connect=connect, read=read, write=120.0, pool=connect)


def make_http_client(timeout: httpx.Timeout, transport: httpx.BaseTransport | None = None) -> httpx.Client:
    """The connection pool every request of one :class:`~.client.EachSenseClient` goes through."""
    # after Ctrl-C / SIGTERM no request leaves this process (each one may be a paid call)
    return httpx.Client(timeout=timeout, transport=transport, follow_redirects=True,
                        event_hooks={"request": [lambda _req: cancel.check()]})


def short_url(url: str) -> str:
    """``url`` without its query (presigned URLs carry credentials there) for logs and messages."""
    p = urlparse(url)
    return f"{p.scheme}://{p.netloc}{p.path}"
