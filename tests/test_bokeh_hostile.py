"""Bokeh against odd input: lens settings past the aperture limit, a depth map with no valid value,
and the §4 seam on boundaries that are not aligned with the reduced-resolution grid. Real files,
the real command line."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import run_cli
from depthcraft.tasks import bokeh as B


@pytest.fixture
def photo_and_depth(tmp_path):
    import cv2

    yy, xx = np.mgrid[0:120, 0:160]
    img = np.dstack([xx * 255 // 159, yy * 255 // 119, ((xx // 8 + yy // 8) % 2) * 200]).astype(np.uint8)
    p = tmp_path / "p.png"
    cv2.imwrite(str(p), img[..., ::-1])
    d = np.full((120, 160), 0.1, np.float32)
    d[(yy - 60) ** 2 + (xx - 80) ** 2 < 30 ** 2] = 0.5
    return p, d


def test_an_f_number_past_the_aperture_limit_is_refused_in_one_line(tmp_path, photo_and_depth):
    """--aperture stops at 10 (% of the width); --f-number 0.0001 (aperture 28000 %) was taken and
    blurred the photo into one grey."""
    p, d = photo_and_depth
    np.save(tmp_path / "d.npy", d)
    r = run_cli("bokeh", p, "--depth", tmp_path / "d.npy", "--depth-kind", "relative", "--f-number", "0.0001",
                "-o", tmp_path / "o.png")
    assert r.returncode == 2 and "--f-number" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "o.png").exists()
    r = run_cli("bokeh", p, "--depth", tmp_path / "d.npy", "--depth-kind", "relative", "--f-number", "0.28",
                "-o", tmp_path / "o.png")
    assert r.returncode == 0, r.stderr  # f/0.28 is aperture 10: the limit itself is fine


@pytest.mark.parametrize("step", ["bokeh", "stereo", "layers"])
def test_a_depth_map_with_no_valid_value_is_refused_naming_the_file(tmp_path, photo_and_depth, step):
    """An all-NaN/inf depth .npy (a failed matcher's output) gave a plausible-looking, meaningless
    picture (bokeh: no blur at all); now one line naming the file. Partly NaN maps still work."""
    p, d = photo_and_depth
    bad = tmp_path / "nan.npy"
    a = np.full_like(d, np.nan)
    a[0, :3] = (np.inf, -np.inf, np.nan)
    np.save(bad, a)
    r = run_cli(step, p, "--depth", bad, "--depth-kind", "relative", "-o", tmp_path / "o.png")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert str(bad) in r.stderr and "no valid value" in r.stderr and not (tmp_path / "o.png").exists()
    part = d.copy()
    part[10:20, 10:20] = np.nan
    part[30, 30] = np.inf
    np.save(tmp_path / "part.npy", part)
    r = run_cli(step, p, "--depth", tmp_path / "part.npy", "--depth-kind", "relative", "-o", tmp_path / "o.png")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("boundary", ["disc", "diagonal", "unaligned-vertical"])
def test_no_seam_on_boundaries_off_the_reduced_grid(boundary):
    """§4 on scenes of its own: a flat grey photo at 2003x1499 (rendered at 1/2 size), the in-focus
    plane meeting a slightly nearer one along a disc, a diagonal and a vertical edge at an odd
    column, plus a far strip: blurring one grey changes nothing, so any deviation is a seam."""
    w, h = 2003, 1499
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if boundary == "disc":
        m = (xx - 1111) ** 2 + (yy - 701) ** 2 < 333 ** 2
    elif boundary == "diagonal":
        m = xx * 0.61 + yy * 0.79 > 0.5 * (w * 0.61 + h * 0.79)
    else:
        m = xx > 1011
    n = np.full((h, w), 0.5, np.float32)
    n[m] = 0.5535
    n[:, :250] = 0.1
    img = np.full((h, w, 3), 97, np.uint8)
    out = B.render_bokeh(img, n, focus=0.5, max_radius=0.015 * w)
    assert np.abs(out.astype(int) - 97).max() <= 1


@pytest.mark.parametrize("dtype", ["complex64", "<U3", "datetime64[s]"])
def test_a_depth_npy_that_holds_no_real_numbers_is_refused_naming_the_file(tmp_path, photo_and_depth, dtype):
    p, d = photo_and_depth
    bad = tmp_path / "d.npy"
    np.save(bad, np.zeros(d.shape, dtype))  # complex was cast with a ComplexWarning on stderr and used
    r = run_cli("bokeh", p, "--depth", bad, "--depth-kind", "relative", "-o", tmp_path / "o.png")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "Warning" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and str(bad) in r.stderr and "real numbers" in r.stderr


# -- settings that would be silently ignored ---------------------------------------------------------
@pytest.mark.parametrize("kw,parameter", [
    ({"focus_x": 0.3}, "focus_y"),                                   # was: focus on the nearest subject
    ({"focus_y": 0.3}, "focus_x"),
    ({"focus_x": 0.3, "focus_y": 0.2, "focus_depth": 0.5}, "focus_depth"),  # was: the point, depth ignored
    ({"focus": "nearest", "focus_x": 0.3, "focus_y": 0.2}, "focus"),  # was: nearest, the point ignored
    ({"focus": "nearest", "focus_depth": 0.2}, "focus"),
    ({"focus": "point"}, "focus_x"),
    ({"focus": "depth"}, "focus_depth"),
    ({"f_number": 2.0, "aperture": 5.0}, "f_number"),              # was: f_number, aperture ignored
])
def test_contradictory_or_incomplete_focus_and_aperture_are_refused(kw, parameter):
    from depthcraft.tasks.lib.errors import ParameterError

    with pytest.raises(ParameterError) as e:
        B.BokehParams(**kw)
    assert e.value.parameter == parameter


@pytest.mark.parametrize("kw", [{}, {"focus_x": 0.3, "focus_y": 0.2}, {"focus": "point", "focus_x": 3, "focus_y": 4},
                                {"focus_depth": 0.4}, {"focus": "depth", "focus_depth": 0.4}, {"focus": "nearest"},
                                {"f_number": 2.0}, {"aperture": 3.0}])
def test_consistent_focus_and_aperture_settings_are_taken(kw):
    B.BokehParams(**kw)


def test_a_half_focus_point_is_one_line_from_the_command_and_the_recipe(tmp_path, photo_and_depth):
    p, d = photo_and_depth
    np.save(tmp_path / "d.npy", d)
    r = run_cli("bokeh", p, "--depth", tmp_path / "d.npy", "--focus-x", "0.1", "-o", tmp_path / "o.png")
    assert r.returncode == 2 and "focus_y" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "o.png").exists()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""\
version: 1
name: halfpoint
inputs:
  images: ["{p}"]
steps:
  - id: depth
    uses: estimate
  - id: soft
    uses: bokeh
    from: depth
    with: {{f_number: 2, aperture: 3}}
output: out/{{image}}/
""")
    r = run_cli("validate", recipe)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "r.yaml:11" in r.stderr and "steps.1.with.f_number" in r.stderr and "not both" in r.stderr


