"""Settings that are accepted but would have no effect: refused in one line naming both settings
(exit 2, no traceback, nothing written), on the command line and in recipe validation; a default
that does not apply is never mentioned. And ``--downscale`` with a full-size ``--depth``: the
depth map follows the photo (disparity scaled), where it was a confusing size error.

The whole family and the reasons: docs/cli.md, "Settings that would have no effect"."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli, save_photo

OFFLINE = {"DEPTHCRAFT_OFFLINE": "1"}


@pytest.fixture
def scene(tmp_path):
    """A 160x120 photo and a relative depth map (a disc in front of a plane) as .npy."""
    yy, xx = np.mgrid[0:120, 0:160]
    img = np.dstack([xx * 255 // 159, yy * 255 // 119, ((xx // 8 + yy // 8) % 2) * 200]).astype(np.uint8)
    p = save_photo(tmp_path / "p.png", img)
    d = np.full((120, 160), 0.1, np.float32)
    d[(yy - 60) ** 2 + (xx - 80) ** 2 < 30 ** 2] = 0.5
    np.save(tmp_path / "d.npy", d)
    return p, tmp_path / "d.npy"


def _one_line_naming(r, *names, code=2):
    err = r.stderr.strip()
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    assert len(err.splitlines()) == 1, err
    for n in names:
        assert n in err, (n, err)
    return err


# (step, options, output name, the ineffective option, the option that makes it so)
CLI = [
    # stereo
    ("stereo", ["--eye", "left", "--layout", "anaglyph"], "o.png", "--layout anaglyph", "--eye left"),
    ("stereo", ["--anaglyph", "gray", "--layout", "sbs"], "o.png", "--anaglyph gray", "--layout sbs"),
    ("stereo", ["--anaglyph", "gray"], "o.png", "--anaglyph gray", "--layout sbs (the default)"),
    ("stereo", ["--anaglyph", "color", "--eye", "right"], "o.png", "--anaglyph color", "--eye right"),
    ("stereo", ["--depth-kind", "disparity", "--scale", "1", "--divergence", "3"], "o.png", "--divergence", "--scale 1"),
    ("stereo", ["--depth-kind", "disparity", "--scale", "1", "--convergence", "0.2"], "o.png", "--convergence", "--scale"),
    ("stereo", ["--quality", "80"], "o.png", "--quality 80", "--format png (from -o o.png)"),
    # parallax
    ("parallax", ["--easing", "linear"], "o.mp4", "--easing linear", "--loop"),
    ("parallax", ["--motion", "zoom", "--intensity", "0.05"], "o.mp4", "--intensity", "--motion zoom"),
    ("parallax", ["--motion", "orbit", "--dolly", "0.3"], "o.mp4", "--dolly", "--motion orbit"),
    ("parallax", ["--motion", "dolly", "--zoom", "0.3"], "o.mp4", "--zoom", "--motion dolly"),
    ("parallax", ["--motion", "keyframes", "--set", "keyframes=[{t: 0}]", "--focus", "0.3"], "o.mp4",
     "--focus", "--motion keyframes"),
    ("parallax", ["--motion", "zoom", "--focus", "0.8"], "o.mp4", "--focus 0.8", "--motion zoom"),
    ("parallax", ["--set", "keyframes=[{t: 0}]"], "o.mp4", "--set keyframes", "--motion orbit (the default)"),
    ("parallax", ["--crf", "20"], "o.gif", "--crf 20", "--container gif (from -o o.gif)"),
    ("parallax", ["--preset", "fast"], "o.webm", "--preset fast", "--container webm"),
    ("parallax", ["--pix-fmt", "yuv444p"], "o.gif", "--pix-fmt yuv444p", "--container gif"),
    # bokeh
    ("bokeh", ["--blades", "5"], "o.png", "--blades 5", "--shape disc"),
    ("bokeh", ["--rotation", "10"], "o.png", "--rotation", "--shape disc"),
    ("bokeh", ["--highlight-threshold", "0.5"], "o.png", "--highlight-threshold", "--highlight-boost"),
    ("bokeh", ["--f-number", "2", "--aperture", "1.5"], "o.png", "--aperture 1.5", "--f-number 2"),
    ("bokeh", ["--quality", "70"], "o.png", "--quality 70", "--format png"),
    # mesh
    ("mesh", ["--stride", "2", "--max-faces", "100"], "o.glb", "--max-faces 100", "--stride 2"),
    ("mesh", ["--texture-max", "512"], "o.obj", "--texture-max 512", "--format obj"),
    ("mesh", ["--edge-cut", "0.2"], "o.ply", "--edge-cut", "--format ply"),
    ("mesh", ["--set", "metric.near=1", "--set", "metric.far=5", "--far-ratio", "4"], "o.glb", "--far-ratio 4",
     "--set metric.far=5"),
    ("mesh", ["--fov-deg", "50", "--set", "metric.fov_deg=60"], "o.glb", "--set metric.fov_deg=60", "--fov-deg 50"),
    ("mesh", ["--set", "metric.known_x=3"], "o.glb", "--set metric.known_x=3", "--set metric.known=null"),
    # layers
    ("layers", ["--set", "depths=[0.2, 0.8]", "--count", "4"], "o.png", "--count 4", "--set depths=[0.2, 0.8]"),
    ("layers", ["--set", "depths=[0.2, 0.8]", "--method", "otsu"], "o.png", "--method otsu", "depths"),
    ("layers", ["--units", "meters"], "o.png", "--units meters", "--set depths=null"),
    # depth maps: the metric scale is read by the metric formats only
    ("estimate", ["--set", "metric.near=1"], "o.png", "--set metric.near=1", "--format grayscale (from -o o.png)"),
    ("refine", ["--set", "metric.far=3"], "o.png", "--set metric.far=3", "--format grayscale"),
    ("export", ["--set", "metric.near=1"], "o.png", "--set metric.near=1", "formats=[grayscale, png16, npy, preview] (from -o o.png)"),
    ("mesh", ["--depth-kind", "metric", "--far-ratio", "5"], "o.glb", "--far-ratio 5", "--depth-kind metric"),
    ("mesh", ["--depth-kind", "metric", "--set", "metric.near=1", "--set", "metric.far=4"], "o.glb",
     "--set metric.near=1", "--depth-kind metric"),
    # what the command line itself makes useless
    ("estimate", ["--message", "the girl in front"], "o.png", "--message", "--depth"),
    ("estimate", ["--use-case", "portrait"], "o.png", "--use-case", "--depth"),
    ("stereo", ["--provider", "classic"], "o.png", "--provider", "--depth"),
    ("bokeh", ["--mode", "eco"], "o.png", "--mode", "--depth"),
    ("stereo", ["--keyframe-interval", "3"], "o.png", "--keyframe-interval", "photo"),
    ("stereo", ["--no-temporal"], "o.png", "--temporal", "photo"),
    ("estimate", ["--set", "keyframe_interval=2"], "o.png", "--keyframe-interval", "photo"),
]


@pytest.mark.parametrize("step,opts,out,ineffective,because", CLI,
                         ids=[f"{c[0]}:{c[3].split()[0]}+{c[4].split()[0]}" for c in CLI])
def test_a_setting_with_no_effect_is_one_line_naming_both(tmp_path, scene, step, opts, out, ineffective, because):
    p, d = scene
    r = run_cli(step, p, "--depth", d, *opts, "-o", tmp_path / out, env=OFFLINE)
    err = _one_line_naming(r, ineffective, because, "no effect")
    assert not list(tmp_path.glob("o*")), "nothing is written"
    assert err.count("no effect") == 1


@pytest.mark.parametrize("step,opts,ineffective,because", [
    ("stereo", ["--depth-kind", "disparity"], "--depth-kind disparity", "without --depth"),
    ("estimate", ["--message", "hello"], "--message", "--provider auto (the default)"),
    ("refine", ["--provider", "eachsense", "--radius", "3"], "--radius", "--provider eachsense"),
    ("refine", ["--message", "sharper edges"], "--message", "--provider auto"),
])
def test_options_that_depend_on_the_provider_or_depth_are_one_line(tmp_path, scene, step, opts, ineffective, because):
    """Before any provider is asked (no key, no download needed to be told)."""
    p, _ = scene
    r = run_cli(step, p, *opts, "-o", tmp_path / "o.png", env={**OFFLINE, "EACHLABS_API_KEY": ""})
    _one_line_naming(r, ineffective, because, "no effect")
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("step,opts,out", [
    ("stereo", ["--layout", "anaglyph", "--anaglyph", "gray"], "o.png"),  # the matrix of the anaglyph chosen
    ("stereo", ["--eye", "left"], "o.png"),                                # anaglyph: dubois is a default
    ("stereo", ["--quality", "80"], "o.jpg"),
    ("stereo", ["--quality", "80"], "o.mpo"),
    ("parallax", ["--easing", "linear", "--no-loop", "--duration", "0.2", "--fps", "5"], "o.mp4"),
    ("bokeh", ["--shape", "polygon", "--blades", "5"], "o.png"),
    ("bokeh", ["--f-number", "2"], "o.png"),
    ("mesh", ["--stride", "4"], "o.ply"),
    ("layers", ["--set", "depths=[0.2, 0.8]", "--feather", "1"], "o.png"),
    ("export", ["--set", "metric.fov_deg=60"], "o.png"),  # export writes the field of view into every format
])
def test_settings_that_do_act_are_taken(tmp_path, scene, step, opts, out):
    p, d = scene
    r = run_cli(step, p, "--depth", d, "--depth-kind", "relative", *opts, "-o", tmp_path / out, env=OFFLINE)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / out).exists()


def test_downscale_fits_a_full_size_depth_map_keeping_its_units(tmp_path, scene):
    """`--downscale` with a depth map of the full-size photo failed with 'depth map is 320x240 but
    the image is 160x120'. Now the map follows the photo: a disparity (pixels) is scaled by the
    width ratio, relative nearness kept; a map of any other size is still refused."""
    yy, xx = np.mgrid[0:240, 0:320]
    p = save_photo(tmp_path / "big.png", np.dstack([xx % 256, yy % 256, (xx // 8 + yy // 8) % 2 * 200]).astype(np.uint8))
    disp = (4.0 + 8.0 * ((yy - 120) ** 2 + (xx - 160) ** 2 < 60 ** 2)).astype(np.float32)
    np.save(tmp_path / "disp.npy", disp)
    limit = ["--max-pixels", str(160 * 120), "--downscale"]
    r = run_cli("estimate", p, "--depth", tmp_path / "disp.npy", "--depth-kind", "disparity", *limit,
                "-o", tmp_path / "d.npz", env=OFFLINE)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "downscaled with its photo" in r.stderr, r.stderr
    with np.load(tmp_path / "d.npz") as z:
        got = z["depth"] if "depth" in z.files else z[z.files[0]]
        meta = json.loads(str(z["meta"])) if "meta" in z.files else {}
    assert got.shape == (120, 160)
    assert meta.get("kind", "disparity") == "disparity"
    # disparity in pixels halves with the width: 4 px and 12 px become 2 and 6 (edges: area means)
    assert np.isclose(got[5, 5], 2.0, atol=1e-4) and np.isclose(got[60, 80], 6.0, atol=1e-4)
    assert 2.0 - 1e-4 <= got.min() and got.max() <= 6.0 + 1e-4
    # relative nearness has no unit: kept
    np.save(tmp_path / "rel.npy", disp / 12.0)
    r = run_cli("estimate", p, "--depth", tmp_path / "rel.npy", "--depth-kind", "relative", *limit,
                "-o", tmp_path / "r.npz", env=OFFLINE)
    assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "r.npz") as z:
        got = z["depth"] if "depth" in z.files else z[z.files[0]]
    assert got.shape == (120, 160) and np.isclose(got[60, 80], 1.0, atol=1e-4) and np.isclose(got[5, 5], 1 / 3, atol=1e-4)
    # the stereo pair in exact mode renders at the downscaled size
    r = run_cli("stereo", p, "--depth", tmp_path / "disp.npy", "--depth-kind", "disparity", "--scale", "1", *limit,
                "-o", tmp_path / "pair.png", env=OFFLINE)
    assert r.returncode == 0, r.stderr
    from PIL import Image

    assert Image.open(tmp_path / "pair.png").size == (320, 120)
    # a depth map of neither size is refused, naming it
    np.save(tmp_path / "odd.npy", disp[:200])
    r = run_cli("stereo", p, "--depth", tmp_path / "odd.npy", *limit, "-o", tmp_path / "odd.png", env=OFFLINE)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "odd.npy" in r.stderr and "320x200" in r.stderr, r.stderr


# -- recipes -----------------------------------------------------------------------------------
def _recipe(tmp_path, photo, steps: str, inputs: str | None = None) -> str:
    text = f"""\
