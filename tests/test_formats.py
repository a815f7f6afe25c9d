"""Depth file formats: every one round-trips and says its convention."""

from __future__ import annotations

import base64
import json

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from depthcraft.tasks.lib.depthio import read_depth, read_depthmap, read_exr, sidecar_path, write_exr, write_png16
from depthcraft.tasks.lib.depthmap import DepthMap, normalized_nearness
from depthcraft.tasks.lib.errors import InputError, ParameterError
from depthcraft.tasks.export import ExportParams, run
from depthcraft.tasks.lib.formats import FORMATS, SUFFIX, MetricScale, metric_of, write_format, write_format_meta
from depthcraft.tasks.lib.outputs import depth_format_for_suffix as format_for_suffix
from depthcraft.tasks.lib.step import StepContext, load_depth_artifact
from depthcraft.tasks.lib.store import Store


def photo_depth() -> DepthMap:
    """A relative depth map with real structure: the blurred luminance of a photo, as nearness."""
    g = cv2.cvtColor(data.chelsea(), cv2.COLOR_RGB2GRAY).astype(np.float32)
    g = cv2.GaussianBlur(g, (0, 0), 3)[:200, :240]
    return DepthMap(g / 255.0 * 0.8 + 0.1, kind="relative_inverse", source="test")


SCALE = MetricScale(near=0.5, far=8.0, fov_deg=55.0)


def expected_values(dm: DepthMap, fmt: str) -> np.ndarray:
    if fmt in ("grayscale", "inverse", "png16", "npy", "pfm"):
        return normalized_nearness(dm)
    if fmt in ("npz", "raw", "tiff", "exr"):
        return dm.data
    return metric_of(dm, SCALE).data


TOLERANCE = {"grayscale": 0.5 / 255 + 1e-6, "inverse": 0.5 / 255 + 1e-6, "png16": 0.5 / 65535 + 1e-7,
             "metric_mm": 0.0005 + 1e-6}


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "preview"])
def test_every_format_round_trips_with_its_convention(tmp_path, fmt):
    dm = photo_depth()
    path = write_format(dm, fmt, tmp_path / f"d{SUFFIX[fmt]}", scale=SCALE)
    got, meta = read_depth(path)
    want = expected_values(dm, fmt)
    assert got.shape == dm.shape and got.dtype == np.float32
    err = np.abs(got.astype(np.float64) - want)
    assert err.max() <= TOLERANCE.get(fmt, 0.0), (fmt, err.max())
    if fmt in ("grayscale", "inverse", "png16", "metric_mm"):
        assert err.max() > 0  # quantised formats really are quantised: the test sees the decode
    # the convention is explicit: which end is near, and the decoded values at both ends
    assert meta["depthcraft"] == 1 and meta["kind"] in ("relative_inverse", "metric")
    near_px = np.unravel_index(np.argmax(normalized_nearness(dm)), dm.shape)
    assert meta["near"] == pytest.approx(float(want[near_px]), abs=1e-6)
    if meta["near_is_larger"]:
        assert meta["near"] > meta["far"]
    else:
        assert meta["near"] < meta["far"] and meta["units"] in ("meters", "millimetres")
        assert meta["fov_deg"] == 55.0


def test_files_read_back_as_depthmaps_of_the_right_kind(tmp_path):
    dm = photo_depth()
    back = read_depthmap(write_format(dm, "metric_exr", tmp_path / "m.exr", scale=SCALE))
    assert back.kind == "metric" and back.fov_deg == 55.0 and back.meta["near_m"] == 0.5
    assert float(back.data.min()) == pytest.approx(0.5, rel=1e-5) and float(back.data.max()) == pytest.approx(8.0, rel=1e-5)
    inv = read_depthmap(write_format(dm, "inverse", tmp_path / "i.png"))
    assert inv.kind == "relative_inverse"  # black = near is decoded back to larger = nearer
    assert np.corrcoef(inv.data.ravel(), dm.data.ravel())[0, 1] > 0.999
    # the inverse file really stores black = near
    stored = np.asarray(Image.open(tmp_path / "i.png"))
    assert stored[np.unravel_index(np.argmax(dm.data), dm.shape)] == 0


