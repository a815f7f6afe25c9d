"""Clips in recipes, the rest of issue 9's workflow: ``layers`` frame folders (RGBA PNGs) built
from segments, ``depthcraft plan`` listing each clip step's segments with what is cached, and
byte-identical files on threads and on Dask with 1 and 2 workers.

The recipe (estimate, half-SBS stereo, layers) runs on the bundled clip scaled to 120x80 (72
frames at 24000/1001 fps, a scene cut at 36, AAC audio) in 1 s segments: 4 per step.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from test_video_flow import manifest, published, small, steps_of  # noqa: F401 - the clip fixture

SEGMENTS = [[0, 18], [18, 36], [36, 54], [54, 72]]


def recipe(tmp: Path, clip: Path, name: str = "clip-ops") -> Path:
    r = tmp / f"{name}.yaml"
    r.write_text(f"version: 1\nname: {name}\nprovider: classic\ninputs:\n  images: ['{clip}']\n  segment_seconds: 1\n"
                 "steps:\n  - {id: depth, uses: estimate}\n"
                 "  - {id: 3d, uses: stereo, from: depth, with: {layout: hsbs}}\n"
                 "  - {id: planes, uses: layers, from: depth, with: {count: 2}}\n")
    return r


@pytest.fixture(scope="module")
def threads_run(prefect_server, tmp_path_factory, small):  # noqa: F811
    from depthcraft.flows.runner import run_recipe

    root = tmp_path_factory.mktemp("clip-ops")
    r = recipe(root, small)
    s = run_recipe(r, out_root=str(root / "out"), workspace=str(root / "ws"))
    return s, manifest(s), r, root


def test_layers_on_a_clip_in_a_recipe_writes_rgba_frame_folders(threads_run):
    import cv2

    s, m, _, _ = threads_run
    assert s["failures"] == []
    out = Path(s["out_dir"])
    node = steps_of(m)["planes"]
    assert [g["frames"] for g in node["segments"]] == SEGMENTS
    assert all(g["status"] == "computed" for g in node["segments"])
    names = [f"{i:06d}.png" for i in range(72)]
    assert set(node["outputs"]) == {"main", "layer_0", "layer_1"}
    for name, folder in (("main", "planes"), ("layer_0", "planes-layer_0"), ("layer_1", "planes-layer_1")):
        rec = node["outputs"][name]
        assert rec["path"] == str(out / folder) and rec["kind"] == "frames" and rec["frames"] == 72
        assert sorted(os.listdir(out / folder)) == names  # every frame once, sorting = frame order
    alpha_seen = set()
    for i in (0, 17, 18, 35, 36, 71):  # both sides of every segment boundary
        a = cv2.imread(str(out / "planes-layer_0" / names[i]), cv2.IMREAD_UNCHANGED)
        assert a.shape == (80, 120, 4)  # RGBA
        alpha_seen |= {int(a[..., 3].min()), int(a[..., 3].max())}
        assert cv2.imread(str(out / "planes" / names[i]), cv2.IMREAD_UNCHANGED).shape == (80, 120, 3)
    assert 0 in alpha_seen and 255 in alpha_seen  # a real mask, not an opaque copy
    # the two planes' alphas add up to about the whole frame (feathered masks)
    a0 = cv2.imread(str(out / "planes-layer_0" / names[40]), cv2.IMREAD_UNCHANGED)[..., 3].astype(int)
    a1 = cv2.imread(str(out / "planes-layer_1" / names[40]), cv2.IMREAD_UNCHANGED)[..., 3].astype(int)
    assert np.abs(a0 + a1 - 255).mean() < 8


def test_a_rerun_serves_the_frame_folders_from_the_cache(threads_run):
    from depthcraft.flows.runner import run_recipe

    s0, m0, r, root = threads_run
    out = Path(s0["out_dir"])
    (out / "planes" / "000005.png").unlink()  # a damaged published folder is replaced whole
    (out / "planes" / "stray.txt").write_text("x")
    s = run_recipe(r, out_root=str(root / "out"), workspace=str(root / "ws"))
    m = manifest(s)
    assert s["computed"] == 0 and s["cached"] == 3
    assert all(g["status"] == "cached" for n in m["steps"] for g in n["segments"])
    assert published(m) == published(m0)
    assert sorted(os.listdir(out / "planes")) == [f"{i:06d}.png" for i in range(72)]


def plan_rows(r: Path, ws: Path, *sets: str) -> dict[tuple[str, str], str]:
    """{(step, segment frames): cached yes/no} from ``depthcraft plan``'s table."""
    args = [a for s in sets for a in ("--set", s)]
    res = run_cli("--workspace", ws, "plan", r, *args, env={"COLUMNS": "200"})
    assert res.returncode == 0, res.stderr
    rows, step = {}, None
    for line in res.stdout.splitlines():
        cells = [c.strip() for c in re.split(r"[│|┃]", line)[1:-1]]
        if len(cells) != 6:
            continue
        if cells[0] and not cells[0].startswith("#") and cells[1] != "segment" and cells[0] != "step":
            step = cells[0]
        elif cells[1] == "segment":
            rows[(step, cells[2])] = cells[4]
    return rows


