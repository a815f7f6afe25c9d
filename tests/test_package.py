"""depthcraft as an installed wheel inside a Prefect project that has its own ``flows`` and ``tasks``.

Prefect users name their own code ``flows/`` and ``tasks/``; depthcraft installs under one
import name, ``depthcraft``, so it must never shadow or graft into theirs. The wheel is built
from this checkout and installed into a fresh virtual environment (its dependencies are lent by
the test's own environment through a ``.pth`` line, so no download happens); everything then
runs from a temporary project folder whose ``flows`` and ``tasks`` packages are the user's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest

from conftest import REPO

USER_FLOWS = "WHO = 'user flows'\n"
USER_TASKS = "WHO = 'user tasks'\n"
RECIPE = """\
version: 1
name: shop
provider: classic
inputs:
  images: ["photos/*.png"]
steps:
  - {id: depth, uses: estimate}
  - {id: files, uses: export, from: depth, with: {formats: [grayscale]}}
output: out/{recipe}/{image}/
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    build = tmp_path_factory.mktemp("build")
    src = build / "src"
    # a copy without build leftovers, so the wheel holds exactly what the project declares
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info",
                                                             "__pycache__", "out", ".depthcraft"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(dist), str(src)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "License classifiers are deprecated" not in r.stderr and "license` as a TOML table" not in r.stderr
    (whl,) = dist.glob("depthcraft-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(tmp_path_factory, wheel) -> Path:
    env = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=120)
    py = env / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # dependencies from the test environment (appended after the venv's own site-packages, so the
    # wheel installed below wins over the checkout's editable install)
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
                       capture_output=True, text=True, timeout=300)
    if r.returncode and "no such option: --python" in r.stderr:  # pip < 22.3
        r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", site, str(wheel)],
                           capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return env


@pytest.fixture
def project(tmp_path, photos) -> Path:
    """A Prefect-style project folder with its own ``flows`` and ``tasks`` packages."""
    for pkg, body in (("flows", USER_FLOWS), ("tasks", USER_TASKS)):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text(body)
    (tmp_path / "flows" / "etl.py").write_text("from tasks import WHO as T\nWHO = 'user etl'\n")
    (tmp_path / "photos").mkdir()
    shutil.copy(photos["coffee"], tmp_path / "photos" / "coffee.png")
    (tmp_path / "shop.yaml").write_text(RECIPE)
    return tmp_path


def _run(venv: Path, project: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["DEPTHCRAFT_HOME"] = str(project / "ws")
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(list(args), cwd=project, env=env, capture_output=True, text=True, timeout=timeout)


def test_wheel_installs_only_under_depthcraft(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"depthcraft", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}, tops
    assert "depthcraft/__init__.py" not in names  # a namespace package: no folder of its own in the checkout
    for must in ("depthcraft/flows/cli.py", "depthcraft/tasks/estimate.py", "depthcraft/tasks/lib/store.py",
                 "depthcraft/tasks/providers/classic.py", "depthcraft/flows/py.typed"):
        assert must in names
    # every source file of the checkout's packages is in the wheel (a subpackage missing from
    # pyproject's package list would install a depthcraft that fails on first use)
    for root, pkg in ((REPO / "flows", "depthcraft/flows"), (REPO / "tasks", "depthcraft/tasks")):
        for f in root.rglob("*"):
            if f.is_file() and "__pycache__" not in f.parts and f.suffix in (".py", ".html", ".js", ".frag"):
                assert f"{pkg}/{f.relative_to(root).as_posix()}" in names, f"{f} is not in the wheel"
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in meta
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "depthcraft = depthcraft.flows.cli:main" in entry


def test_user_imports_get_the_users_code(venv, project):
    code = ("import flows, tasks, flows.etl, importlib.util as u;"
            "import depthcraft.flows.cli, depthcraft.tasks.catalog as c;"
            "print(flows.WHO, '|', tasks.WHO, '|', flows.etl.WHO, '|', flows.__file__, '|', depthcraft.flows.cli.__file__,"
            "'|', u.find_spec('flows.scale'), '|', sorted(c.steps())[:2])")
    r = _run(venv, project, str(venv / "bin" / "python"), "-c", code)
    assert r.returncode == 0, r.stderr
    who_f, who_t, etl, ffile, cli, scale, steps = [x.strip() for x in r.stdout.split("|")]
    assert (who_f, who_t, etl) == ("user flows", "user tasks", "user etl")
    assert Path(ffile).parent == project / "flows"
    assert Path(cli).is_relative_to(venv), cli  # the wheel's code, not the checkout's
    assert scale == "None"  # nothing of depthcraft's is grafted into the user's package
    assert steps == "['bokeh', 'estimate']"


def test_every_command_works_in_the_project(venv, project, prefect_server):
    dc = str(venv / "bin" / "depthcraft")
    for args in (["steps"], ["validate", "shop.yaml"], ["models", "list"], ["session", "list"]):
        r = _run(venv, project, dc, *args)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    r = _run(venv, project, dc, "estimate", "photos/coffee.png", "-o", "d.png", "--provider", "classic")
    assert r.returncode == 0 and (project / "d.png").stat().st_size > 0, r.stderr
    r = _run(venv, project, dc, "stereo", "photos/coffee.png", "--depth", "d.png", "-o", "pair.png")
    assert r.returncode == 0 and (project / "pair.png").exists(), r.stderr
    r = _run(venv, project, dc, "run", "shop.yaml", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (project / "out" / "shop" / "coffee" / "files.png").exists()
    r = _run(venv, project, dc, "runs", "--json")
    assert r.returncode == 0 and json.loads(r.stdout), r.stderr


def test_work_pool_deployment_runs_on_a_worker_started_in_the_project(venv, project, prefect_server):
    from prefect.client.orchestration import get_client

    pool = f"shop-pool-{os.getpid()}"
    r = _run(venv, project, str(venv / "bin" / "depthcraft"), "deploy", "shop.yaml", "--work-pool", pool, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    info = json.loads(r.stdout)
    assert info["entrypoint"].startswith("depthcraft.flows.")
    with get_client(sync_client=True) as c:
        fr = c.create_flow_run_from_deployment(info["id"])
    # the worker runs in the project folder, where `flows` and `tasks` are the user's packages
    # (`python -m prefect`: the venv borrows Prefect from the test environment, without its script)
    w = _run(venv, project, str(venv / "bin" / "python"), "-m", "prefect", "worker", "start", "--pool", pool,
             "--run-once")
    deadline = time.time() + 60
    with get_client(sync_client=True) as c:
        while True:
            state = c.read_flow_run(fr.id).state
            if state.is_final() or time.time() > deadline:
                break
            time.sleep(1)
    assert state.is_completed(), w.stdout[-3000:] + w.stderr[-3000:]
    assert (project / "out" / "shop" / "coffee" / "files.png").exists()
