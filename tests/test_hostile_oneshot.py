"""A hostile user of the one-shot commands, `models` and the depth file formats: each test
here failed before its fix (odd photos, absurd options, outputs that must not be torn or lost,
round-trips of what was written).

The rule for bad input: one line naming the file or option, a non-zero exit, no traceback,
nothing already produced lost, outputs exactly as documented (docs/formats.md, docs/cli.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli, save_photo

OFFLINE = {"DEPTHCRAFT_OFFLINE": "1"}


@pytest.fixture
def scene(tmp_path, workspace):
    """A 160x120 photo (a disc in front of a ramp) and its relative depth map as .npy."""
    yy, xx = np.mgrid[0:120, 0:160]
    img = np.dstack([xx * 255 // 159, yy * 255 // 119, ((xx // 8 + yy // 8) % 2) * 200]).astype(np.uint8)
    p = save_photo(tmp_path / "p.png", img)
    d = (0.1 + 0.2 * yy / 119).astype(np.float32)
    d[(yy - 60) ** 2 + (xx - 80) ** 2 < 30 ** 2] = 0.8
    np.save(tmp_path / "d.npy", d)
    return p, tmp_path / "d.npy"


def one_line(r, *names, code=2) -> str:
    err = r.stderr.strip()
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    assert len(err.splitlines()) == 1, err
    for n in names:
        assert n in err, (n, err)
    return err


# --- metric.known with its pixel -------------------------------------------------------------
# The "settings with no effect" rule for known_x/known_y fired whether or not `known` was given,
# so the documented one-known-distance scale (docs/formats.md) was refused everywhere:
# "--set metric.known_x=3 has no effect with --set metric.known=1.0".

KNOWN = ["--set", "metric.known=2", "--set", "metric.known_x=30", "--set", "metric.known_y=40"]


def test_a_known_distance_at_its_pixel_scales_the_export(tmp_path, scene):
    p, d = scene
    out = tmp_path / "o" / "m.npy"
    r = run_cli("export", p, "--depth", d, "--depth-kind", "relative", "-o", out, "--set", "formats=[metric]", *KNOWN,
                env=OFFLINE)
    assert r.returncode == 0, r.stderr
    m = np.load(out)
    assert m.dtype == np.float32 and m.shape == (120, 160)
    assert m[40, 30] == pytest.approx(2.0, rel=1e-5)  # row known_y, column known_x
    meta = json.loads((tmp_path / "o" / "m.npy.json").read_text())
    assert meta["kind"] == "metric"


@pytest.mark.parametrize("step,out,extra", [
    ("mesh", "m.glb", []),
    ("layers", "l.png", ["--set", "depths=[1, 3]", "--units", "meters"]),
    ("estimate", "e.npy", ["--format", "metric"]),
    ("refine", "r.npy", ["--format", "metric"]),
])
def test_a_known_distance_is_taken_by_every_step_that_reads_a_scale(tmp_path, scene, step, out, extra):
    p, d = scene
    depth = [] if step == "estimate" else ["--depth", d, "--depth-kind", "relative"]
    provider = ["--provider", "classic"] if step in ("estimate", "refine") else []
    r = run_cli(step, p, *depth, *provider, "-o", tmp_path / out, *KNOWN, *extra, env=OFFLINE)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / out).stat().st_size > 0


def test_a_pixel_without_a_known_distance_is_still_refused(tmp_path, scene):
    p, d = scene
    r = run_cli("mesh", p, "--depth", d, "-o", tmp_path / "m.glb", "--set", "metric.known_x=3", env=OFFLINE)
    one_line(r, "--set metric.known_x=3", "no effect", "metric.known=null")
    assert not (tmp_path / "m.glb").exists()


def test_a_recipe_with_a_known_distance_validates(tmp_path, scene):
    p, _ = scene
    (tmp_path / "r.yaml").write_text(
        f"version: 1\nname: known\ninputs: {{images: ['{p}']}}\nsteps:\n  - id: depth\n    uses: estimate\n"
        "  - id: files\n    uses: export\n    from: depth\n    with:\n      formats: [metric]\n"
        "      metric: {known: 2, known_x: 30, known_y: 40}\n")
    r = run_cli("validate", tmp_path / "r.yaml", env=OFFLINE)
    assert r.returncode == 0, r.stderr


# --- absurd values: one line naming the option, never an OpenCV assertion or inf/NaN written --

@pytest.mark.parametrize("step,out,opts,named", [
    # cv2.GaussianBlur's kernel size overflowed: an OpenCV traceback
    ("layers", "l.png", ["--feather", "1e9"], "--feather"),
    # 1/near overflowed float32: NaN meters written, or "no triangle is left" blaming edge_cut
    ("export", "x.exr", ["--set", "formats=[metric_exr]", "--set", "metric.near=1e-300", "--set", "metric.far=2"],
     "metric.near"),
    ("export", "x.exr", ["--set", "formats=[metric_exr]", "--set", "metric.near=1", "--set", "metric.far=1e300"],
     "metric.far"),
    ("mesh", "m.glb", ["--set", "metric.near=1e-300", "--set", "metric.far=1e300"], "metric.near"),
    ("export", "x.npy", ["--set", "formats=[metric]", "--set", "metric.known=1e300", "--set", "metric.known_x=1",
                         "--set", "metric.known_y=1"], "metric.known"),
    # far / near = 1e300: infinite depth (a RuntimeWarning, then inf vertices in the GLB)
    ("mesh", "m.glb", ["--far-ratio", "1e300"], "--far-ratio"),
    # layers' depths: an empty list silently meant "count planes"; two equal centres made a tie
    # split at the centre itself; a thousand centres wrote two thousand files (count stops at 16)
    ("layers", "l.png", ["--set", "depths=[]"], "depths"),
    ("layers", "l.png", ["--set", "depths=[0.5, 0.5]"], "depths"),
    ("layers", "l.png", ["--set", "depths=[" + ", ".join(str(i / 100) for i in range(1, 41)) + "]"], "depths"),
])
def test_an_absurd_value_is_one_line_and_writes_nothing(tmp_path, scene, step, out, opts, named):
    p, d = scene
    r = run_cli(step, p, "--depth", d, "--depth-kind", "relative", "-o", tmp_path / "o" / out, *opts, env=OFFLINE)
    one_line(r, named)
    assert "Warning" not in r.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_the_largest_allowed_values_still_write_finite_files(tmp_path, scene):
    p, d = scene
    r = run_cli("export", p, "--depth", d, "--depth-kind", "relative", "-o", tmp_path / "x.exr",
                "--set", "formats=[metric_exr]", "--set", "metric.near=1e-6", "--set", "metric.far=1e9", env=OFFLINE)
    assert r.returncode == 0 and "Warning" not in r.stderr, r.stderr
    from depthcraft.tasks.lib.depthio import read_depth

    z, _ = read_depth(tmp_path / "x.exr")
    assert np.isfinite(z).all() and z.min() == pytest.approx(1e-6) and z.max() == pytest.approx(1e9)
    r = run_cli("layers", p, "--depth", d, "--depth-kind", "relative", "-o", tmp_path / "l.png", "--feather", "1000",
                "--set", "depths=[0.2, 0.9]", env=OFFLINE)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "l-layer_1.png").exists() and not (tmp_path / "l-layer_2.png").exists()


# --- a depth map with a hole (NaN: no depth) ---------------------------------------------------

@pytest.fixture
def holed(tmp_path):
    """Meters increasing to the right (1..4 m) with one pixel of no depth (NaN)."""
    yy, xx = np.mgrid[0:120, 0:160]
    z = (1 + 3 * xx / 159).astype(np.float32)
    z[10, 20] = np.nan
    np.save(tmp_path / "z.npy", z)
    return tmp_path / "z.npy"


def _strict_json(path):
    def refuse(c):
        raise AssertionError(f"{path.name} holds {c}, which is not JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


def test_layers_in_meters_with_a_hole_in_the_map(tmp_path, scene, holed):
    """One NaN pixel made every centre NaN (1/NaN in min/max): all pixels in plane 0, plane 1
    empty, and `NaN` written into planes.json, which strict JSON readers refuse."""
    p, _ = scene
    r = run_cli("layers", p, "--depth", holed, "--depth-kind", "metric", "-o", tmp_path / "l.png",
                "--set", "depths=[1.5, 3]", "--units", "meters", "--feather", "0", env=OFFLINE)
    assert r.returncode == 0, r.stderr
    planes = _strict_json(tmp_path / "l-planes.json")
    assert planes["centres"][0] > planes["centres"][1]
    assert 0.2 < planes["fractions"][0] < 0.4  # 1..2.25 m of 1..4 m (the threshold is at 1/z's midpoint)
    assert planes["centres_m"][0] == pytest.approx(1.6, abs=0.1)


def test_layers_planes_json_is_strict_json(tmp_path, scene, holed):
    """centres_m was the median of a plane holding the NaN pixel (NaN); quantile planes that no
    pixel falls in had a NaN centre: both are `null` now."""
    p, _ = scene
    r = run_cli("layers", p, "--depth", holed, "--depth-kind", "metric", "-o", tmp_path / "k.png", env=OFFLINE)
    assert r.returncode == 0, r.stderr
    planes = _strict_json(tmp_path / "k-planes.json")
    assert all(isinstance(c, float) for c in planes["centres_m"])
    flat = np.ones((120, 160), np.float32)
    flat[:10] = 2
    np.save(tmp_path / "flat.npy", flat)
    r = run_cli("layers", p, "--depth", tmp_path / "flat.npy", "--depth-kind", "disparity", "-o", tmp_path / "q.png",
                "--method", "quantile", "--count", "4", env=OFFLINE)
    assert r.returncode == 0, r.stderr
    planes = _strict_json(tmp_path / "q-planes.json")
    assert None in planes["centres"] and len(planes["centres"]) == 4


def test_a_hole_stays_a_hole_in_meters(tmp_path, scene, holed):
    """A disparity map with an invalid pixel (Middlebury writes inf) turned into meters by
    near/far: the hole came out as the median distance in every metric file (metric_mm's
    documented "0 = no depth" never happened), while a metric map's hole stayed NaN."""
    p, _ = scene
    z = np.load(holed)
    disp = np.where(np.isfinite(z), 100.0 / z, np.inf).astype(np.float32)
    np.save(tmp_path / "disp.npy", disp)
    r = run_cli("export", p, "--depth", tmp_path / "disp.npy", "--depth-kind", "disparity", "-o", tmp_path / "o" / "x.npy",
                "--set", "formats=[metric, metric_mm, metric_exr, metric_tiff]", "--set", "metric.near=1",
                "--set", "metric.far=4", env=OFFLINE)
    assert r.returncode == 0, r.stderr
    from depthcraft.tasks.lib.depthio import read_depth

    for name in ("x.npy", "x-metric_mm.png", "x-metric_exr.exr", "x-metric_tiff.tif"):
        m, meta = read_depth(tmp_path / "o" / name)
        assert np.argwhere(np.isnan(m)).tolist() == [[10, 20]], name
        ok = np.isfinite(z)
        assert np.allclose(m[ok], z[ok], atol=6e-4 if name.endswith(".png") else 1e-5), name
    # a known distance at that pixel has nothing to scale by
    r = run_cli("export", p, "--depth", tmp_path / "disp.npy", "--depth-kind", "disparity", "-o", tmp_path / "k.npy",
                "--set", "formats=[metric]", *KNOWN[:2], "--set", "metric.known_x=20", "--set", "metric.known_y=10",
                env=OFFLINE)
    one_line(r, "(20, 10)", "no depth")
    assert not (tmp_path / "k.npy").exists()


