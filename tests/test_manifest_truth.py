"""A manifest tells the truth, and a run can be stopped and resumed (hostile report 3).

Real runs against the test session's Prefect server, real SIGINT and kill -9, real clips:

- ``run --refresh`` and ``reproduce`` recompute every clip segment, and ``reproduce`` never
  calls a cache hit "recomputed";
- an output template that maps several inputs to one folder is refused by ``validate``;
- Ctrl-C or kill -9 during a re-run leaves a manifest whose every record matches the file on
  disk (a partial manifest: flows/outlock.py), and the next run says a killed run's was partial;
- a glob that covers the output folder does not feed outputs back as photos;
- two runs writing to one folder take turns (the second waits, with one line);
- work folders of clip segments of a killed run are removed;
- ``reproduce`` with a missing input or a malformed manifest: one line, no traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import DEPTHCRAFT, run_cli

REPO = Path(__file__).resolve().parents[1]
VIDEO = REPO / "recipes" / "video-3d.yaml"


def sha(p) -> str:
    from depthcraft.tasks.lib.store import sha256_file

    return sha256_file(p)


def lies(manifest_path: Path) -> list[str]:
    """Records of a manifest whose file on disk does not hold the recorded bytes."""
    m = json.loads(Path(manifest_path).read_text())
    bad = []
    for n in m["steps"]:
        for o in (n.get("outputs") or {}).values():
            p = Path(o["path"])
            if p.is_file() and sha(p) != o["sha256"]:
                bad.append(p.name)
            elif not p.exists():
                bad.append(f"{p.name} (missing)")
    return bad


class Proc:
    """A depthcraft command in a subprocess, its stderr in a file (a pipe could fill up)."""

    def __init__(self, tmp_path: Path, *args, env: dict | None = None):
        self.err = tmp_path / f"stderr-{time.monotonic_ns()}"
        with open(self.err, "w") as er:
            self.p = subprocess.Popen([*DEPTHCRAFT, *map(str, args)], stdout=subprocess.DEVNULL, stderr=er,
                                      env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
                                      start_new_session=True)

    @property
    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def wait_for(self, cond, what, timeout: float = 180) -> None:
        """Until ``cond()``; ``what`` (text, or a function giving it) says what is awaited."""
        deadline = time.time() + timeout
        said = what
        what = lambda: said() if callable(said) else said  # noqa: E731 - read when it failed
        while time.time() < deadline:
            if cond():
                return
            assert self.p.poll() is None, f"ended before {what()}: {self.stderr[-2000:]}"
            time.sleep(0.1)
        self.kill()
        raise AssertionError(f"no {what()} within {timeout} s: {self.stderr[-2000:]}")

    def kill(self):
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait()


LONG = """\
version: 1
name: {name}
provider: classic
inputs:
  images: ["{photo}"]
steps:
  - {{id: depth, uses: estimate}}
  - {{id: edges, uses: refine, from: depth}}
  - {{id: video, uses: parallax, from: edges, with: {{duration: 0.2, fps: 10, motion: dolly}}}}
