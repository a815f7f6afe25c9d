"""Depth planes: chosen from the histogram, partitioning the photo, nearest first, feathered."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from skimage import data

from depthcraft.tasks.lib.depthio import write_npy
from depthcraft.tasks.lib.depthmap import DepthMap
from depthcraft.tasks.lib.errors import ParameterError
from depthcraft.tasks.lib.formats import MetricScale
from depthcraft.tasks.layers import LayersParams, assign_planes, choose_planes, plane_masks, run, split_layers
from depthcraft.tasks.lib.step import StepContext
from depthcraft.tasks.lib.store import Store

RGB = data.coffee()[::2, ::2].copy()  # 200 x 300 real photo


def three_planes(seed=0):
    """Nearness with three regions (0.85 / 0.5 / 0.15) plus noise, and the true region index."""
    h, w = RGB.shape[:2]
    truth = np.full((h, w), 2, np.int32)
    truth[:, : w // 2] = 1
    truth[h // 4: 3 * h // 4, w // 6: w // 3] = 0
    level = np.array([0.85, 0.5, 0.15], np.float32)[truth]
    rng = np.random.default_rng(seed)
    return DepthMap(level + rng.normal(0, 0.04, level.shape).astype(np.float32)), truth


@pytest.mark.parametrize("method", ["kmeans", "otsu"])
def test_planes_from_the_histogram_recover_the_regions_nearest_first(method):
    dm, truth = three_planes()
    res = split_layers(RGB, dm, count=3, method=method, feather=0)
    assert (res["labels"] == truth).mean() > 0.99
    c = np.array(res["centres"])
    assert np.all(np.diff(c) < 0)  # nearest first
    # normalised nearness of the true levels: map ends are the noisy extremes, so compare order and spacing
    assert c[0] > 0.7 and 0.35 < c[1] < 0.65 and c[2] < 0.3


def test_masks_partition_the_image_and_feathering_keeps_the_sum():
    dm, truth = three_planes()
    hard = split_layers(RGB, dm, count=3, feather=0)["masks"]
    assert set(np.unique(hard)) == {0.0, 1.0} and np.array_equal(hard.sum(0), np.ones(truth.shape))
    soft = split_layers(RGB, dm, count=3, feather=4.0)
    m = soft["masks"]
    assert np.allclose(m.sum(0), 1.0, atol=1e-5)
    assert ((m > 0.05) & (m < 0.95)).any(axis=0).mean() > 0.02  # edges really are soft
    assert (m.argmax(0) == soft["labels"]).mean() > 0.97  # feathering softens edges, it does not move planes
    # the RGBA layers composite back to the photo (premultiplied sum)
    comp = sum(layer[..., :3].astype(np.float64) * (layer[..., 3:] / 255.0) for layer in soft["layers"])
    assert np.abs(comp - RGB).max() <= 2.0


def test_quantile_planes_hold_equal_shares():
    ramp = DepthMap(np.tile(np.linspace(0, 1, 300, dtype=np.float32), (200, 1)))
    res = split_layers(RGB, ramp, count=4, method="quantile", feather=0)
    assert np.allclose(res["fractions"], 0.25, atol=0.01)
    assert res["layers"][0][..., 3][:, -1].min() == 255  # right edge is the nearest (largest nearness)


def test_given_plane_distances_in_meters():
    h, w = RGB.shape[:2]
    z = np.full((h, w), 4.0, np.float32)
    z[:, :100] = 2.0
    z[50:150, 20:80] = 1.0
    res = split_layers(RGB, DepthMap(z, kind="metric"), depths=[4.0, 1.0, 2.0], units="meters", feather=0)
    want = np.where(z == 1.0, 0, np.where(z == 2.0, 1, 2))
    assert np.array_equal(res["labels"], want) and res["centres_m"] == [1.0, 2.0, 4.0]
    # a relative map with a metric scale: nearest region at 0.5 m, farthest at 5 m
    rel = DepthMap(1.0 / z)
    res = split_layers(RGB, rel, depths=[0.5, 5.0], units="meters", scale=MetricScale(near=0.5, far=5.0), feather=0)
    assert np.array_equal(res["labels"] == 0, z == 1.0)


def test_bad_parameters_are_named():
    dm, _ = three_planes()
    with pytest.raises(ParameterError, match="method"):
        choose_planes(dm.data, 6, "otsu")
    with pytest.raises(ParameterError, match="depths"):
        split_layers(RGB, dm, depths=[1.5])
    with pytest.raises(ParameterError):
        split_layers(RGB, dm, depths=[2.0], units="meters")  # relative map, no scale


def test_assign_and_masks_small_exact():
    n = np.array([[1.0, 0.7, 0.5], [0.3, 0.0, 0.6]])
    lab = assign_planes(n, np.array([0.6, 0.3]))
    assert lab.tolist() == [[0, 0, 1], [2, 2, 1]]  # a value on a threshold goes to the farther plane
    assert plane_masks(lab, 3).sum(0).tolist() == [[1, 1, 1], [1, 1, 1]]


def test_layers_step_writes_named_outputs(tmp_path):
    dm, truth = three_planes()
    Image.fromarray(RGB).save(tmp_path / "photo.png")
    write_npy(tmp_path / "d.npy", dm.data)
    store = Store(tmp_path / "store")
    ctx = StepContext(step_id="planes", image_name="photo", source=store.put_file(tmp_path / "photo.png", "image"),
                      workdir=tmp_path / "work", given_depth=store.put_file(tmp_path / "d.npy", "depth",
                                                                            {"kind": "relative_inverse"}))
    outs = run(ctx, LayersParams(count=3, feather=1.5))
    assert set(outs) == {"main", "planes"} | {f"layer_{i}" for i in range(3)} | {f"mask_{i}" for i in range(3)}
    layer0 = np.asarray(Image.open(outs["layer_0"].path))
    assert layer0.shape == RGB.shape[:2] + (4,) and np.array_equal(layer0[..., :3], RGB)
    masks = np.stack([np.asarray(Image.open(outs[f"mask_{i}"].path)).astype(int) for i in range(3)])
    assert np.abs(masks.sum(0) - 255).max() <= 2  # 8-bit rounding of three masks
    assert ((masks[0] > 128) == (truth == 0)).mean() > 0.98
    planes = json.loads(outs["planes"].path.read_text())
    assert len(planes["centres"]) == 3 and outs["mask_2"].kind == "mask" and outs["layer_1"].meta["plane"] == 1
    assert np.asarray(Image.open(outs["main"].path)).shape == RGB.shape