# --- what a depth file says about itself (docs/formats.md, "Every file says its convention") ---

def test_metric_files_say_the_kind_the_map_had_before_meters(tmp_path, scene):
    """source_kind was always "metric" in metric files (file_meta saw the converted map); the
    documented example is a metric file from a relative map saying source_kind relative_inverse."""
    p, d = scene
    r = run_cli("export", p, "--depth", d, "--depth-kind", "relative", "-o", tmp_path / "x.npy",
                "--set", "formats=[metric, metric_mm, metric_exr, metric_tiff, exr]", "--set", "metric.near=1",
                "--set", "metric.far=4", env=OFFLINE)
    assert r.returncode == 0, r.stderr
    from depthcraft.tasks.lib.depthio import read_depth

    for name in ("x.npy", "x-metric_mm.png", "x-metric_exr.exr", "x-metric_tiff.tif", "x-exr.exr"):
        _, meta = read_depth(tmp_path / name)
        assert meta["source_kind"] == "relative_inverse", (name, meta)
    assert read_depth(tmp_path / "x.npy")[1]["kind"] == "metric"


def test_metric_mm_says_what_it_clips_and_its_range_is_what_is_read_back(tmp_path, scene):
    """Distances over 65.535 m (or under 0.5 mm) were clipped without a word, and the file's
    near/far (documented as the decoded values at the nearest and farthest pixels) said 100 m
    while 65.535 m is what comes back."""
    p, d = scene
    r = run_cli("export", p, "--depth", d, "--depth-kind", "relative", "-o", tmp_path / "x.png",
                "--set", "formats=[metric_mm]", "--set", "metric.near=1", "--set", "metric.far=100", env=OFFLINE)
    assert r.returncode == 0, r.stderr
    assert "notice: metric_mm:" in r.stderr and "65.535 m" in r.stderr and "Traceback" not in r.stderr
    from depthcraft.tasks.lib.depthio import read_depth

    z, meta = read_depth(tmp_path / "x.png")
    assert meta["far"] == pytest.approx(float(np.nanmax(z))) == pytest.approx(65.535)
    assert meta["near"] == pytest.approx(float(np.nanmin(z)), abs=1e-6)
    r = run_cli("export", p, "--depth", d, "--depth-kind", "relative", "-o", tmp_path / "y.png",
                "--set", "formats=[metric_mm]", "--set", "metric.near=1", "--set", "metric.far=4", env=OFFLINE)
    assert r.returncode == 0 and "notice" not in r.stderr, r.stderr  # nothing clipped: nothing said