output: out/{{recipe}}/{{image}}/
"""


# -- 3: Ctrl-C and kill -9 during a re-run ---------------------------------------------------------
def test_interrupted_or_killed_rerun_leaves_a_manifest_that_matches_the_files(prefect_server, workspace, tmp_path,
                                                                              photos):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(LONG.format(name="truth", photo=photos["coffee"]))
    out = tmp_path / "o"
    r = run_cli("run", recipe, "--out", out)
    assert r.returncode == 0, r.stderr
    folder = out / "out" / "truth" / "coffee"
    assert lies(folder / "manifest.json") == []
    for n, (radius, sig) in enumerate(((3, signal.SIGINT), (9, signal.SIGKILL))):
        before = sha(folder / "edges.png")
        p = Proc(tmp_path, "run", recipe, "--out", out, "--set", f"steps.edges.with.radius={radius}",
                 "--set", "steps.video.with.duration=600")  # the video keeps it running
        p.wait_for(lambda: sha(folder / "edges.png") != before, "a new edges.png")
        time.sleep(1.5)  # the manifest may lag a publish by half a second: never lead it
        if sig == signal.SIGKILL:
            p.kill()
        else:
            os.kill(p.p.pid, sig)
            assert p.p.wait(60) == 130, p.stderr[-2000:]
        m = json.loads((folder / "manifest.json").read_text())
        assert lies(folder / "manifest.json") == [], "the manifest lists files it does not hold"
        assert {s["step"] for s in m["steps"]} >= {"depth", "edges"} and "video" not in {s["step"] for s in m["steps"]}
        assert m["partial"]["state"] == ("interrupted" if sig == signal.SIGINT else "running"), m["partial"]
    # the next run says the killed run's manifest was partial, and ends with the whole truth
    r = run_cli("run", recipe, "--out", out)
    assert r.returncode == 0, r.stderr
    assert "was killed before it finished" in r.stderr, r.stderr
    m = json.loads((folder / "manifest.json").read_text())
    assert "partial" not in m and lies(folder / "manifest.json") == []


# -- 5: two runs writing to one folder ---------------------------------------------------------
def test_two_runs_writing_to_one_folder_take_turns(prefect_server, workspace, tmp_path, photos):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    # A renders long enough to still hold the folder when B, started under load, gets there
    # (6000 small frames took 14 s: a busy machine could start B after A had finished)
    a.write_text(LONG.format(name="same", photo=photos["chelsea"])
                 .replace("duration: 0.2, fps: 10", "duration: 600, fps: 60, size: 640x480"))
    b.write_text(LONG.format(name="same", photo=photos["chelsea"]).replace("duration: 0.2", "duration: 0.3")
                 .replace("id: edges, uses: refine, from: depth", "id: edges, uses: refine, from: depth, "
                          "with: {radius: 2}"))
    out = tmp_path / "o"
    folder = out / "out" / "same" / "chelsea"
    pa = Proc(tmp_path, "run", a, "--out", out)
    try:
        pa.wait_for(lambda: (folder / "edges.png").exists(), "A's edges.png")
        pb = Proc(tmp_path, "run", b, "--out", out)
        pb.wait_for(lambda: "waiting for run" in pb.stderr, lambda: f"B waiting for A (A: {pa.p.poll()} {pa.stderr})")
        line = [x for x in pb.stderr.splitlines() if "waiting for run" in x]
        assert len(line) == 1 and f"(pid {pa.p.pid})" in line[0] and str(folder) in line[0], line
        os.kill(pa.p.pid, signal.SIGINT)
        assert pa.p.wait(60) == 130
        assert pb.p.wait(180) == 0, pb.stderr[-2000:]
    finally:
        pa.kill()
    m = json.loads((folder / "manifest.json").read_text())
    assert "partial" not in m and lies(folder / "manifest.json") == []
    assert m["recipe"]["file"] == str(b)


# -- 2: an output template that maps several inputs to one folder ----------------------------------
def test_a_template_without_image_for_several_inputs_is_refused(workspace, tmp_path, photos):
    for p in ("astronaut", "chelsea"):
        shutil.copy(photos[p], tmp_path / f"{p}.png")
    recipe = tmp_path / "flat.yaml"
    recipe.write_text("version: 1\nname: flat\nprovider: classic\ninputs:\n  images: ['*.png']\n"
                      "steps:\n  - {id: depth, uses: estimate}\noutput: \"out/{recipe}/\"\n")
    for cmd in ("validate", "run"):
        r = run_cli(cmd, recipe, "--out", tmp_path)
        assert r.returncode == 2, (cmd, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "flat.yaml:8" in lines[0] and "one folder" in lines[0], r.stderr
        assert "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()
    # {session} is the same for every input too; one photo in one folder is fine
    recipe.write_text(recipe.read_text().replace("{recipe}/", "{session}/"))
    assert run_cli("validate", recipe, "--out", tmp_path).returncode == 2
    recipe.write_text(recipe.read_text().replace("'*.png'", "'astronaut.png'"))
    assert run_cli("validate", recipe, "--out", tmp_path).returncode == 0


def test_two_steps_that_would_write_one_file_fail_the_second_in_one_line(prefect_server, workspace, tmp_path,
                                                                           photos):
    """Step `pair-left` and the left view of step `pair` are one file: the second to publish it fails
    with one line naming both steps, and the manifest lists the file once. Ids that only start with
    another step's id (`depth-hq`) write files of their own and are taken."""
    (tmp_path / "astronaut.png").write_bytes(photos["astronaut"].read_bytes())
    recipe = tmp_path / "ids.yaml"
    recipe.write_text(
        "version: 1\nname: ids\ninputs:\n  images: ['astronaut.png']\nsteps:\n"
        "  - {id: depth, uses: estimate}\n  - {id: depth-hq, uses: refine, from: depth}\n"
        "  - {id: pair, uses: stereo, from: depth, with: {layout: lr}}\n  - {id: pair-left, uses: estimate}\n"
        "output: out/{recipe}/{image}/\n")
    assert run_cli("validate", recipe, "--out", tmp_path).returncode == 0
    r = run_cli("run", recipe, "--out", tmp_path, "--json")
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    s = json.loads(r.stdout)
    assert [(f["step"], f["image"]) for f in s["failures"]] == [("pair-left", "astronaut")], s["failures"]
    err = s["failures"][0]["error"]
    assert "pair-left.png" in err and "'pair'" in err and "'pair-left'" in err, err
    m = json.loads((tmp_path / "out" / "ids" / "astronaut" / "manifest.json").read_text())
    paths = [o["path"] for n in m["steps"] for o in (n.get("outputs") or {}).values()]
    assert len(paths) == len(set(paths)) and any(p.endswith("depth-hq.png") for p in paths)



