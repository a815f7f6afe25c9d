"""Forked worker processes (tasks/lib/forked.py): order, shared-memory results, errors, and the
faults a user meets: a worker killed, the parent killed with kill -9, Ctrl-C, an early stop."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from depthcraft.tasks.lib import forked
from depthcraft.tasks.lib.errors import WorkerError
from depthcraft.tasks.lib.forked import forked_map

pytestmark = pytest.mark.skipif(not forked.available(), reason="forked workers are Linux only")

REPO = Path(__file__).resolve().parents[1]
SHAPES = [((4, 5), np.int32), ((3,), np.float64)]


def _square(item, outs):
    outs[0][:] = item
    outs[1][:] = (item, item * item, os.getpid())
    return item * 10


@pytest.fixture(autouse=True)
def _baseline():
    """Children that other tests started (a Prefect server, its workers) are not ours."""
    global _BEFORE
    _BEFORE = {c.pid for c in psutil.Process().children(recursive=True)}
    yield


_BEFORE: set[int] = set()


def _alive_children() -> list[psutil.Process]:
    """This test's child processes that still run (zombies excluded)."""
    out = []
    for c in psutil.Process().children(recursive=True):
        if c.pid in _BEFORE:
            continue
        try:
            if c.status() != psutil.STATUS_ZOMBIE:
                out.append(c)
        except psutil.NoSuchProcess:
            pass
    return out


def _gone(pids: list[int], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_results_come_back_in_order_from_shared_memory(workers):
    got = []
    for outs, value in forked_map(_square, range(23), shapes=SHAPES, workers=workers):
        got.append((outs[0].copy(), outs[1].copy(), value))
    assert [v for _, _, v in got] == [i * 10 for i in range(23)]
    for i, (a, b, _) in enumerate(got):
        assert (a == i).all() and b[0] == i and b[1] == i * i
    pids = {int(b[2]) for _, b, _ in got}
    assert os.getpid() not in pids and len(pids) == workers  # computed in the workers
    assert not _alive_children()


def test_an_exception_in_a_worker_is_raised_in_the_parent_after_the_results_before_it():
    def bad(item, outs):
        if item == 5:
            raise ValueError(f"bad item {item}")
        return item

    seen = []
    with pytest.raises(ValueError, match="bad item 5"):
        for _, value in forked_map(bad, range(20), shapes=SHAPES, workers=2):
            seen.append(value)
    assert seen == [0, 1, 2, 3, 4]
    assert not _alive_children()


def test_an_exception_that_does_not_pickle_still_names_its_cause():
    class Odd(Exception):
        def __reduce__(self):
            raise TypeError("cannot pickle this")

    def bad(item, outs):
        raise Odd("the real cause")

    with pytest.raises(WorkerError, match="Odd: the real cause"):
        list(forked_map(bad, range(3), shapes=SHAPES, workers=2))
    assert not _alive_children()


def test_a_killed_worker_is_one_clear_error_and_the_others_are_reaped():
    def dies(item, outs):
        if item == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return item

    with pytest.raises(WorkerError, match=r"render process 2 of 2 ended without a result \(killed by signal 9"):
        list(forked_map(dies, range(10), shapes=SHAPES, workers=2))
    assert not _alive_children()


def test_a_worker_sent_sigterm_ends_and_does_not_run_the_parents_handler():
    """The parent's SIGTERM handler (a run's cancel) must not run in a worker: the worker ends,
    and the parent reports the signal."""

    class Cancelled(Exception):
        pass

    def handler(signum, frame):
        raise Cancelled("the whole run was cancelled")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        def dies(item, outs):
            if item == 2:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            return item

        with pytest.raises(WorkerError, match="killed by signal 15"):
            list(forked_map(dies, range(6), shapes=SHAPES, workers=2))
    finally:
        signal.signal(signal.SIGTERM, old)
    assert not _alive_children()


class _NeedsCode(Exception):
    """Pickles, but its pickle does not rebuild it (the constructor wants a number)."""

    def __init__(self, code):
        super().__init__(f"interrupted by signal {int(code)}")


def test_an_exception_whose_pickle_does_not_rebuild_it_is_named_not_garbled():
    def bad(item, outs):
        raise _NeedsCode(15)

    with pytest.raises(WorkerError, match="_NeedsCode: interrupted by signal 15"):
        list(forked_map(bad, range(3), shapes=SHAPES, workers=2))


def test_worker_errors_are_one_line_depthcraft_errors():
    from depthcraft.tasks.lib.errors import DepthcraftError

    assert issubclass(WorkerError, DepthcraftError)  # the CLI prints them as one line


def test_a_refused_fork_is_forkfailed_and_leaves_no_worker(monkeypatch):
    """fork refused (strict overcommit, a process limit) at the second worker: ForkFailed,
    before any result, and the first worker is ended."""
    import errno

    from depthcraft.tasks.lib.errors import ForkFailed

    real, calls = os.fork, []

    def fork():
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOMEM, "Cannot allocate memory")
        return real()

    monkeypatch.setattr(os, "fork", fork)
    with pytest.raises(ForkFailed, match="could not start render process 2 of 2"):
        list(forked_map(_square, range(5), shapes=SHAPES, workers=2))
    assert not _alive_children()