# --- where the output goes ------------------------------------------------------------------

@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self"), reason="needs Linux /proc")
def test_a_folder_that_takes_no_files_is_refused_before_any_work(tmp_path, scene):
    """`-o /proc/x.mp4` (root passes os.access; the folder refuses new files) rendered the whole
    video, then failed on the copy: minutes lost for a 4K parallax."""
    p, _ = scene
    r = run_cli("parallax", p, "-o", "/proc/depthcraft-x.mp4", env=OFFLINE)
    one_line(r, "/proc/depthcraft-x.mp4", "cannot write")  # (the provider's "auto: ..." line came first: work began)


def test_a_folder_in_the_way_of_one_output_writes_none_of_them(tmp_path, scene):
    """A folder named like a beside-output (x-preview.png/) failed the fourth copy: three files
    of the set were written (or replaced) and the command said it failed."""
    p, d = scene
    (tmp_path / "o" / "x-preview.png").mkdir(parents=True)
    (tmp_path / "o" / "x.png").write_bytes(b"the user's earlier file")
    r = run_cli("export", p, "--depth", d, "-o", tmp_path / "o" / "x.png", env=OFFLINE)
    one_line(r, "x-preview.png", "folder")
    assert sorted(f.name for f in (tmp_path / "o").iterdir()) == ["x-preview.png", "x.png"]
    assert (tmp_path / "o" / "x.png").read_bytes() == b"the user's earlier file"


