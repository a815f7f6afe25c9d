"""Clips in recipes: every segment of every step is a Prefect task run, cached by content,
resumable after kill -9, identical on threads and on Dask; the assembled files keep every
frame, the time base and the audio.

Runs ``recipes/video-3d.yaml`` (segment_seconds 1: 4 segments) on the bundled clip
``recipes/clips/sample.mp4`` (72 frames at 24000/1001 fps, a scene cut at frame 36, AAC audio)
scaled to 120x80 (same frames, rate and audio; a quarter of the pixels keeps the tests quick;
tests/test_recipes.py runs the recipe on the clip as it is).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from fractions import Fraction
from pathlib import Path

import pytest

from conftest import DEPTHCRAFT, run_cli, settled_task_runs

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "video-3d.yaml"
CLIP = REPO / "recipes" / "clips" / "sample.mp4"
SEGMENTS = [[0, 18], [18, 36], [36, 54], [54, 72]]  # the cut at 36, then 1 s pieces of equal length


def manifest(summary: dict) -> dict:
    return json.loads(Path(summary["manifest"]).read_text())


def steps_of(m: dict) -> dict[str, dict]:
    return {n["step"]: n for n in m["steps"]}


def published(m: dict) -> dict[str, str]:
    """{file name: sha256} of every published output."""
    return {Path(o["path"]).name: o["sha256"] for n in m["steps"] for o in n["outputs"].values()}


def task_runs(run_id: str, count: int = 10) -> dict[str, str]:
    """{task-run name: state name} of a flow run, once the API has all ``count`` final states."""
    return {t.name: t.state.name for t in settled_task_runs(run_id, count, settle_s=30)}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """The bundled clip at 120x80: every frame, the rate and the audio stream as they are."""
    from cliputil import small_bundled_clip

    return small_bundled_clip(tmp_path_factory.mktemp("small-clip"))


def on(clip: Path, *more: str) -> list[str]:
    """Recipe overrides that run video-3d on ``clip``."""
    return [f"inputs.images=['{clip}']", *more]


@pytest.fixture(scope="module")
def first(prefect_server, tmp_path_factory, small):
    """The recipe run once on threads in a fresh workspace: (summary, manifest, workspace, out)."""
    from depthcraft.flows.runner import run_recipe

    from depthcraft.flows import progress

    root = tmp_path_factory.mktemp("video-flow")
    ws, out = root / "ws", root / "out"
    with progress.reporting(Bars()) as bars:
        s = run_recipe(RECIPE, overrides=on(small), out_root=str(out), workspace=str(ws))
    s["bars"] = bars.seen
    return s, manifest(s), ws, out


class Bars:
    """A progress reporter that remembers every (done, total) each bar was given."""

    def __init__(self):
        self.seen: dict[str, list[tuple[int, int]]] = {}

    def update(self, label: str, done: int, total: int) -> None:
        self.seen.setdefault(label, []).append((done, total))

    def advance(self, n: int = 1) -> None:
        pass


# -- the plan ---------------------------------------------------------------------------------
def test_split_frames_at_cuts_then_equal_pieces():
    from depthcraft.flows.segments import split_frames

    rate = Fraction(24000, 1001)
    assert split_frames(72, rate, [36], 1.0) == [tuple(s) for s in SEGMENTS]
    assert split_frames(72, rate, [36], 10.0) == [(0, 36), (36, 72)]  # a cut always cuts
    assert split_frames(72, rate, [], 10.0) == [(0, 72)]
    assert split_frames(100, Fraction(25), [0, 100, 150], 1.0) == [(0, 25), (25, 50), (50, 75), (75, 100)]
    assert split_frames(26, Fraction(25), [], 1.0) == [(0, 13), (13, 26)]  # no 1-frame tail
    assert split_frames(0, Fraction(25), [], 1.0) == []


def test_clip_inputs_by_glob_mixed_with_photos(tmp_path):
    from depthcraft.flows.compile import compile_plan
    from depthcraft.flows.recipe import load_recipe
    from depthcraft.flows.workspace import Workspace

    r = tmp_path / "mixed.yaml"
    r.write_text(f"version: 1\nname: mixed\ninputs:\n  images: ['{REPO}/recipes/clips/*.mp4', '{REPO}/recipes/photos/coffee.jpg',"
                 f" '{tmp_path}/missing.mov']\n  segment_seconds: 10\nsteps:\n  - {{id: depth, uses: estimate}}\n")
    recipe, src = load_recipe(r)
    plan = compile_plan(recipe, src, Workspace.default(tmp_path / "ws"), out_root=tmp_path)
    kinds = {i.name: (i.source.kind if i.source else None, i.error) for i in plan.images}
    assert kinds["sample"] == ("video", None) and kinds["coffee"] == ("image", None)
    assert "missing.mov: no such file" in kinds["missing"][1]
    assert plan.clips["sample"].segments == [(0, 36), (36, 72)]
    assert set(plan.clips) == {"sample"} and ("depth", "coffee") in plan.nodes


# -- runs -----------------------------------------------------------------------------------------
def test_segments_are_task_runs_and_the_output_keeps_frames_time_base_and_audio(first, small):
    from depthcraft.tasks.lib.clip import probe_clip

    s, m, _, _ = first
    assert s["failures"] == []
    src = probe_clip(small)
    assert m["clips"]["sample"]["segments"] == SEGMENTS and m["clips"]["sample"]["cuts"] == [36]
    keys = set()
    for sid in ("depth", "3d"):
        node = steps_of(m)[sid]
        assert [g["frames"] for g in node["segments"]] == SEGMENTS
        assert all(g["status"] == "computed" and g["seconds"] > 0 for g in node["segments"])
        keys |= {g["key"] for g in node["segments"]}
    assert len(keys) == 8  # a key per segment and step
    runs = task_runs(s["run_id"])
    for sid in ("depth", "3d"):
        for i, (a, b) in enumerate(SEGMENTS):
            assert runs[f"{sid}[sample]#{i} frames {a}-{b}"] == "Completed"
        assert runs[f"{sid}[sample] assemble"] == "Completed"
    assert len(runs) == 10
    for sid in ("depth", "3d"):  # progress bars count frames, up to every frame of the clip
        seen = s["bars"][f"{sid}[sample] frames"]
        assert {tot for _, tot in seen} == {72} and max(d for d, _ in seen) == 72 and len(seen) > 8
    outs = published(m)
    assert set(outs) == {"depth.mp4", "3d_3dh_LR.mp4"}  # the half-SBS tag 3D players read
    for name in outs:
        info = probe_clip(Path(s["out_dir"]) / name)
        assert info.frames == src.frames == 72
        assert info.rate == src.rate == Fraction(24000, 1001)
        assert info.time_base == src.time_base
        assert (info.width, info.height) == (120, 80)
        assert info.has_audio and info.audio_codec == "aac"


def test_a_rerun_is_fully_cached(first, small):
    from depthcraft.flows.runner import run_recipe

    s0, m0, ws, out = first
    s = run_recipe(RECIPE, overrides=on(small), out_root=str(out), workspace=str(ws))
    m = manifest(s)
    assert s["computed"] == 0 and s["cached"] == 2
    for node in m["steps"]:
        assert [g["status"] for g in node["segments"]] == ["cached"] * 4
    assert set(task_runs(s["run_id"]).values()) == {"Cached"}
    assert published(m) == published(m0)


def test_a_changed_parameter_recomputes_only_the_segments_it_reaches(first, small):
    from depthcraft.flows.runner import run_recipe

    s0, m0, ws, out = first
    s = run_recipe(RECIPE, overrides=on(small, "steps.3d.with.divergence=3.0"), out_root=str(out), workspace=str(ws))
    m = manifest(s)
    st = steps_of(m)
    assert [g["status"] for g in st["depth"]["segments"]] == ["cached"] * 4
    assert [g["status"] for g in st["3d"]["segments"]] == ["computed"] * 4
    assert published(m)["depth.mp4"] == published(m0)["depth.mp4"]
    assert published(m)["3d_3dh_LR.mp4"] != published(m0)["3d_3dh_LR.mp4"]
    # a shorter segment length re-cuts the clip: new keys for every segment
    s = run_recipe(RECIPE, overrides=on(small, "inputs.segment_seconds=10"), out_root=str(out), workspace=str(ws))
    st = steps_of(manifest(s))
    assert [g["frames"] for g in st["depth"]["segments"]] == [[0, 36], [36, 72]]
    assert {g["status"] for g in st["depth"]["segments"]} == {"computed"}


def test_resume_after_kill_9_mid_clip(first, small, tmp_path):
    """A real ``depthcraft run``, killed with SIGKILL once two segments are stored, resumes at the
    first unfinished segment and ends with the same files as an uninterrupted run."""
    _, m0, _, _ = first
    ws, out = tmp_path / "ws", tmp_path / "out"
    env = {**os.environ, "DEPTHCRAFT_WORKERS": "1"}  # one segment at a time: a clean "mid-clip"
    sets = [a for s in on(small) for a in ("--set", s)]
    proc = subprocess.Popen([*DEPTHCRAFT, "--workspace", str(ws), "run", str(RECIPE), "--out", str(out), *sets],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    records = ws / "store" / "records"
    deadline = time.time() + 240
    done: list[dict] = []
    while time.time() < deadline and proc.poll() is None:
        done = [json.loads(p.read_text())["info"] for p in records.glob("*.json")] if records.exists() else []
        if sum("segment" in d for d in done) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its ffmpeg children, as a crash would
    assert proc.wait(30) == -signal.SIGKILL
    segs_before = {tuple(d["segment"]) for d in done if "segment" in d and d["step"] == "estimate"}
    assert 2 <= len(segs_before) < 4 and not (out / "out" / "video-3d" / "sample" / "manifest.json").exists()

    r = run_cli("--workspace", ws, "run", RECIPE, "--out", out, "--json", *sets, env={"DEPTHCRAFT_WORKERS": "1"})
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout[r.stdout.index("{"):])
    m = manifest(s)
    depth = steps_of(m)["depth"]["segments"]
    status = {tuple(g["frames"]): g["status"] for g in depth}
    assert all(status[k] == "cached" for k in segs_before)
    assert [g["status"] for g in depth if tuple(g["frames"]) not in segs_before] == ["computed"] * (4 - len(segs_before))
    assert published(m) == published(m0)  # byte-identical to the uninterrupted run


def test_threads_and_dask_give_byte_identical_files(first, small, tmp_path):
    from depthcraft.flows.recipe import DaskSettings
    from depthcraft.flows.runner import run_recipe
    from depthcraft.flows.scale import dask_runner

    _, m0, _, _ = first
    runner = dask_runner(type("R", (), {"dask": DaskSettings(workers=2)})())
    s = run_recipe(RECIPE, overrides=on(small), out_root=str(tmp_path / "out"), workspace=str(tmp_path / "ws"),
                   task_runner=runner)
    m = manifest(s)
    assert all(g["status"] == "computed" for n in m["steps"] for g in n["segments"])
    runs = task_runs(s["run_id"])
    assert len(runs) == 10 and set(runs.values()) == {"Completed"}
    assert published(m) == published(m0)


def test_a_bad_clip_is_one_line_and_the_rest_is_produced(prefect_server, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(os.urandom(50_000))  # not a video at all
    r = tmp_path / "two.yaml"
    r.write_text(f"version: 1\nname: two\ninputs:\n  images: ['{bad}', '{REPO}/recipes/photos/coffee.jpg']\n"
                 "steps:\n  - {id: depth, uses: estimate}\n")
    res = run_cli("--workspace", tmp_path / "ws", "run", r, "--out", tmp_path / "out")
    assert res.returncode == 1
    assert "broken.mp4" in res.stderr and "Traceback" not in res.stderr
    assert (tmp_path / "out" / "out" / "two" / "coffee" / "depth.png").exists()


def test_clip_errors_name_the_file_at_compile_time(tmp_path):
    from depthcraft.flows.compile import compile_plan
    from depthcraft.flows.recipe import load_recipe
    from depthcraft.flows.workspace import Workspace

    r = tmp_path / "mesh.yaml"
    r.write_text(f"version: 1\nname: m\ninputs:\n  images: ['{CLIP}', '{REPO}/recipes/photos/coffee.jpg']\n"
                 "steps:\n  - {id: depth, uses: estimate}\n  - {id: m, uses: mesh, from: depth}\n")
    recipe, src = load_recipe(r)
    plan = compile_plan(recipe, src, Workspace.default(tmp_path / "ws"), out_root=tmp_path)
    err = {i.name: i.error for i in plan.images}
    assert err["coffee"] is None and ("m", "coffee") in plan.nodes
    assert "sample.mp4" in err["sample"] and "'m' (mesh) does not take clips" in err["sample"]
    assert not any(k[1] == "sample" for k in plan.nodes) and "sample" not in plan.clips


def test_an_animated_gif_is_a_clip_and_a_still_one_a_photo(prefect_server, tmp_path):
    import numpy as np
    from PIL import Image

    from depthcraft.flows.runner import run_recipe
    from depthcraft.tasks.lib.clip import probe_clip

    base = np.asarray(Image.open(REPO / "recipes" / "photos" / "coffee.jpg").convert("RGB").resize((96, 64)))
    frames = [Image.fromarray(np.roll(base, 2 * i, axis=1)) for i in range(10)]
    frames[0].save(tmp_path / "moving.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    frames[0].save(tmp_path / "still.gif")
    r = tmp_path / "gif.yaml"
    r.write_text("version: 1\nname: gif\ninputs:\n  images: ['*.gif']\n  segment_seconds: 0.5\n"
                 "steps:\n  - {id: depth, uses: estimate}\n")
    s = run_recipe(r, out_root=str(tmp_path), workspace=str(tmp_path / "ws"))
    m = manifest(s)
    st = {n["image"]: n for n in m["steps"]}
    assert [g["frames"] for g in st["moving"]["segments"]] == [[0, 5], [5, 10]]  # 10 fps: 0.5 s = 5 frames
    assert "segments" not in st["still"]
    info = probe_clip(tmp_path / "out" / "gif" / "moving" / "depth.mp4")
    assert info.frames == 10 and info.rate == 10 and not info.has_audio
    assert (tmp_path / "out" / "gif" / "still" / "depth.png").exists()


def test_a_vfr_clip_keeps_its_times_across_segments_and_a_tiny_clip_fails_alone(prefect_server, tmp_path):
    # was: a VFR clip at its mean rate (frames of its 30 fps part dropped), and a 1x1 clip taken
    # and written as 2x2 while a 1x1 photo is refused
    from cliputil import FF, shown, vfr_clip, vfr_expected

    from depthcraft.tasks.lib.clip import probe_clip, read_frames

    vfr_clip(tmp_path / "vfra.mp4")
    subprocess.run([FF, "-y", "-loglevel", "error", "-f", "lavfi", "-i", "color=red:size=1x1:rate=10", "-frames:v", "4",
                    "-c:v", "libx264", "-pix_fmt", "yuv444p", str(tmp_path / "tiny.mp4")], check=True)
    r = tmp_path / "v.yaml"
    r.write_text(f"version: 1\nname: v\ninputs:\n  images: ['{tmp_path}/vfra.mp4', '{tmp_path}/tiny.mp4', "
                 f"'{REPO}/recipes/photos/coffee.jpg']\n  segment_seconds: 1\n"
                 "steps:\n  - {id: depth, uses: estimate}\n  - {id: s, uses: stereo, from: depth}\n")
    res = run_cli("--workspace", tmp_path / "ws", "run", r, "--out", tmp_path / "out")
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr[-3000:]
    tiny = [ln for ln in res.stderr.splitlines() if "tiny.mp4" in ln]
    assert tiny and all("frames are 1x1; both sides must be at least 64 px" in ln for ln in tiny), res.stderr[-3000:]
    assert not any("main-0" in ln or ".mkv:" in ln for ln in res.stderr.splitlines()), res.stderr[-3000:]
    out = tmp_path / "out" / "out" / "v"
    assert (out / "coffee" / "depth.png").exists() and not (out / "tiny").exists()
    d = probe_clip(out / "vfra" / "depth.mp4")
    assert d.rate == 30 and d.frames == 106 and d.has_audio  # segments [0, 30) [30, 60) [60, 90) [90, 106)
    s = probe_clip(next((out / "vfra").glob("s*.mp4")))
    got = shown(read_frames(s.path, info=s))
    assert len(got) == 106 and all(abs(g - vfr_expected(k)) <= 1 for k, g in enumerate(got)), got