def test_a_step_whose_file_another_step_wrote_publishes_none_of_its_files(prefect_server, workspace, tmp_path,
                                                                          photos):
    """`pair-left` listed (and run) before `pair`: `pair` fails on its left view in one line, and its
    right view is not published either: a refused step leaves no half of its outputs behind."""
    (tmp_path / "astronaut.png").write_bytes(photos["astronaut"].read_bytes())
    recipe = tmp_path / "ids2.yaml"
    recipe.write_text(
        "version: 1\nname: ids2\ninputs:\n  images: ['astronaut.png']\nsteps:\n"
        "  - {id: pair-left, uses: estimate}\n  - {id: depth, uses: estimate, from: pair-left}\n"
        "  - {id: pair, uses: stereo, from: depth, with: {layout: lr}}\n"
        "output: out/{recipe}/{image}/\n")
    r = run_cli("run", recipe, "--out", tmp_path, "--json")
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    s = json.loads(r.stdout)
    assert [(f["step"], f["image"]) for f in s["failures"]] == [("pair", "astronaut")], s["failures"]
    assert "'pair-left'" in s["failures"][0]["error"], s["failures"][0]["error"]
    out = tmp_path / "out" / "ids2" / "astronaut"
    assert (out / "pair-left.png").is_file() and (out / "depth.png").is_file()
    assert not [p.name for p in out.iterdir() if p.name.startswith("pair-") and p.name != "pair-left.png"]