version: 1
name: inert
inputs:
  images:
    - {inputs or f'"{photo}"'}
steps:
  - id: depth
    uses: estimate
{steps}output: out/{{image}}/
"""
    (tmp_path / "r.yaml").write_text(text)
    return text


RECIPES = [
    # (the steps after `depth`, the key named, the other setting named)
    ("  - id: pair\n    uses: stereo\n    from: depth\n    with:\n      layout: sbs\n      anaglyph: gray\n",
     "steps.1.with.anaglyph", "layout sbs"),
    ("  - id: pair\n    uses: stereo\n    from: depth\n    with:\n      eye: left\n      layout: anaglyph\n",
     "steps.1.with.layout", "eye left"),
    ("  - id: video\n    uses: parallax\n    from: depth\n    with:\n      loop: true\n      easing: smooth\n",
     "steps.1.with.easing", "loop true"),
    ("  - id: cloud\n    uses: mesh\n    from: depth\n    with:\n      format: ply\n      texture_max: 1024\n",
     "steps.1.with.texture_max", "format ply"),
    ("  - id: files\n    uses: export\n    from: depth\n    with:\n      formats: [png16]\n      metric:\n"
     "        near: 1.5\n", "steps.1.with.metric.near", "formats [png16]"),
    ("  - id: blur\n    uses: bokeh\n    from: depth\n    with:\n      blades: 7\n",
     "steps.1.with.blades", "shape disc (the default)"),
    ("  - id: pair\n    uses: stereo\n    from: depth\n    provider: classic\n",
     "steps.1.provider", "stereo step"),
    ("  - id: edges\n    uses: refine\n    from: depth\n    with:\n      message: sharper\n",
     "steps.1.with.message", "provider auto"),
    ("  - id: edges\n    uses: refine\n    from: depth\n    provider: eachsense\n    with:\n      radius: 3\n",
     "steps.1.with.radius", "provider eachsense"),
]


@pytest.mark.parametrize("steps,key,other", RECIPES, ids=[r[1] for r in RECIPES])
def test_recipe_validation_refuses_a_written_setting_with_no_effect_at_its_line(tmp_path, scene, steps, key, other):
    p, _ = scene
    text = _recipe(tmp_path, p, steps)
    leaf = key.split(".")[-1]
    line = next(i for i, t in enumerate(text.splitlines(), 1)
                if t.strip().startswith(leaf + ":") and (key.split(".")[1] == "1" and i > 8))
    r = run_cli("validate", tmp_path / "r.yaml", env=OFFLINE)
    err = _one_line_naming(r, f"r.yaml:{line}: {key}", other, "no effect")
    assert err.count("no effect") == 1


def test_recipe_message_with_a_provider_that_takes_none_and_depth_kind_without_depth(tmp_path, scene):
    p, _ = scene
    _recipe(tmp_path, p, "", inputs=f'{{image: "{p}", depth_kind: disparity}}')
    r = run_cli("validate", tmp_path / "r.yaml", env=OFFLINE)
    _one_line_naming(r, "r.yaml:5: inputs.images.0.depth_kind", "without depth")
    text = (tmp_path / "r.yaml").read_text().replace("uses: estimate\n", "uses: estimate\n    with: {message: hi}\n")
    (tmp_path / "r.yaml").write_text(text.replace(", depth_kind: disparity", ""))
    r = run_cli("validate", tmp_path / "r.yaml", env=OFFLINE)
    _one_line_naming(r, "r.yaml:9: steps.0.with.message", "provider auto")


def test_recipe_defaults_that_do_not_apply_are_not_news(tmp_path, scene):
    """layout sbs leaves the default anaglyph matrix unused, a disc the default blades, the
    recipe's use_case a local provider: all fine."""
    p, _ = scene
    _recipe(tmp_path, p, "  - id: pair\n    uses: stereo\n    from: depth\n    with: {layout: sbs, divergence: 2}\n"
                         "  - id: blur\n    uses: bokeh\n    from: depth\n    with: {aperture: 2}\n"
                         "  - id: video\n    uses: parallax\n    from: depth\n    with: {motion: zoom, zoom: 0.2}\n")
    text = (tmp_path / "r.yaml").read_text().replace("name: inert\n", "name: inert\nuse_case: portrait\n")
    (tmp_path / "r.yaml").write_text(text)
    r = run_cli("validate", tmp_path / "r.yaml", env=OFFLINE)
    assert r.returncode == 0, r.stderr


