"""Scale-out: a batch on a local Dask cluster of two worker processes gives the same outputs as
the default thread runner; recipe concurrency limits become Prefect tag limits and hold."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest

from conftest import run_cli, settled_task_runs

def batch_recipe(folder: Path, photos: dict[str, Path], name: str, extra: str = "") -> Path:
    r = folder / f"{name}.yaml"
    imgs = ", ".join(f'"{p}"' for p in photos.values())
    r.write_text(textwrap.dedent(f"""\
        version: 1
        name: {name}
        inputs:
          images: [{imgs}]
        steps:
          - {{id: depth, uses: estimate}}
          - {{id: files, uses: export, from: depth, with: {{formats: [grayscale, npy]}}}}
        output: out/{{recipe}}/{{image}}/
        """) + extra)
    return r


def hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name not in ("manifest.json", "index.html")}  # both record the run


def test_dask_runner_from_recipe_and_address(tmp_path, photos):
    from depthcraft.flows.recipe import load_recipe
    from depthcraft.flows.scale import dask_runner

    r = batch_recipe(tmp_path, photos, "d", "task_runner: dask\ndask: {workers: 3, threads_per_worker: 2}\n")
    recipe, _ = load_recipe(r)
    runner = dask_runner(recipe)
    assert runner.address is None
    assert runner.cluster_kwargs["n_workers"] == 3 and runner.cluster_kwargs["threads_per_worker"] == 2
    assert runner.cluster_kwargs["processes"] is True
    assert dask_runner(recipe, address="tcp://10.0.0.5:8786").address == "tcp://10.0.0.5:8786"


def test_dask_batch_gives_the_same_outputs_as_threads(prefect_server, tmp_path, photos):
    from depthcraft.flows.recipe import load_recipe
    from depthcraft.flows.runner import run_recipe
    from depthcraft.flows.scale import dask_runner

    recipe = batch_recipe(tmp_path, photos, "same")
    a = run_recipe(recipe, out_root=str(tmp_path / "threads"), workspace=str(tmp_path / "ws-threads"))
    dask = dask_runner(load_recipe(recipe)[0])  # the defaults: a local cluster of 2 worker processes
    assert dask.cluster_kwargs["n_workers"] == 2
    b = run_recipe(recipe, out_root=str(tmp_path / "dask"), workspace=str(tmp_path / "ws-dask"), task_runner=dask)
    assert a["failures"] == [] and b["failures"] == []
    assert a["computed"] == b["computed"] == len(photos) * 2
    ha, hb = hashes(tmp_path / "threads"), hashes(tmp_path / "dask")
    assert ha == hb
    for name in photos:  # what each step publishes
        assert {f"out/same/{name}/{f}" for f in ("depth.png", "files.png", "files-npy.npy")} <= set(ha)

    trs = settled_task_runs(b["run_id"], len(photos) * 2)
    assert len(trs) == len(photos) * 2 and all(t.state.is_completed() for t in trs)


def test_cli_dask_flag_runs_the_batch(prefect_server, tmp_path, photos):
    recipe = batch_recipe(tmp_path, {"coffee": photos["coffee"]}, "cli-dask")
    r = run_cli("--workspace", tmp_path / "ws", "run", recipe, "--task-runner", "dask", "--json",
                "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "cli-dask" / "coffee" / "files.png").exists()
    # the local cluster closes before the interpreter's exit hooks: no traceback from
    # distributed's close_clusters meeting a cluster still closing
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, r.stderr[-2000:]
    # the Dask workers' work folders lived inside the run's own, removed with it
    assert not any((tmp_path / "ws" / "tmp").iterdir()), list((tmp_path / "ws" / "tmp").rglob("*"))


def _child_tmp(root, q):
    from depthcraft.flows.recovery import process_tmp
    from depthcraft.flows.workspace import Workspace

    q.put(str(process_tmp(Workspace.default(root))))


def test_a_dask_workers_work_folders_live_inside_its_parents(tmp_path):
    """A daemonic child (what a local Dask worker is) works inside the run's own folder, so the
    run's clean-up at the end or on Ctrl-C, and the next run's after a kill -9, remove it too."""
    import multiprocessing

    from depthcraft.flows.recovery import process_tmp
    from depthcraft.flows.workspace import Workspace

    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child_tmp, args=(str(tmp_path), q), daemon=True)
    p.start()
    child = q.get(timeout=60)
    p.join(60)
    mine = process_tmp(Workspace.default(str(tmp_path)))
    assert child.startswith(str(mine) + "/w") and child != str(mine)


def test_concurrency_limits_become_tag_limits(prefect_server):
    from depthcraft.flows.recipe import Recipe
    from depthcraft.flows.limits import apply_concurrency_limits, read_concurrency_limits

    base = {"name": "lim", "inputs": {"images": ["x.png"]}, "steps": [{"id": "d", "uses": "estimate"}]}
    applied = apply_concurrency_limits(Recipe.model_validate({**base, "concurrency": {"eachsense": 4, "gpu-x": 1}}))
    assert applied == {"eachsense": 4, "gpu-x": 1}
    assert read_concurrency_limits(["eachsense", "gpu-x", "nothing-here"]) == {"eachsense": 4, "gpu-x": 1,
                                                                               "nothing-here": None}
    apply_concurrency_limits(Recipe.model_validate({**base, "concurrency": {"eachsense": 2}}))  # updates in place
    assert read_concurrency_limits(["eachsense", "gpu-x"]) == {"eachsense": 2, "gpu-x": 1}
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="eachsense"):  # (a limit below 1 is the recipe's own error now)
        Recipe.model_validate({**base, "concurrency": {"eachsense": 0}})
    from depthcraft.flows.limits import limited_tags

    assert {"eachsense", "gpu-x"} <= limited_tags() and "classic" not in limited_tags()
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as c:  # leave the shared server as found
        for tag in ("eachsense", "gpu-x"):
            c.delete_concurrency_limit_by_tag(tag)
    assert read_concurrency_limits(["eachsense"]) == {"eachsense": None}


def test_a_tag_limit_of_one_serialises_the_steps(prefect_server, tmp_path, photos):
    """With ``concurrency: {step:estimate: 1}`` no two estimate task runs overlap in time,
    even on a runner with several threads."""
    from prefect.client.orchestration import get_client

    from depthcraft.flows.recipe import load_recipe
    from depthcraft.flows.runner import run_recipe
    from depthcraft.flows.limits import apply_concurrency_limits

    recipe = batch_recipe(tmp_path, photos, "serial", "concurrency: {'step:estimate': 1}\n")
    apply_concurrency_limits(load_recipe(recipe)[0])
    s = run_recipe(recipe, out_root=str(tmp_path), workspace=str(tmp_path / "ws"))
    assert s["failures"] == []
    trs = settled_task_runs(s["run_id"], len(photos) * 2)
    with get_client(sync_client=True) as c:
        c.delete_concurrency_limit_by_tag("step:estimate")  # leave the shared server as found
    spans = sorted((t.start_time, t.end_time) for t in trs if t.name.startswith("depth["))
    assert len(spans) == len(photos)
    for (s0, e0), (s1, _) in zip(spans, spans[1:]):
        assert e0 <= s1, "two estimate runs overlapped despite the limit of 1"