# -- 4: a glob that covers the output folder; 7: reproduce with a missing input ----------------------
def test_a_glob_over_its_own_outputs_does_not_feed_them_back(prefect_server, workspace, tmp_path, photos):
    shutil.copy(photos["astronaut"], tmp_path / "astronaut.png")
    recipe = tmp_path / "self.yaml"
    recipe.write_text("version: 1\nname: selfglob\nprovider: classic\ninputs:\n  images: ['**/*.png']\n"
                      "steps:\n  - {id: depth, uses: estimate}\n  - {id: pair, uses: stereo, from: depth}\n"
                      "output: out/{recipe}/{image}/\n")
    for k in range(2):
        r = run_cli("run", recipe, "--out", tmp_path, "--json")
        assert r.returncode == 0, r.stderr
        s = json.loads(r.stdout[r.stdout.index("{"):])
        assert s["images"] == 1, s
        if k == 0:  # what a writer killed mid-publish leaves: removed by the next run writing there
            folder = tmp_path / "out" / "selfglob" / "astronaut"
            (folder / ".pair.png.x1y2z3ab.tmp").write_bytes(b"half")
            os.utime(folder / ".pair.png.x1y2z3ab.tmp", (time.time() - 120, time.time() - 120))
            (folder / ".frames.part-999999").mkdir()
            (folder / ".frames.part-999999" / "000000.png").write_bytes(b"half")
    assert not list(folder.glob(".*.tmp")) and not list(folder.glob(".*.part-*"))
    assert "removed 2 half-written file(s)" in r.stderr, r.stderr
    assert "match(es) left out" in r.stderr and str(tmp_path / "out" / "selfglob") in r.stderr, r.stderr
    # outputs written elsewhere (--out) are known by their manifest
    other = tmp_path / "elsewhere"
    r = run_cli("run", recipe, "--out", other)
    assert r.returncode == 0, r.stderr
    shutil.move(str(other / "out"), str(tmp_path / "old-results"))
    r = run_cli("validate", recipe, "--out", other)
    assert r.returncode == 0 and "(1 image(s)" in r.stderr and "old-results" in r.stderr, r.stderr


def test_reproduce_with_a_missing_input_names_it_in_one_line(prefect_server, workspace, tmp_path, photos):
    shutil.copy(photos["astronaut"], tmp_path / "astronaut.png")
    recipe = tmp_path / "one.yaml"
    recipe.write_text("version: 1\nname: one\nprovider: classic\ninputs:\n  images: ['*.png']\n"
                      "steps:\n  - {id: depth, uses: estimate}\noutput: out/{recipe}/{image}/\n")
    r = run_cli("run", recipe, "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    man = tmp_path / "out" / "one" / "astronaut" / "manifest.json"
    (tmp_path / "astronaut.png").rename(tmp_path / "moved.png")
    r = run_cli("reproduce", man)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "astronaut.png" in lines[0] and "no such file" in lines[0], r.stderr


# -- 7: malformed manifests ------------------------------------------------------------------
@pytest.mark.parametrize("body", ['{"depthcraft_manifest": 1}', "[]", '"str"', "7",
                                  '{"depthcraft_manifest": 1, "recipe": [], "steps": [], "inputs": []}',
                                  '{"depthcraft_manifest": 1, "recipe": {"text": "x", "file": "f", "overrides": []},'
                                  ' "steps": [{"outputs": {"a": 3}}], "inputs": []}'])
def test_reproduce_of_a_malformed_manifest_is_one_line(tmp_path, body):
    p = tmp_path / "manifest.json"
    p.write_text(body)
    r = run_cli("--workspace", tmp_path / "ws", "reproduce", p, timeout=60)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(p) in lines[0] and "Traceback" not in r.stderr, r.stderr


def test_a_partial_manifest_compares_only_what_it_recorded():
    from depthcraft.flows.manifest import measure_reproduction
    from depthcraft.flows.outlock import describe_partial

    old = {"out_root": "/a", "partial": {"state": "running", "pid": 1, "recorded": 1, "of": 3},
           "steps": [], "inputs": []}
    new = {"out_root": "/b", "steps": [{"outputs": {"m": {"path": "/b/x/depth.png", "sha256": "0"}}}], "inputs": []}
    assert measure_reproduction(old, new)[0] == []
    assert "partial" in describe_partial(old) and "killed" in describe_partial(old)
    assert describe_partial({"steps": []}) is None


# -- 1 and 6: clips ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """The bundled clip at 120x80 (as tests/test_video_flow.py)."""
    from cliputil import small_bundled_clip

    return small_bundled_clip(tmp_path_factory.mktemp("small-clip"))


def test_refresh_and_reproduce_recompute_every_clip_segment(prefect_server, tmp_path, small):
    ws, out = tmp_path / "ws", tmp_path / "out"
    sets = ["--set", f"inputs.images=['{small}']", "--set", "inputs.segment_seconds=2"]
    r = run_cli("--workspace", ws, "run", VIDEO, "--out", out, *sets)
    assert r.returncode == 0, r.stderr
    r = run_cli("--workspace", ws, "run", VIDEO, "--out", out, "--refresh", "--json", *sets)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout[r.stdout.index("{"):])
    assert (s["computed"], s["cached"]) == (2, 0), s
    m = json.loads(Path(s["manifest"]).read_text())
    assert {g["status"] for n in m["steps"] for g in n["segments"]} == {"computed"}
    r = run_cli("--workspace", ws, "reproduce", s["manifest"], "--out", tmp_path / "again")
    assert r.returncode == 0 and "(recomputed)" in r.stderr, r.stderr
    again = json.loads((tmp_path / "again" / Path(s["manifest"]).relative_to(out)).read_text())
    assert {g["status"] for n in again["steps"] for g in n["segments"]} == {"computed"}
    r = run_cli("--workspace", ws, "reproduce", s["manifest"], "--use-cache", "--out", tmp_path / "cached")
    assert r.returncode == 0 and "recomputed" not in r.stderr and "from the cache" in r.stderr, r.stderr