def test_a_recipe_with_an_f_number_runs(tmp_path, scene, prefect_server):
    """bokeh's "aperture or f_number, not both" looked at the fields set: the runner re-validates
    the step's dumped parameters (every field set), so `f_number: 2` alone failed in every run
    (validate passed)."""
    p, _ = scene
    _recipe(tmp_path, p, "  - id: blur\n    uses: bokeh\n    from: depth\n    with: {f_number: 2}\n")
    r = run_cli("run", tmp_path / "r.yaml", "--out", tmp_path / "out",
                env={**OFFLINE, "DEPTHCRAFT_HOME": str(tmp_path / "ws")})
    assert r.returncode == 0, r.stderr
    assert list((tmp_path / "out").rglob("blur.png"))


# -- clips: photo settings the clip engine does not read ------------------------------------------
@pytest.mark.parametrize("step,opts,ineffective", [
    ("stereo", ["--interpolation", "lanczos"], "--interpolation has no effect on a clip"),
    ("stereo", ["--eye", "left", "--layout", "hsbs"], "--layout hsbs"),
    ("stereo", ["--edge-dilation", "3"], "--edge-dilation 3"),  # the step's own rules hold on clips too
    ("parallax", ["--duration", "2"], "--duration"),
    ("parallax", ["--supersample", "2"], "--supersample"),
    ("parallax", ["--crf", "10"], "--crf"),
    ("estimate", ["--use-case", "portrait"], "--use-case"),
])
def test_a_photo_setting_on_a_clip_is_one_line(tmp_path, step, opts, ineffective):
    from cliputil import make_clip

    clip = make_clip(tmp_path / "c.mp4", n=3, size=(64, 64))
    out = tmp_path / "o.mp4"
    r = run_cli(step, clip, *opts, "-o", out, env=OFFLINE)
    _one_line_naming(r, ineffective, "no effect")
    assert not list(tmp_path.glob("o*"))


