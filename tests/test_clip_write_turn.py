"""Clip one-shots take the one-shot write turn (flows/outlock.py: oneshot_writing) that photo
one-shots take: two one-shots writing one -o write one set of files, never a mix. Before, a clip
one-shot wrote its frames or videos whenever it was done, while another was writing the same -o."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from cliputil import make_clip

DEPTHCRAFT = [sys.executable, "-m", "depthcraft.flows.cli"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("c") / "walk.mp4", n=12, size=(96, 64))


def test_a_clip_one_shot_waits_while_another_command_writes_its_output(clip, tmp_path):
    """The test holds the write turn of `out/`, as a one-shot in the middle of its copies would."""
    from depthcraft.flows.outlock import oneshot_writing

    out = tmp_path / "frames"
    err = tmp_path / "err.txt"
    with oneshot_writing(out):  # held by this (another) process
        with open(err, "w") as e:
            p = subprocess.Popen([*DEPTHCRAFT, "estimate", str(clip), "--provider", "classic", "-o", f"{out}/"],
                                 stdout=subprocess.DEVNULL, stderr=e, text=True)
        deadline = time.monotonic() + 120
        while "waiting for another command" not in err.read_text() and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert p.poll() is None, err.read_text()  # (before: it wrote its frames and exited)
        time.sleep(1.0)
        assert p.poll() is None and not (out.exists() and any(out.iterdir()))  # waiting, nothing written
    assert p.wait(timeout=120) == 0, err.read_text()
    said = err.read_text()
    assert f"waiting for another command writing {out}" in said and len(list(out.iterdir())) == 12, said


def test_two_clip_one_shots_writing_one_folder_leave_one_set_of_frames(clip, tmp_path):
    """8-bit and 16-bit frames under the same names: the folder holds one command's set."""
    out = tmp_path / "same"
    cmds = [["estimate", str(clip), "--provider", "classic", "--format", fmt, "-o", f"{out}/"]
            for fmt in ("grayscale", "png16")]
    for _ in range(2):
        procs = [subprocess.Popen([*DEPTHCRAFT, *c], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for c in cmds]
        for p in procs:
            _, e = p.communicate(timeout=180)
            assert p.returncode == 0, e
        depths = {cv2.imread(str(f), cv2.IMREAD_UNCHANGED).dtype for f in sorted(out.iterdir())}
        assert len(list(out.iterdir())) == 12 and len(depths) == 1, depths
    assert not [f for f in out.parent.rglob(".*")]  # no temp file left


def test_one_shots_writing_different_outputs_never_wait_for_each_other(tmp_path):
    """The turn was one of 256 lock files picked by the output's path: one pair of unrelated
    outputs in 256 waited for each other (and said "waiting for another command writing" an
    output nobody else wrote). Each output has its own lock now, removed after."""
    import hashlib
    import os
    import threading

    from depthcraft.flows.outlock import _registry, oneshot_writing

    a = tmp_path / "a.png"
    # another output whose path fell in the same one of 256 buckets as a's
    bucket = hashlib.sha256(os.path.abspath(a).encode()).hexdigest()[:2]
    b = next(p for p in (tmp_path / f"b{i}.png" for i in range(100_000))
             if hashlib.sha256(os.path.abspath(p).encode()).hexdigest()[:2] == bucket)
    before = set(_registry().glob("oneshot-*"))

    def write_b():
        with oneshot_writing(b):
            entered.set()

    entered = threading.Event()
    with oneshot_writing(a):
        # (flock locks belong to an open file, so a thread stands in for another process)
        t = threading.Thread(target=write_b, daemon=True)
        t.start()
        assert entered.wait(10), "writing b waited for a"
    t.join(10)
    assert set(_registry().glob("oneshot-*")) <= before  # no lock file left behind