def test_work_folders_of_a_killed_clip_run_are_removed(prefect_server, tmp_path, small):
    from depthcraft.flows.recovery import clean_stale_tmp
    from depthcraft.flows.workspace import Workspace

    ws, out = tmp_path / "ws", tmp_path / "out"
    p = Proc(tmp_path, "--workspace", ws, "run", VIDEO, "--out", out, "--set", f"inputs.images=['{small}']",
             env={"DEPTHCRAFT_WORKERS": "1"})
    p.wait_for(lambda: any(f.is_file() for f in (ws / "tmp").rglob("*")) if (ws / "tmp").exists() else False,
               "a segment's work files")
    p.kill()
    assert any(f.is_file() for f in (ws / "tmp").rglob("*"))
    clean_stale_tmp(Workspace(ws))
    assert not any(f.is_file() for f in (ws / "tmp").rglob("*")), list((ws / "tmp").rglob("*"))


def test_a_folder_held_by_a_run_that_raised_is_released(workspace, tmp_path, photos):
    """In a long-lived process (``serve``) a flow run that raised must not keep its folder, or
    the next run of that process would wait for itself; flock is per open file, not per process."""
    import threading

    from depthcraft.flows.compile import compile_plan
    from depthcraft.flows.outlock import OutputFolder, release
    from depthcraft.flows.recipe import load_recipe
    from depthcraft.flows.workspace import Workspace

    recipe = tmp_path / "r.yaml"
    recipe.write_text(LONG.format(name="held", photo=photos["coffee"]))
    r, src = load_recipe(recipe)
    plan = compile_plan(r, src, Workspace(workspace), out_root=tmp_path)
    folder = plan.out_dirs["coffee"]
    first = OutputFolder(plan, folder, run_id="run-1", started=time.time())
    assert first.begin() and json.loads((folder / "manifest.json").read_text())["partial"]["state"] == "running"
    second = OutputFolder(plan, folder, run_id="run-2", started=time.time())
    got = []
    t = threading.Thread(target=lambda: got.append(second.begin()), daemon=True)
    t.start()
    t.join(1.0)
    assert t.is_alive() and not got  # waits for the first
    release("run-1")
    t.join(10)
    assert got == [True]
    second.finishing()
    second.close()


def test_old_layout_segment_folders_go_when_no_run_is_live(tmp_path):
    """``tmp/<key>-<n>`` (clip segments of older versions) names no process: removed at once when
    no run of the workspace is live, kept (a day) while one is."""
    from depthcraft.flows.recovery import clean_stale_tmp, register_run, unregister_run
    from depthcraft.flows.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    old = ws.tmp / "26161a415d488512-61560110852031"
    old.mkdir(parents=True)
    (old / "main-000000-000018.mp4").write_bytes(b"partial")
    register_run(ws, "live-run", None)  # this process: alive
    assert clean_stale_tmp(ws) == [] and old.exists()
    unregister_run(ws, "live-run")
    assert clean_stale_tmp(ws) == [old] and not old.exists()