def test_a_steps_own_parameter_check_names_the_recipe_line(tmp_path, photo_and_depth):
    """The family: parallax's size check raised without the recipe's file and line."""
    p, _ = photo_and_depth
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""\
version: 1
name: badsize
inputs:
  images: ["{p}"]
steps:
  - id: depth
    uses: estimate
  - id: clip
    uses: parallax
    from: depth
    with: {{size: 12x}}
output: out/{{image}}/
""")
    r = run_cli("validate", recipe)
    assert r.returncode == 2 and "r.yaml:11" in r.stderr and "steps.1.with.size" in r.stderr, r.stderr


def test_an_exif_rotated_photo_takes_depth_in_its_shown_orientation_and_says_so(tmp_path, photo_and_depth):
    from PIL import Image

    p, d = photo_and_depth
    rot = tmp_path / "rot.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise: 120 wide, 160 high
    Image.open(p).save(rot, exif=exif.tobytes(), quality=95)
    np.save(tmp_path / "stored.npy", d)  # the depth of the stored pixels (160x120), as a raw-pixel tool makes it
    r = run_cli("bokeh", rot, "--depth", tmp_path / "stored.npy", "--depth-kind", "relative", "-o", tmp_path / "o.png")
    assert r.returncode == 2 and "EXIF orientation" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    np.save(tmp_path / "shown.npy", np.ascontiguousarray(np.rot90(d, -1)))  # turned like the photo is shown
    r = run_cli("bokeh", rot, "--depth", tmp_path / "shown.npy", "--depth-kind", "relative", "-o", tmp_path / "o.png")
    assert r.returncode == 0, r.stderr
    out = np.asarray(Image.open(tmp_path / "o.png"))
    shown = np.asarray(Image.open(rot).transpose(Image.Transpose.ROTATE_270)).astype(float)
    assert out.shape == (160, 120, 3)  # the orientation it is shown in
    assert abs(out.astype(float).mean() - shown.mean()) < 6  # blurred, not darkened or blanked