# --- foreign depth files given with --depth ---------------------------------------------------

def _pfm(header: bytes, values: np.ndarray, tail: bytes = b"") -> bytes:
    return header + values.tobytes() + tail


PFM_CASES = {
    # a zero scale or NaN has no sign, so no byte order: read as big-endian, denormal garbage
    "scale-0.pfm": (_pfm(b"Pf\n160 120\n0\n", np.ones((120, 160), "<f4")), "scale 0"),
    "scale-nan.pfm": (_pfm(b"Pf\n160 120\nnan\n", np.ones((120, 160), "<f4")), "scale nan"),
    # 0 x 0: an empty map came back (a size mismatch much later)
    "empty.pfm": (b"Pf\n0 0\n-1.0\n", "size 0x0"),
    # a stray byte after the values: numpy's "buffer size must be a multiple of element size"
    "tail.pfm": (_pfm(b"Pf\n160 120\n-1.0\n", np.ones((120, 160), "<f4"), b"\n"), "bytes after its data"),
    # (a guard, refused before too: a header claiming 100000 x 100000 is sized from the file, never read)
    "huge.pfm": (b"Pf\n100000 100000\n-1.0\n", "truncated PFM"),
}


@pytest.mark.parametrize("name", sorted(PFM_CASES))
def test_a_malformed_pfm_is_one_line(tmp_path, scene, name):
    p, _ = scene
    data, said = PFM_CASES[name]
    (tmp_path / name).write_bytes(data)
    r = run_cli("stereo", p, "--depth", tmp_path / name, "-o", tmp_path / "s.png", env=OFFLINE)
    one_line(r, name, said)
    assert not (tmp_path / "s.png").exists()