# -- command options outside the steps -------------------------------------------------------------
@pytest.mark.parametrize("args,ineffective,because", [
    (["run", "{r}", "--task-runner", "threads", "--dask-address", "tcp://127.0.0.1:9"], "--dask-address",
     "--task-runner threads"),
    (["serve", "{r}", "--task-runner", "threads", "--dask-address", "tcp://127.0.0.1:9"], "--dask-address",
     "--task-runner threads"),
    (["deploy", "{r}", "--work-queue", "nightly"], "--work-queue nightly", "without --work-pool"),
    (["session", "list", "depth-project-001"], "depth-project-001", "session list"),
    (["server", "status", "--port", "4300"], "--port 4300", "server status"),
    (["server", "stop", "--port", "4300"], "--port 4300", "server stop"),
])
def test_command_options_with_no_effect_are_one_line(tmp_path, scene, args, ineffective, because):
    """Refused before any server starts (so in a second, with no Prefect server about)."""
    p, _ = scene
    _recipe(tmp_path, p, "")
    r = run_cli(*[a.format(r=tmp_path / "r.yaml") for a in args],
                env={**OFFLINE, "DEPTHCRAFT_HOME": str(tmp_path / "ws"), "PREFECT_API_URL": "http://127.0.0.1:9/api"},
                timeout=60)
    _one_line_naming(r, ineffective, because, "no effect")