def test_plan_lists_each_segment_and_whether_it_is_cached(threads_run):
    s, m, r, root = threads_run
    rows = plan_rows(r, root / "ws")
    want = {(sid, f"frames {a}-{b - 1}") for sid in ("depth", "3d", "planes") for a, b in SEGMENTS}
    assert set(rows) == want and set(rows.values()) == {"yes"}
    rows = plan_rows(r, root / "ws", "steps.planes.with.count=3")  # reaches the planes segments only
    assert {k: v for k, v in rows.items() if k[0] == "planes"} == {("planes", f"frames {a}-{b - 1}"): "no"
                                                                    for a, b in SEGMENTS}
    assert {v for k, v in rows.items() if k[0] != "planes"} == {"yes"}


def test_per_plane_videos_from_clip_output(threads_run):
    from depthcraft.flows.runner import run_recipe
    from depthcraft.tasks.lib.clip import probe_clip

    _, _, r, root = threads_run
    s = run_recipe(r, overrides=["steps.planes.clip_output=mp4"], out_root=str(root / "out-mp4"),
                   workspace=str(root / "ws"))
    m = manifest(s)
    st = steps_of(m)
    assert {g["status"] for g in st["depth"]["segments"]} == {"cached"}  # only the planes recompute
    assert {g["status"] for g in st["planes"]["segments"]} == {"computed"}
    out = Path(s["out_dir"])
    for f in ("planes.mp4", "planes-layer_0.mp4", "planes-layer_1.mp4"):
        info = probe_clip(out / f)
        assert info.frames == 72 and info.has_audio


@pytest.mark.parametrize("workers,prestart", [(1, False), (2, True)])
def test_threads_and_dask_workers_give_byte_identical_files(threads_run, tmp_path, workers, prestart):
    """Also the warm runner both ways: started when entered (1 worker), and started when built
    with its cluster closed in the background after the flow (2 workers, as the command line)."""
    from depthcraft.flows import daskwarm
    from depthcraft.flows.recipe import DaskSettings
    from depthcraft.flows.runner import run_recipe
    from depthcraft.flows.scale import dask_runner

    _, m0, r, _ = threads_run
    runner = dask_runner(type("R", (), {"dask": DaskSettings(workers=workers)})(), prestart=prestart)
    assert isinstance(runner, daskwarm.WarmDaskTaskRunner)
    s = run_recipe(r, out_root=str(tmp_path / "out"), workspace=str(tmp_path / "ws"), task_runner=runner)
    daskwarm.wait_closed(120)
    assert not daskwarm.CLOSING and "closed_s" in daskwarm.LAST
    assert daskwarm.LAST["cluster_ready"] <= daskwarm.LAST["cluster_taken"]  # tasks went to the started cluster
    m = manifest(s)
    assert all(g["status"] == "computed" for n in m["steps"] for g in n["segments"])
    assert published(m) == published(m0)
    seg = {(n["step"], g["index"]): g["key"] for n in m["steps"] for g in n["segments"]}
    seg0 = {(n["step"], g["index"]): g["key"] for n in m0["steps"] for g in n["segments"]}
    assert seg == seg0
    json.dumps(m)  # the manifest stays plain JSON