@pytest.mark.parametrize("name,array,said", [
    ("empty.npy", np.zeros((0, 160), np.float32), "empty"),  # (was refused later, as a size mismatch)
    ("huge.npy", np.full((120, 160), 1e300), "beyond float32"),  # inf with a RuntimeWarning line
])
def test_an_npy_that_cannot_be_a_depth_map_is_one_line(tmp_path, scene, name, array, said):
    p, _ = scene
    np.save(tmp_path / name, array)
    r = run_cli("stereo", p, "--depth", tmp_path / name, "-o", tmp_path / "s.png", env=OFFLINE)
    one_line(r, name, said)


def test_pfm_round_trip_keeps_values_orientation_and_byte_order(tmp_path):
    """depthcraft's PFM is bottom-up, little-endian (scale -1); a big-endian colour PFM whose
    channels agree reads the same; both give row 0 = the top of the picture."""
    from depthcraft.tasks.lib.depthio import read_depth, write_pfm

    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    write_pfm(tmp_path / "a.pfm", a)
    raw = (tmp_path / "a.pfm").read_bytes()
    assert raw.startswith(b"Pf\n4 3\n-1.0\n")
    assert np.frombuffer(raw[len(b"Pf\n4 3\n-1.0\n"):], "<f4")[:4].tolist() == [8, 9, 10, 11]  # bottom row first
    got, _ = read_depth(tmp_path / "a.pfm")
    assert got.dtype == np.float32 and np.array_equal(got, a)
    (tmp_path / "b.pfm").write_bytes(b"PF\n4 3\n1.0\n" + np.repeat(a[::-1, :, None], 3, 2).astype(">f4").tobytes())
    assert np.array_equal(read_depth(tmp_path / "b.pfm")[0], a)


# --- models: a folder where a model file belongs ---------------------------------------------

@pytest.fixture
def mirror(tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    import hashlib

    from test_models import UPSTREAM, FileServer, tiny_model_bytes

    from depthcraft.tasks.lib import models as M

    data = tiny_model_bytes(tmp_path)
    srv = FileServer({"/releases/v1/tiny.onnx": data})
    monkeypatch.setenv("DEPTHCRAFT_MODELS_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DEPTHCRAFT_MODELS_MIRROR", srv.base + "/")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("DEPTHCRAFT_OFFLINE", raising=False)
    info = M.ModelInfo(name="tiny-test", title="Tiny test model", url=UPSTREAM,
                       sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data), licence="CC-BY-NC-4.0",
                       commercial_use=False, description="a test graph", input_size=28)
    monkeypatch.setitem(M.REGISTRY, info.name, info)
    yield srv, info, tmp_path / "cache"
    srv.close()


def test_a_folder_under_a_models_name_is_said_before_any_download(mirror, capsys):
    """A folder at <cache>/NAME.onnx: `models verify` said "missing ... run pull", and pull
    downloaded the whole model, then failed on the rename with "cannot write the model cache
    <folder>: Is a directory". Now both name the folder in the way, and nothing is fetched."""
    from depthcraft.flows import cli_models

    srv, info, cache = mirror
    (cache / "tiny-test.onnx").mkdir(parents=True)
    assert cli_models.main(["pull", "tiny-test", "-q"]) != 0
    line = capsys.readouterr().err.strip()
    assert "tiny-test.onnx" in line and "folder" in line and len(line.splitlines()) == 1, line
    assert srv.log == []  # not a byte downloaded
    assert cli_models.main(["verify", "tiny-test"]) == 1
    out = capsys.readouterr().out
    assert "folder" in out and "not in" not in out, out


