"""Hostile-user checks of features that landed together (pause/resume names, ...): each test failed
on the code before its fix."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _cli(*args, cwd, env=None):
    return subprocess.run([sys.executable, "-m", "depthcraft.flows.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env=env)


@pytest.mark.parametrize("name", ["a/b/c", "", " ", "a/", "/b"])
def test_pause_resume_refuse_a_malformed_name_in_one_line_without_a_server(tmp_path, name):
    """Before: `pause a/b/c` was a Prefect ValueError traceback (exit 1); `pause ''` said
    'e.g. depthcraft-/' and named nothing; each started a Prefect server first."""
    ws = tmp_path / "ws"
    for verb in ("pause", "resume"):
        r = _cli("--workspace", str(ws), verb, "ok/fine", name, cwd=tmp_path)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
        assert "FLOW/NAME" in lines[0] and (repr(name) if not name.strip() else name) in lines[0], lines[0]
        assert "depthcraft-/" not in lines[0]
    assert not (ws / "prefect").exists()  # no server was started for a name that cannot be one
