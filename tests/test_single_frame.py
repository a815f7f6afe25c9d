"""One frame is a photo whatever holds it; more than one is a clip, said as such.

A video file of one frame, a still or 1-frame GIF: every command treats it as a photo (depth as
an image file, parallax a real camera move, not a 1-frame video). An animated PNG (APNG) is a
clip like an animated GIF/WebP. A multi-page TIFF is a photo: its first page, said in a notice.
A clip given to a photo-only command (mesh, viewer) or with a photo's output suffix says it is
an animation and which commands take clips. Real files, ffmpeg, the real CLI and a recipe run.
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli

from depthcraft.tasks.lib import clip as cliplib

ENV = {"DEPTHCRAFT_OFFLINE": "1"}


def _frames(photos) -> list[Image.Image]:
    a = np.asarray(Image.open(photos["chelsea"]).convert("RGB"))[:144, :200]
    return [Image.fromarray(np.ascontiguousarray(np.roll(a, 12 * i, axis=1))) for i in range(3)]


@pytest.fixture
def inputs(tmp_path, photos):
    fr = _frames(photos)
    d = tmp_path / "in"
    d.mkdir()
    fr[0].save(d / "one.gif", save_all=True, append_images=[], duration=100, loop=0)
    fr[0].save(d / "three.gif", save_all=True, append_images=fr[1:], duration=100, loop=0)
    fr[0].save(d / "three.png", save_all=True, append_images=fr[1:], duration=100, loop=0)  # APNG
    fr[0].save(d / "pages.tif", save_all=True, append_images=fr[1:])
    fr[0].save(d / "page1.png")
    subprocess.run([cliplib.ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(d / "page1.png"), "-frames:v", "1",
                    "-c:v", "libx264", "-pix_fmt", "yuv444p", "-qp", "0", str(d / "one.mp4")], check=True)
    return d


def test_a_one_frame_video_is_a_photo(inputs, tmp_path):
    r = run_cli("estimate", inputs / "one.mp4", "-o", tmp_path / "d.png", env=ENV)
    assert r.returncode == 0, r.stderr  # before: "a clip's output is a video file ... not '.png'"
    assert "single frame: taken as a photo" in r.stderr
    d = np.asarray(Image.open(tmp_path / "d.png"))
    assert d.shape == (144, 200)
    # parallax of a photo: a real camera move, not the 1-frame video a clip of one frame made
    r = run_cli("parallax", inputs / "one.mp4", "-o", tmp_path / "p.mp4", "--duration", "1", "--fps", "6", env=ENV)
    assert r.returncode == 0, r.stderr
    assert cliplib.count_frames(tmp_path / "p.mp4") == 6
    # a video output for a photo step: refused in one line that says why it is a photo
    r = run_cli("estimate", inputs / "one.mp4", "-o", tmp_path / "x.mp4", env=ENV)
    assert r.returncode == 2 and "single frame, so it is taken as a photo" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.mp4").exists()


def test_a_one_frame_gif_is_a_photo(inputs, tmp_path):
    r = run_cli("estimate", inputs / "one.gif", "-o", tmp_path / "d.png", env=ENV)
    assert r.returncode == 0, r.stderr
    r = run_cli("estimate", inputs / "one.gif", "-o", tmp_path / "d.mp4", env=ENV)
    assert r.returncode == 2 and "one.gif has a single frame, so it is taken as a photo" in r.stderr


def test_an_animated_png_is_a_clip(inputs, tmp_path):
    r = run_cli("estimate", inputs / "three.png", "-o", tmp_path / "d.mp4", env=ENV)
    assert r.returncode == 0, r.stderr  # before: "animated PNG is a clip, not a photo" and no command took it
    assert cliplib.count_frames(tmp_path / "d.mp4") == 3
    r = run_cli("estimate", inputs / "three.png", "-o", tmp_path / "d.png", env=ENV)
    assert r.returncode == 2 and "three.png is an animated PNG (3 frames), a clip" in r.stderr


@pytest.mark.parametrize("kind,suffix", [("mesh", ".glb"), ("viewer", ".html")])
@pytest.mark.parametrize("name", ["three.gif", "three.png"])
def test_a_clip_given_to_a_photo_command_says_it_is_animated_and_where_clips_go(inputs, tmp_path, kind, suffix,
                                                                                 name):
    r = run_cli(kind, inputs / name, "-o", tmp_path / f"out{suffix}", env=ENV)
    assert r.returncode == 2
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert f"{name} is an animated" in line and "(3 frames)" in line and f"{kind} takes photos" in line
    assert "parallax" in line and "estimate" in line  # the commands that do take it


def test_a_clip_with_a_photo_suffix_output_says_it_is_a_clip(inputs, tmp_path):
    r = run_cli("bokeh", inputs / "three.gif", "-o", tmp_path / "b.png", env=ENV)
    assert r.returncode == 2
    assert "three.gif is an animated GIF (3 frames), a clip, whose output is a video file" in r.stderr


def test_a_multi_page_tiff_is_its_first_page_said(inputs, tmp_path):
    r = run_cli("estimate", inputs / "pages.tif", "-o", tmp_path / "t.png", env=ENV)
    assert r.returncode == 0, r.stderr  # before: "animated TIFF is a clip", and no clip command took it
    assert "3 pages: using the first" in r.stderr
    r1 = run_cli("estimate", inputs / "page1.png", "-o", tmp_path / "p.png", env=ENV)
    assert r1.returncode == 0, r1.stderr
    assert (tmp_path / "t.png").read_bytes() == (tmp_path / "p.png").read_bytes()


def test_a_recipe_takes_each_as_what_it_is(inputs, tmp_path, prefect_server, workspace):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""\
version: 1
name: frames
provider: classic
inputs:
  images: ["{inputs}/one.mp4", "{inputs}/three.png", "{inputs}/pages.tif"]
steps:
  - id: depth
    uses: estimate
output: out/{{image}}/
""")
    r = run_cli("run", recipe, "--out", tmp_path / "res", env=ENV)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "res" / "out"
    assert (out / "one" / "depth.png").is_file()  # the 1-frame video: a photo's depth map
    assert cliplib.count_frames(out / "three" / "depth.mp4") == 3  # the APNG: a clip's depth video
    assert (out / "pages" / "depth.png").is_file()
    assert not list(out.glob("one*/depth.mp4"))


def test_a_recipe_with_a_photo_step_fails_the_animation_alone_and_says_what_it_is(inputs, tmp_path, prefect_server,
                                                                                  workspace):
    recipe = tmp_path / "m.yaml"
    recipe.write_text(f"""\
version: 1
name: meshes
provider: classic
inputs:
  images: ["{inputs}/three.gif", "{inputs}/one.gif"]
steps:
  - id: depth
    uses: estimate
  - id: m
    uses: mesh
    from: depth
output: out/{{image}}/
""")
    r = run_cli("run", recipe, "--out", tmp_path / "res", env=ENV)
    assert r.returncode == 1
    line = next(x for x in r.stderr.splitlines() if "three.gif" in x and "does not take clips" in x)
    assert "an animated GIF (3 frames)" in line and "parallax" in line
    assert (tmp_path / "res" / "out" / "one" / "m.glb").is_file()  # the 1-frame GIF: a photo's mesh