@pytest.mark.parametrize("action", ["pull", "verify"])
def test_an_unknown_model_name_is_said_as_the_argument_it_is(action):
    """`models pull nope` said "parameter 'provider'": no provider was given; and on stdout, where
    no other command's errors go (`models list > inventory.txt` kept them in the file)."""
    r = run_cli("models", action, "depth-anything-v2-smal", env=OFFLINE)
    err = one_line(r, f"models {action} NAME", "unknown model 'depth-anything-v2-smal'", "did you mean")
    assert "provider" not in err


# --- odd photos ----------------------------------------------------------------------------------

def _float_tiff(path, a):
    from PIL import Image

    Image.fromarray(a.astype(np.float32)).save(path)
    return path


def test_a_float_tiff_photo_with_one_nan_or_inf_pixel(tmp_path):
    """One inf pixel made (a - lo) / inf: the whole photo black, with RuntimeWarnings on the
    terminal; one NaN pixel printed "invalid value encountered in cast"."""
    from depthcraft.tasks.lib.images import read_image

    ramp = np.tile(np.linspace(0, 1, 160, dtype=np.float32), (120, 1))
    for bad in (np.nan, np.inf):
        a = ramp.copy()
        a[5, 5] = bad
        p = _float_tiff(tmp_path / f"f{bad}.tif", a)
        rgb = read_image(p).rgb
        assert rgb[5, 5].tolist() == [0, 0, 0]
        assert rgb[60, 159].tolist() == [255, 255, 255] and abs(int(rgb[60, 80, 0]) - 128) <= 1
        r = run_cli("estimate", p, "--provider", "classic", "-o", tmp_path / f"d{bad}.png", env=OFFLINE)
        assert r.returncode == 0 and "Warning" not in r.stderr, r.stderr


def test_a_float_tiff_of_nan_only_is_one_line(tmp_path):
    p = _float_tiff(tmp_path / "nan.tif", np.full((120, 160), np.nan))
    r = run_cli("estimate", p, "--provider", "classic", "-o", tmp_path / "d.png", env=OFFLINE)
    one_line(r, "nan.tif", "no finite value")
    assert not (tmp_path / "d.png").exists()


# --- --set: YAML values that are not what the parameter takes ---------------------------------

@pytest.mark.parametrize("step,out,opts,named", [
    # a nested --set under a parameter already given a plain value: a TypeError traceback
    ("stereo", "s.png", ["--divergence", "2", "--set", "divergence.x=1"], "divergence is already set"),
    ("mesh", "m.glb", ["--set", "metric=5", "--set", "metric.near=1"], "metric is already set"),
    # YAML's true where a number goes was taken as 1 (stride 1: the finest mesh, silently)
    ("mesh", "m.glb", ["--set", "stride=true"], "--stride"),
    ("bokeh", "b.png", ["--set", "focus_x=true", "--set", "focus_y=1"], "--focus-x"),
    ("mesh", "m.glb", ["--set", "metric.near=yes", "--set", "metric.far=3"], "metric.near"),
])
def test_a_set_value_of_the_wrong_shape_is_one_line(tmp_path, scene, step, out, opts, named):
    p, d = scene
    r = run_cli(step, p, "--depth", d, "-o", tmp_path / out, *opts, env=OFFLINE)
    one_line(r, named)
    assert not (tmp_path / out).exists()


def test_yaml_off_is_the_documented_word_not_false(tmp_path, scene):
    """viewer's `auto: off` (docs: idle, always or off) is YAML 1.1's false: refused as
    "Input should be 'idle', 'always' or 'off' (got False)" in recipes and with --set."""
    p, d = scene
    r = run_cli("viewer", p, "--depth", d, "-o", tmp_path / "v.html", "--set", "auto=off", env=OFFLINE)
    assert r.returncode == 0, r.stderr
    assert '"auto":"off"' in (tmp_path / "v.html").read_text().replace(" ", "")
    (tmp_path / "r.yaml").write_text(
        f"version: 1\nname: v\ninputs: {{images: ['{p}']}}\nsteps:\n  - id: d\n    uses: estimate\n"
        "  - id: page\n    uses: viewer\n    from: d\n    with: {auto: off}\n")
    r = run_cli("validate", tmp_path / "r.yaml", env=OFFLINE)
    assert r.returncode == 0, r.stderr
    r = run_cli("viewer", p, "--depth", d, "-o", tmp_path / "w.html", "--set", "auto=on", env=OFFLINE)
    one_line(r, "--auto", "idle, always, off")  # no "on" among the choices: said, not guessed


