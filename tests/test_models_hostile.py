"""A hostile user against the model download and cache (round 2): a fast server under a window
close to the rule's own sample size, compressed answers (a gzip bomb), error text that a server
controls, a damaged ``trusted.json`` or stamp, and settings that are not numbers. Real loopback
servers and real files; the stall rule is also driven with a fake clock where timing is the point."""

from __future__ import annotations

import json
import socket
import threading
import zlib

import pytest

pytest.importorskip("onnx")

from conftest import run_cli  # noqa: E402
from test_auto import MODEL, cache, registry  # noqa: E402,F401 - fixtures
from test_models import env  # noqa: E402,F401 - fixture

from depthcraft.flows import cli_models  # noqa: E402
from depthcraft.tasks.lib import models as M  # noqa: E402
from depthcraft.tasks.lib import stall  # noqa: E402
from depthcraft.tasks.providers import auto  # noqa: E402


class _Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


@pytest.mark.parametrize("window", [0.1, 0.2, 1.0, 10.0])
def test_a_fast_bursty_server_never_trips_the_rule(window):
    """Bursts of 100 KB every 0.9 window (far above 10 KB/s): every window holds a burst, so the
    rule must never trip. Before, samples were merged into 0.1 s buckets counted from their first
    moment, so a window of 0.1 s (what "0" becomes) failed 11 ms after a burst had arrived."""
    clock = _Clock()
    g = stall.Guard(stall.StallRule(min_kbps=10, window_s=window), clock=clock)
    g.connected = True
    step = 0.9 * window
    for i in range(1, 40):
        clock.t = 100.0 + i * step
        g.budget(None)  # raises Stalled when the rule fails
        g.got(50_000)
        clock.t += min(0.011, step / 10)
        g.got(50_000)
        g.check()