def test_segment_encoders_use_a_fixed_thread_count(tmp_path):
    """x264's bytes depend on its thread count, and "auto" counts the CPUs the process sees: the
    engine pins it, so a Dask worker on another host or CPU quota writes the same bytes."""
    from fractions import Fraction

    from depthcraft.tasks import clips
    from depthcraft.tasks.catalog import get_step
    from depthcraft.tasks.lib.clip import ClipInfo

    info = ClipInfo(path="x.mp4", frames=10, rate=Fraction(24), time_base=Fraction(1, 24), width=64, height=48,
                    codec="h264")
    p = get_step("stereo").params()
    for depth, target in ((False, ".mp4"), (True, ".mp4"), (True, ".mkv")):
        w = clips._writer("stereo", target, tmp_path / f"o{depth}{target}", info, name="main", start=0, params=p,
                          size=(64, 48), depth=depth)
        try:
            i = w.command.index("-threads")
            assert w.command[i + 1] == str(clips.ENCODER_THREADS)
        finally:
            w.abort()


def test_export_on_a_clip_writes_16bit_formats_as_mkv_like_the_one_shot_command(threads_run, small):  # noqa: F811
    """An export step on a clip (default formats grayscale, png16, npy, preview) published
    maps-png16.mp4 and maps-npy.mp4, 8-bit copies of maps.mp4; its 16-bit formats are now 16-bit
    FFV1 .mkv files joined from 4 segments, named in the manifest as on disk, cached on a re-run,
    and named as the one-shot command names them."""
    from depthcraft.flows.runner import run_recipe
    from depthcraft.tasks.lib.clip import probe_clip, read_depth_frames

    _, _, _, root = threads_run
    r = root / "export.yaml"
    r.write_text(f"version: 1\nname: export\nprovider: classic\ninputs:\n  images: ['{small}']\n  segment_seconds: 1\n"
                 "steps:\n  - {id: depth, uses: estimate}\n  - {id: maps, uses: export, from: depth}\n"
                 "  - {id: gmaps, uses: export, from: depth, clip_output: gif}\n")
    s = run_recipe(r, out_root=str(root / "out-export"), workspace=str(root / "ws"))
    assert s["failures"] == []
    m = manifest(s)
    out = Path(s["out_dir"])
    for sid, sfx, codec in (("maps", ".mp4", "h264"), ("gmaps", ".gif", "gif")):
        node = steps_of(m)[sid]
        assert [g["frames"] for g in node["segments"]] == SEGMENTS
        files = {n: Path(o["path"]) for n, o in node["outputs"].items()}
        assert {n: p.name for n, p in files.items()} == {
            "main": f"{sid}{sfx}", "png16": f"{sid}-png16.mkv", "npy": f"{sid}-npy.mkv", "preview": f"{sid}-preview{sfx}"}
        assert all(p.parent == out and p.is_file() for p in files.values())
        for n in ("png16", "npy"):
            info = probe_clip(files[n])
            assert (info.codec, info.bit_depth, info.frames, info.has_audio) == ("ffv1", 16, 72, True), n
            frame = list(read_depth_frames(files[n], 0, 20))[19]  # past the first segment boundary
            assert len(np.unique(np.round(frame * 65535.0))) > 256
        for n in ("main", "preview"):
            info = probe_clip(files[n])
            assert (info.codec, info.bit_depth, info.frames) == (codec, 8, 72), n
    assert not list(out.glob("*maps-png16.mp4")) and not list(out.glob("*-npy.gif"))
    again = run_recipe(r, out_root=str(root / "out-export"), workspace=str(root / "ws"))
    assert again["computed"] == 0 and published(manifest(again)) == published(m)
    # the one-shot command on the same clip names its files the same way
    res = run_cli("export", small, "-o", root / "oneshot" / "maps.mp4")
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in (root / "oneshot").iterdir()) == sorted(
        Path(o["path"]).name for o in steps_of(m)["maps"]["outputs"].values())