@pytest.mark.parametrize("out,kind", [("d.npy", "disparity"), ("d.pfm", "relative_inverse")])
def test_refine_writes_the_sidecar_that_says_what_its_npy_holds(tmp_path, scene, out, kind):
    """estimate -o x.npy writes x.npy.json; refine wrote the .npy alone, so a refined disparity map
    (pixels) read back as relative_inverse, and a PFM's normalised values had no metadata."""
    p, d = scene
    disp = (np.load(d) * 40).astype(np.float32)
    np.save(tmp_path / "disp.npy", disp)
    r = run_cli("refine", p, "--depth", tmp_path / "disp.npy", "--depth-kind", "disparity", "-o", tmp_path / out,
                env=OFFLINE)
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / (out + ".json")).read_text())
    assert meta["kind"] == kind and meta["source_kind"] == "disparity"
    from depthcraft.tasks.lib.depthio import read_depthmap

    dm = read_depthmap(tmp_path / out)
    assert dm.kind == kind
    if kind == "disparity":
        assert float(np.nanmax(dm.data)) == pytest.approx(float(disp.max()), rel=0.05)  # pixels, not 0..1


def test_export_with_no_format_is_one_line_not_a_silent_success(tmp_path, scene):
    """`--set formats=[]`: exit 0, no line, and -o's file never written."""
    p, d = scene
    r = run_cli("export", p, "--depth", d, "-o", tmp_path / "x.png", "--set", "formats=[]", env=OFFLINE)
    one_line(r, "formats")
    assert not (tmp_path / "x.png").exists()


def test_the_pixel_limit_hint_is_a_value_it_takes_and_small_limits_are_said(tmp_path, scene):
    """DEPTHCRAFT_MAX_PIXELS=abc was refused with the hint `=5e+07`, which is refused the same
    way (a whole number is digits); a limit under 1 MP was said as "over the limit of 0 MP"."""
    import re

    p, _ = scene
    r = run_cli("estimate", p, "--provider", "classic", "-o", tmp_path / "e.png", env={**OFFLINE,
                "DEPTHCRAFT_MAX_PIXELS": "abc"})
    err = one_line(r, "DEPTHCRAFT_MAX_PIXELS", "'abc'")
    hinted = re.search(r"DEPTHCRAFT_MAX_PIXELS=(\S+)", err).group(1)
    r = run_cli("estimate", p, "--provider", "classic", "-o", tmp_path / "d.png",
                env={**OFFLINE, "DEPTHCRAFT_MAX_PIXELS": hinted})
    assert r.returncode == 0, (hinted, r.stderr)
    r = run_cli("estimate", p, "--provider", "classic", "-o", tmp_path / "e.png", "--max-pixels", "5000", env=OFFLINE)
    err = one_line(r, "19,200 pixels", "limit of 5,000 pixels")
    assert "0 MP" not in err


@pytest.mark.parametrize("suffix", [".png", ".npy", ".exr", ".npz", ".tif"])
def test_an_empty_depth_file_is_said_as_empty(tmp_path, scene, suffix):
    """A 0-byte --depth was each decoder's own words: "EOF: reading magic string, expected 8
    bytes got 0", "not enough values to unpack (expected 2, got 0)", "No data left in file"."""
    p, _ = scene
    (tmp_path / f"d{suffix}").write_bytes(b"")
    r = run_cli("stereo", p, "--depth", tmp_path / f"d{suffix}", "-o", tmp_path / "s.png", env=OFFLINE)
    one_line(r, f"d{suffix}", "empty file")