def test_npy_and_pfm_carry_metadata_in_a_sidecar_and_npz_inside(tmp_path):
    dm = DepthMap(np.linspace(1, 40, 64 * 80, dtype=np.float32).reshape(64, 80), kind="disparity", source="sgbm")
    p = write_format(dm, "raw", tmp_path / "r.npy")
    side = json.loads(sidecar_path(p).read_text())
    assert side["kind"] == "disparity" and side["units"] == "pixels" and side["near"] == 40.0
    z = np.load(write_format(dm, "npz", tmp_path / "r.npz"), allow_pickle=False)
    assert json.loads(str(z["meta"]))["convention"] == "larger = nearer"
    assert read_depthmap(tmp_path / "r.npz").kind == "disparity"


def test_invalid_pixels_survive_integer_formats_as_nan(tmp_path):
    a = np.full((64, 64), 2.5, np.float32)
    a[10:20, 10:20] = np.nan
    a[0, 0] = 1.25
    dm = DepthMap(a, kind="metric")
    mm, meta = read_depth(write_format(dm, "metric_mm", tmp_path / "mm.png"))
    assert np.isnan(mm[10:20, 10:20]).all() and meta["invalid"] == 0
    assert mm[0, 0] == pytest.approx(1.25) and np.nanmax(mm) == pytest.approx(2.5)
    assert np.asarray(Image.open(tmp_path / "mm.png")).dtype == np.uint16
    assert int(np.asarray(Image.open(tmp_path / "mm.png"))[0, 0]) == 1250  # plain millimetres
    q, _ = read_depth(write_png16(tmp_path / "q.png", a))
    assert np.isnan(q[10:20, 10:20]).all() and np.nanmin(q) == pytest.approx(1.25, abs=2e-5)
    e, _ = read_depth(write_format(dm, "exr", tmp_path / "e.exr"))
    assert np.isnan(e[10:20, 10:20]).all() and e[0, 0] == 1.25


# A 24x20 EXR written by the OpenEXR library (3.5, ZIP compression, channels R half + Z float,
# Z = 1 + 0.5 x + 0.25 y): checks our reader on a file we did not write.
OPENEXR_ZIP = (
    "di8xAQIAAABjaGFubmVscwBjaGxpc3QAJQAAAFIAAQAAAAAAAAABAAAAAQAAAFoAAgAAAAAAAAABAAAAAQAAAABjb21wcmVzc2lvbgBjb21w"
    "cmVzc2lvbgABAAAAA2RhdGFXaW5kb3cAYm94MmkAEAAAAAAAAAAAAAAAFwAAABMAAABkaXNwbGF5V2luZG93AGJveDJpABAAAAAAAAAAAAAA"
    "ABcAAAATAAAAbGluZU9yZGVyAGxpbmVPcmRlcgABAAAAAHBpeGVsQXNwZWN0UmF0aW8AZmxvYXQABAAAAAAAgD9zY3JlZW5XaW5kb3dDZW50"
    "ZXIAdjJmAAgAAAAAAAAAAAAAAHNjcmVlbldpbmRvd1dpZHRoAGZsb2F0AAQAAAAAAIA/dHlwZQBzdHJpbmcADQAAAHNjYW5saW5laW1hZ2UA"
    "VAEAAAAAAACDAgAAAAAAAAAAAAAnAQAAeF5jaMABGBgcDjQ0LEg44PBAgYFB4IPCA4MLDgcCNiQsKJjQ0NBRMaFgRsaChBURGwJ2eBxwOGGB"
    "xQgwUHiQsGBCwYaACwYfBDh+SLzQuGFxwmNHxIqMGRUdLTU9JVNy5qQsiVkTssVnj8sRmzMmWIwAA9Jcc8EAixFgQJprruhgMQIKSHHNDQ0s"
    "BoABaa65o4LFCDAgzTUPFLAYAQakueaJDBYjwIA017yQwGIEGJDmmjciWIwAA9Jc80EAixFgQJprvvBgMQIMSHPNDw4sRoABaa75w4LFCDAg"
    "zTUMDFiMAAPSXMP0D4sRYLDfcb/jAQfs8KA9JsRiBBhQzxxSTKG9OaSZMlDm4DJlYMzBbcpAmIPPFPqbg98UepuD3wwqmgMAaWl2/hAAAACi"
    "AAAAeF5jaMABFB4YXHA4ELAhYUHBhIaGjooJBTMyFiSsiNgQsMPjgMMJiwsGNzQeKLyQ+CDwg4OBgeUPFiPAQOOGxQmPHRErMmZUdLTU9JRM"
    "yZmTsiRmTcgWnz0uR2zOmFzRuaPyROaNyBeePyxM/9h+YTECDEhzDccPLEaAAWmu4fqGxQgwOOCAgAftCUMsRoAB9c3Brx8GsRgBBiSaAwA9"
    "zB3R")


