"""A step stopped by Ctrl-C must not crash the flow that waits for it (CI failure of stop 20).

A step that sees the stop flag raises ``cancel.Interrupted`` (a ``KeyboardInterrupt``) in its
task thread. Prefect's thread-pool future re-raises it from ``wait()`` in the flow's thread,
where Prefect's engine took it for a crash of the flow and reported the flow run *Crashed*;
under load that report came after the main thread had set *Cancelled*, and stayed.
These tests run real Prefect flows against the session's loopback server.
"""

from __future__ import annotations

import signal
import time

import pytest
from prefect import flow, task
from prefect.task_runners import ThreadPoolTaskRunner

from depthcraft.flows import interrupt, serverwatch
from depthcraft.tasks.lib import cancel


@pytest.fixture(autouse=True)
def _clear_stop_flag():
    cancel.reset()
    yield
    cancel.reset()


@task
def stopped_step(delay: float) -> str:
    time.sleep(delay)
    cancel.request(signal.SIGTERM)  # the signal lands while the flow thread waits for this step
    cancel.check()  # what a step does at its next frame: raises cancel.Interrupted
    return "never"


def _flow_state(fn):
    from prefect.client.orchestration import get_client

    state = fn(return_state=True)
    with get_client(sync_client=True) as c:
        return state, c.read_flow_run(state.state_details.flow_run_id).state


@pytest.mark.parametrize("waiter", ["serverwatch.wait_state", "interrupt.wait"])
def test_a_step_stopped_while_the_flow_waits_does_not_crash_the_flow(prefect_server, waiter):
    seen = []

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=2))
    def waits() -> None:
        fut = stopped_step.submit(0.3)
        # a long poll: the flow thread is inside wait() when the step raises
        if waiter == "interrupt.wait":
            seen.append(interrupt.wait(fut, poll=30))
        else:
            seen.append(serverwatch.wait_state(fut, "key", poll=30))

    state, server_state = _flow_state(waits)
    assert server_state.type.value == "COMPLETED", server_state
    assert seen in ([None], [False])  # "stopped", returned rather than raised


def test_a_stop_reaching_the_flow_body_ends_the_run_cancelled_not_crashed(prefect_server, tmp_path, monkeypatch):
    """The recipe flow's own body: a stop that reaches it is the user's (Cancelled)."""
    from depthcraft.flows import runner

    def stopped(*a, **k):
        cancel.request(signal.SIGINT)
        cancel.check()

    monkeypatch.setattr(runner, "run_plan", stopped)
    monkeypatch.setenv("DEPTHCRAFT_HOME", str(tmp_path / "ws"))
    photo = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (32, 24), (90, 120, 30)).save(photo)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"version: 1\nname: r\ninputs:\n  images: ['{photo}']\nsteps:\n  - {{id: depth, uses: estimate}}\n")
    f = runner.flow_for(runner.load_recipe(recipe)[0])
    state = f(recipe_text=recipe.read_text(), recipe_file=str(recipe), out_root=str(tmp_path), return_state=True)
    assert state.is_cancelled(), state
    assert "interrupted by SIGINT" in state.message