def test_an_empty_name_for_the_photo_or_the_depth_is_said(tmp_path, scene):
    """`--depth ""` (an unset shell variable) was taken as no --depth: the map was estimated
    instead, exit 0; an empty photo name was "error: .: is a folder"."""
    p, _ = scene
    r = run_cli("stereo", p, "--depth", "", "-o", tmp_path / "s.png", env=OFFLINE)
    one_line(r, "--depth", "empty path")
    assert not (tmp_path / "s.png").exists()
    r = run_cli("estimate", "", "-o", tmp_path / "e.png", env=OFFLINE)
    one_line(r, "IMAGE", "empty path")


def test_a_jpeg_with_a_preview_or_a_stereo_mpo_is_a_photo(tmp_path, scene):
    """Camera JPEGs that carry a large preview as a second MPO image (CIPA DC-007), and the
    stereo MPO depthcraft writes itself, were refused as "animated MPO (2 frames) is a clip, not
    a photo", though no clip command takes them: the primary (first) image is the photo."""
    from PIL import Image

    p, d = scene
    photo = Image.open(p).convert("RGB")
    photo.save(tmp_path / "cam.jpg", format="MPO", save_all=True, append_images=[photo.resize((80, 60))])
    r = run_cli("bokeh", tmp_path / "cam.jpg", "--depth", d, "-o", tmp_path / "b.png", env=OFFLINE)
    assert r.returncode == 0 and "notice" not in r.stderr, r.stderr  # a preview is not news
    assert Image.open(tmp_path / "b.png").size == (160, 120)
    r = run_cli("stereo", p, "--depth", d, "-o", tmp_path / "pair.mpo", env=OFFLINE)
    assert r.returncode == 0, r.stderr
    r = run_cli("estimate", tmp_path / "pair.mpo", "--provider", "classic", "-o", tmp_path / "e.png", env=OFFLINE)
    assert r.returncode == 0 and "the left eye" in r.stderr, r.stderr
    assert Image.open(tmp_path / "e.png").size == (160, 120)


def test_a_stride_too_big_for_any_triangle_names_the_stride(tmp_path):
    """`mesh --stride 100000` said "raise edge_cut" (the cut was not the cause): a stride that
    leaves a grid of a few samples is named, with its grid."""
    import skimage.data as sd

    p = save_photo(tmp_path / "c.png", sd.coffee())
    r = run_cli("mesh", p, "-o", tmp_path / "m.glb", "--stride", "100000", "--provider", "classic", env=OFFLINE)
    err = one_line(r, "'stride'", "2x2 grid")
    assert "edge_cut" not in err and not (tmp_path / "m.glb").exists()


def test_a_glob_takes_mpo_photos_as_the_one_shot_commands_do(tmp_path):
    """A camera's .mpo (a JPEG with previews) is a photo to `estimate x.mpo`; a recipe's glob
    left it out."""
    from PIL import Image

    from depthcraft.flows.compile import _expand

    photo = Image.fromarray(np.full((96, 128, 3), 120, np.uint8))
    photo.save(tmp_path / "cam.mpo", format="MPO", save_all=True, append_images=[photo.resize((64, 48))])
    save_photo(tmp_path / "p.png", np.full((96, 128, 3), 90, np.uint8))
    assert sorted(Path(h).name for h in _expand("*", tmp_path)) == ["cam.mpo", "p.png"]


def test_a_killed_writers_temp_file_goes_with_the_next_write(tmp_path):
    """`kill -9` during a final copy left a hidden `.NAME.*.tmp` for good; the next write of NAME
    removes those untouched for 10 minutes (a live writer's temp file is kept)."""
    import os
    import time

    from depthcraft.tasks.lib.store import STALE_TEMP_SECONDS, atomic_copy, copy_verified, sha256_file

    src = tmp_path / "src.png"
    src.write_bytes(b"new")
    out = tmp_path / "o"
    out.mkdir()
    stale, live, other = out / ".x.png.k1ll.tmp", out / ".x.png.l1ve.tmp", out / ".y.png.k1ll.tmp"
    for p in (stale, live, other):
        p.write_bytes(b"half")
    old = time.time() - STALE_TEMP_SECONDS - 60
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    atomic_copy(src, out / "x.png")
    assert (out / "x.png").read_bytes() == b"new"
    assert not stale.exists() and live.exists() and other.exists()  # (another output's temp: its own write)
    copy_verified(src, out / "y.png", sha256_file(src))  # a recipe's publish: the same
    assert not other.exists()