def test_session_list_json_is_json(tmp_path):
    """`session list --json` printed the table: --json did nothing there."""
    r = run_cli("session", "list", "--json", env={"DEPTHCRAFT_HOME": str(tmp_path / "ws")})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == []


def test_a_dask_address_alone_runs_on_that_scheduler(scene, tmp_path):
    """`run --dask-address ADDR` without --task-runner ran on threads (the address unused); now as
    deploy and serve: the recipe runs on that Dask scheduler."""
    import types

    from depthcraft.flows.cli import _task_runner
    from depthcraft.flows.recipe import load_recipe

    p, _ = scene
    _recipe(tmp_path, p, "")
    recipe, _ = load_recipe(tmp_path / "r.yaml")
    runner = _task_runner(types.SimpleNamespace(task_runner=None, dask_address="tcp://127.0.0.1:9"), recipe)
    assert runner is not None and "127.0.0.1:9" in str(getattr(runner, "address", "") or runner.__dict__)
    assert _task_runner(types.SimpleNamespace(task_runner=None, dask_address=None), recipe) is None


def test_focus_stack_order_without_a_depth_map_is_one_line(tmp_path, scene):
    """--order only says which end of the depth map is near: without --depth-out it did nothing."""
    p, _ = scene
    r = run_cli("focus-stack", p, p, "-o", tmp_path / "sharp.png", "--order", "far_first", "--no-align")
    _one_line_naming(r, "--order far_first", "--depth-out", "no effect")
    assert not (tmp_path / "sharp.png").exists()
    r = run_cli("focus-stack", p, p, "-o", tmp_path / "sharp.png", "--order", "far_first", "--no-align",
                "--depth-out", tmp_path / "d.png")
    assert r.returncode == 0, r.stderr