def test_stopping_early_ends_the_workers():
    def slow(item, outs):
        time.sleep(0.05)
        return item

    gen = forked_map(slow, range(1000), shapes=SHAPES, workers=2)
    assert [next(gen)[1] for _ in range(3)] == [0, 1, 2]
    assert len(_alive_children()) == 2
    t0 = time.monotonic()
    gen.close()
    assert time.monotonic() - t0 < 2.0
    assert not _alive_children()


def test_workers_hold_no_inherited_descriptors():
    """An encoder's stdin opened before the fork must see EOF when the parent closes it, while
    the workers still run (else ffmpeg would wait for them)."""
    r, w = os.pipe()

    def slow(item, outs):
        time.sleep(0.2)
        return item

    gen = forked_map(slow, range(50), shapes=SHAPES, workers=2)
    try:
        next(gen)
        assert len(_alive_children()) == 2
        os.close(w)
        ready, _, _ = select.select([r], [], [], 3.0)
        assert ready and os.read(r, 1) == b""  # EOF: no worker holds the write end
    finally:
        gen.close()
        os.close(r)


_SCRIPT = textwrap.dedent("""
    import os, signal, sys, time
    # a terminal's process: Ctrl-C is KeyboardInterrupt, whatever the test process left ignored
    # or blocked (both are inherited through fork and exec)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {{signal.SIGINT}})
    sys.path.insert(0, {repo!r})
    import numpy as np
    from depthcraft.tasks.lib.forked import forked_map

    def slow(item, outs):
        time.sleep(0.1)
        return os.getpid()

    try:
        pids = set()
        for _, pid in forked_map(slow, range(10_000), shapes=[((2,), np.uint8)], workers=2):
            pids.add(pid)
            if len(pids) == 2:
                print(" ".join(map(str, sorted(pids))), flush=True)
                pids.add(-1)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(130)
""")


def _start_script(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(_SCRIPT.format(repo=str(REPO)))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    line = proc.stdout.readline().split()
    pids = [int(x) for x in line]
    assert len(pids) == 2 and proc.pid not in pids
    return proc, pids


def _signal_lines(pid: int) -> str:
    try:
        text = open(f"/proc/{pid}/status").read()
    except OSError:
        return "gone"
    return " ".join(ln.replace("\t", "") for ln in text.splitlines() if ln.startswith(("State", "SigBlk", "SigIgn",
                                                                                      "SigCgt")))


def test_kill_9_of_the_parent_takes_its_workers(tmp_path):
    proc, pids = _start_script(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert _gone(pids), "workers outlived a parent killed with kill -9"


def test_ctrl_c_stops_the_parent_and_its_workers(tmp_path):
    proc, pids = _start_script(tmp_path)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends: the whole process group
    try:
        out, _ = proc.communicate(timeout=60)  # a limit, not a speed target (CI under load)
    except subprocess.TimeoutExpired:
        status = {p: _signal_lines(p) for p in [proc.pid, *pids]}
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"no exit 60 s after Ctrl-C; signal state: {status}") from None
    assert proc.returncode == 130 and "interrupted" in out
    assert _gone(pids)


def test_a_worker_killed_during_the_command_is_one_error_line(tmp_path):
    """`depthcraft parallax` with one render process killed: one line naming the signal, no
    traceback, nothing published."""
    import skimage.data as sd

    from depthcraft.tasks.lib.images import write_image

    photo = write_image(tmp_path / "photo.png", sd.coffee()[::2, ::2].copy())
    out = tmp_path / "out.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "depthcraft.flows.cli", "--workspace", str(tmp_path / "ws"),
                             "parallax", str(photo), "-o", str(out), "--duration", "300", "--size", "320x240",
                             "--provider", "classic"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        me = psutil.Process(proc.pid)
        workers = []
        end = time.monotonic() + 120
        while len(workers) < 2 and time.monotonic() < end and proc.poll() is None:
            workers = [c for c in me.children() if "ffmpeg" not in c.name() and c.cmdline()[:1] == [sys.executable]]
            time.sleep(0.1)
        assert len(workers) == 2, "no render processes appeared"
        time.sleep(0.5)
        workers[0].kill()
        out_s, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "Traceback" not in err, err[-3000:]
    lines = [ln for ln in err.splitlines() if "render process" in ln]
    assert lines and "killed by signal 9" in lines[0], err[-3000:]
    assert not out.exists()
    assert _gone([w.pid for w in workers])