def test_exr_reader_decodes_a_zip_file_from_the_reference_library(tmp_path):
    p = tmp_path / "ref.exr"
    p.write_bytes(base64.b64decode(OPENEXR_ZIP))
    z, meta = read_exr(p)
    y, x = np.mgrid[0:20, 0:24].astype(np.float32)
    assert meta == {} and np.array_equal(z, 1 + 0.5 * x + 0.25 * y)


def test_exr_writer_lays_out_the_file_as_the_spec_says(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    buf = write_exr(tmp_path / "a.exr", a, {"kind": "depth"}).read_bytes()
    assert buf[:4] == bytes([0x76, 0x2F, 0x31, 0x01]) and buf[4] == 2  # magic, version 2 scanline
    for attr in (b"channels\0chlist", b"compression\0compression", b"dataWindow\0box2i", b"lineOrder\0lineOrder",
                 b"pixelAspectRatio\0float", b"screenWindowCenter\0v2f", b"screenWindowWidth\0float"):
        assert attr in buf
    # the last scanline chunk: y = 2, 16 bytes, the row's float32 values
    assert buf[-24:] == np.array([2, 16], "<i4").tobytes() + a[2].astype("<f4").tobytes()


def test_metric_scale_from_one_known_distance(tmp_path):
    dm = photo_depth()
    m = metric_of(dm, MetricScale(known=2.0, known_x=30, known_y=40))
    assert m.kind == "metric" and m.data[40, 30] == pytest.approx(2.0, rel=1e-5)
    # nearer (larger nearness) pixels get smaller distances
    n = dm.data.ravel()
    assert np.corrcoef(n, 1.0 / m.data.ravel())[0, 1] > 0.999
    with pytest.raises(ParameterError, match="known"):
        metric_of(dm, MetricScale(known=2.0))
    with pytest.raises(ParameterError):
        write_format(dm, "metric", tmp_path / "m.npy")


def test_format_for_suffix():
    assert format_for_suffix("a.exr") == "exr" and format_for_suffix("a.TIF") == "tiff"
    assert format_for_suffix("a.npz") == "npz" and format_for_suffix("a.png") == "grayscale"
    with pytest.raises(ParameterError):
        format_for_suffix("a.gif")


def test_foreign_tiff_without_metadata_reads_raw(tmp_path):
    a = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64))
    Image.fromarray(a).save(tmp_path / "u.tif")
    got, meta = read_depth(tmp_path / "u.tif")
    assert meta == {} and got[63, 63] == 4095.0
    (tmp_path / "bad.exr").write_bytes(b"not an exr at all")
    with pytest.raises(InputError, match="bad.exr"):
        read_depth(tmp_path / "bad.exr")


def test_export_step_outputs_and_downstream_kind(tmp_path):
    src = tmp_path / "photo.png"
    rgb = data.chelsea()[:200, :240]
    Image.fromarray(rgb).save(src)
    dm = photo_depth()
    store = Store(tmp_path / "store")
    _, meta = write_format_meta(dm, "raw", tmp_path / "given.npy")
    given = store.put_file(tmp_path / "given.npy", "depth", meta)
    ctx = StepContext(step_id="export", image_name="photo", source=store.put_file(src, "image"),
                      workdir=tmp_path / "work", given_depth=given)
    outs = run(ctx, ExportParams(formats=["metric_exr", "png16", "npy", "preview"],
                                 metric=MetricScale(near=1.0, far=5.0, fov_deg=70)))
    assert set(outs) == {"main", "png16", "npy", "npy_meta", "preview"}
    metric = load_depth_artifact(store.put_file(outs["main"].path, "depth", outs["main"].meta))
    assert metric.kind == "metric" and metric.fov_deg == 70
    assert float(np.nanmin(metric.data)) == pytest.approx(1.0, rel=1e-5)
    assert outs["preview"].kind == "image" and np.asarray(Image.open(outs["preview"].path)).shape == (200, 240, 3)