def test_output_metric_from_a_provider_of_relative_depth_is_one_line(tmp_path, scene):
    """`estimate --output metric --provider classic` wrote relative depth as if nothing was asked."""
    p, _ = scene
    r = run_cli("estimate", p, "--provider", "classic", "--set", "output=metric", "-o", tmp_path / "d.npz", env=OFFLINE)
    _one_line_naming(r, "output metric", "classic", "relative depth")
    assert not (tmp_path / "d.npz").exists()


def test_a_second_output_is_one_line(tmp_path, scene):
    """`-o a.png -o b.png` (or `--output metric -o d.npz`: estimate's `output` parameter is
    `--set output=`, --output is -o) silently wrote the last one only."""
    p, d = scene
    r = run_cli("stereo", p, "--depth", d, "-o", tmp_path / "a.png", "-o", tmp_path / "b.png", env=OFFLINE)
    _one_line_naming(r, "a.png", "b.png", "-o")
    assert not list(tmp_path.glob("[ab].png"))


@pytest.mark.parametrize("head,key,because", [
    ("mode: eco\n", "r.yaml:3: mode", "provider auto"),
    ("provider: classic\nanswers: {q: 'yes'}\n", "r.yaml:4: answers", "provider classic"),
    ("provider: classic\nprovider_options: {upsample: bilinear}\n", "r.yaml:4: provider_options", "provider classic"),
])
def test_recipe_provider_settings_no_provider_reads_are_one_line(tmp_path, scene, head, key, because):
    """mode and answers are read by eachsense only; provider_options by onnx and eachsense."""
    p, _ = scene
    _recipe(tmp_path, p, "")
    text = (tmp_path / "r.yaml").read_text().replace("name: inert\n", "name: inert\n" + head)
    (tmp_path / "r.yaml").write_text(text)
    r = run_cli("validate", tmp_path / "r.yaml", env=OFFLINE)
    _one_line_naming(r, key, because, "no effect")
    (tmp_path / "r.yaml").write_text(text.replace("provider: classic\n", "") .replace("name: inert\n", "name: inert\nprovider: eachsense\n"))
    if "provider_options" not in head and "answers" not in head:
        return
    r = run_cli("validate", tmp_path / "r.yaml", env={**OFFLINE, "EACHLABS_API_KEY": "test"})
    assert "no effect" not in r.stderr, r.stderr


@pytest.mark.parametrize("opts,ineffective", [(["--mode", "eco"], "--mode"),
                                               (["--answer", "Which output?=Grayscale"], "--answer"),
                                               (["--session", "depth-project-001"], "--session")])
def test_eachsense_only_options_with_another_provider_are_one_line(tmp_path, scene, opts, ineffective):
    p, _ = scene
    r = run_cli("estimate", p, *opts, "-o", tmp_path / "d.png", env=OFFLINE)
    _one_line_naming(r, ineffective, "--provider auto (the default)", "no effect")


def test_a_recipe_downscale_fits_an_entrys_full_size_depth_map(tmp_path, prefect_server):
    """`downscale: true` with an input entry's full-size depth map: the run failed on every step
    with 'depth map is 320x240 but the image is 160x120'; now the map follows its photo."""
    yy, xx = np.mgrid[0:240, 0:320]
    p = save_photo(tmp_path / "big.png", np.dstack([xx % 256, yy % 256, (xx // 8 + yy // 8) % 2 * 200]).astype(np.uint8))
    disp = (4.0 + 8.0 * ((yy - 120) ** 2 + (xx - 160) ** 2 < 60 ** 2)).astype(np.float32)
    np.save(tmp_path / "disp.npy", disp)
    (tmp_path / "r.yaml").write_text(f"""\
version: 1
name: fit
provider: classic
inputs:
  images:
    - {{image: "{p}", depth: "{tmp_path / 'disp.npy'}", depth_kind: disparity}}
  max_pixels: {160 * 120}
  downscale: true
steps:
  - id: depth
    uses: estimate
    with: {{format: npz}}
  - id: pair
    uses: stereo
    from: depth
    with: {{scale: 1}}
output: out/{{image}}/
""")
    r = run_cli("run", tmp_path / "r.yaml", "--out", tmp_path / "o",
                env={**OFFLINE, "DEPTHCRAFT_HOME": str(tmp_path / "ws")})
    assert r.returncode == 0, r.stderr
    (npz,) = (tmp_path / "o").rglob("depth.npz")
    with np.load(npz) as z:
        got = z["depth"]
    assert got.shape == (120, 160) and np.isclose(got[60, 80], 6.0, atol=1e-4) and np.isclose(got[5, 5], 2.0, atol=1e-4)
    from PIL import Image

    (pair,) = (tmp_path / "o").rglob("pair.png")
    assert Image.open(pair).size == (320, 120)
