"""The onnx provider with tiny graphs built here (onnx.helper): real pre- and post-processing, no weights."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from depthcraft.tasks.lib.errors import InputError, ParameterError  # noqa: E402
from depthcraft.tasks.lib.models import IMAGENET_MEAN, IMAGENET_STD, local_model  # noqa: E402
from depthcraft.tasks.providers import DepthRequest, get_provider  # noqa: E402
from depthcraft.tasks.providers.onnx import (OnnxProvider, choose_execution_providers, guided_upsample,  # noqa: E402
                                  preprocess, squeeze_output, target_size, upsample)


# -- tiny graphs -------------------------------------------------------------------------------
def mean_graph(path, h="H", w="W", scale: float = 1.0):
    """output[n, y, x] = scale * mean over channels of the (normalised) input: N x H x W."""
    x = helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, [1, 3, h, w])
    y = helper.make_tensor_value_info("predicted_depth", TensorProto.FLOAT, [1, h, w])
    k = numpy_helper.from_array(np.array(scale, np.float32), "k")
    nodes = [helper.make_node("ReduceMean", ["pixel_values"], ["m"], axes=[1], keepdims=0),
             helper.make_node("Mul", ["m", "k"], ["predicted_depth"])]
    g = helper.make_graph(nodes, "mean", [x], [y], initializer=[k])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def red_conv_graph(path):
    """A 1x1 Conv with fixed weights (1, 0, 0): output = the normalised red channel, N x 1 x H x W."""
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "H", "W"])
    y = helper.make_tensor_value_info("depth", TensorProto.FLOAT, [1, 1, "H", "W"])
    wt = numpy_helper.from_array(np.array([1, 0, 0], np.float32).reshape(1, 3, 1, 1), "w")
    g = helper.make_graph([helper.make_node("Conv", ["image", "w"], ["depth"])], "red", [x], [y], initializer=[wt])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def sidecar(model_path, **fields):
    p = model_path.with_suffix(".json")
    p.write_text(json.dumps(fields))
    return p


def corner_photo(h=300, w=450):
    """Dark photo with a bright top-left block: asymmetric in both axes."""
    img = np.full((h, w, 3), 20, np.uint8)
    img[: h // 3, : w // 3] = 235
    return img


def expected_mean_value(rgb, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    v = np.asarray(rgb, np.float64) / 255.0
    return float(np.mean((v - np.asarray(mean)) / np.asarray(std)))


@pytest.fixture
def dyn_model(tmp_path):
    return mean_graph(tmp_path / "dyn.onnx")


# -- pure pre-processing -------------------------------------------------------------------------
@pytest.mark.parametrize("hw", [(200, 300), (300, 200), (480, 640), (1000, 1000), (97, 1500), (3000, 4000)])
def test_target_size_keeps_aspect_in_multiples_of_14(hw):
    from depthcraft.tasks.lib.models import REGISTRY

    da = REGISTRY["depth-anything-v2-small"]
    h, w = hw
    th, tw = target_size(h, w, da)
    assert th % 14 == 0 and tw % 14 == 0
    ratio_in, ratio_out = w / h, tw / th
    # Rounding each side to 14 px moves the aspect by at most half a step per side.
    assert abs(ratio_out - ratio_in) <= ratio_in * (7 / min(th, tw) + 7 / max(th, tw)) + 1e-9
    if max(h, w) / min(h, w) <= 4:
        assert min(th, tw) == 518  # lower_bound: the short side reaches the input size
    else:
        assert max(th, tw) <= 4 * 518  # elongated photos are capped


def test_target_size_fixed_and_square():
    from depthcraft.tasks.lib.models import REGISTRY

    midas = REGISTRY["midas-v2.1-small"]
    assert target_size(300, 500, midas) == (256, 256)  # keep_aspect False: the square input
    da = REGISTRY["depth-anything-v2-small"]
    assert target_size(300, 500, da, fixed=(28, 28)) == (28, 28)
    th, tw = target_size(300, 600, da, fixed=(140, None))
    assert th == 140 and tw == 280


def test_preprocess_normalises_and_orders_channels():
    from depthcraft.tasks.lib.models import REGISTRY

    da = REGISTRY["depth-anything-v2-small"]
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    x = preprocess(rgb, (28, 42), da)
    assert x.shape == (1, 3, 28, 42) and x.dtype == np.float32
    for c, v in enumerate((200, 100, 50)):
        assert np.allclose(x[0, c], (v / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c], atol=1e-5)


def test_squeeze_output_shapes():
    assert squeeze_output(np.zeros((1, 5, 7))).shape == (5, 7)
    assert squeeze_output(np.zeros((1, 1, 5, 7))).shape == (5, 7)
    assert squeeze_output(np.zeros((5, 7))).shape == (5, 7)
    with pytest.raises(InputError):
        squeeze_output(np.zeros((1, 2, 5, 7)))


def test_execution_provider_choice():
    avail = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_execution_providers(avail) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_execution_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_execution_providers(["DmlExecutionProvider", "CoreMLExecutionProvider", "CPUExecutionProvider"]) \
        == ["CoreMLExecutionProvider", "DmlExecutionProvider", "CPUExecutionProvider"]
    assert choose_execution_providers(avail, "cpu") == ["CPUExecutionProvider"]


# -- the provider on tiny graphs -----------------------------------------------------------------
def test_dynamic_model_input_is_multiple_of_14_and_keeps_aspect(dyn_model):
    prov = get_provider(f"onnx:{dyn_model}")
    assert isinstance(prov, OnnxProvider)
    photo = corner_photo(300, 450)
    dm = prov.estimate(DepthRequest(image=photo))
    tw, th = map(int, dm.meta["model_input"].split("x"))
    # 300 x 450: the short side goes to 518, the long one to 777 = 55.5 x 14, which rounds to 56 x 14.
    assert (th, tw) == (518, 784)
    assert th % 14 == 0 and tw % 14 == 0
    assert abs(tw / th - 450 / 300) < 0.02
    assert dm.shape == (300, 450)  # upsampled back to the photo


def test_output_orientation_not_flipped_or_transposed(dyn_model):
    photo = corner_photo(300, 450)
    dm = OnnxProvider(str(dyn_model)).estimate(DepthRequest(image=photo))
    assert dm.kind == "relative_inverse"
    d = dm.data
    assert d.min() >= 0 and d.max() <= 1
    # The bright block (top-left third) is "near" for this graph; every other corner is not.
    assert d[20, 20] > 0.9
    assert d[20, -20] < 0.1 and d[-20, 20] < 0.1 and d[-20, -20] < 0.1
    # The block's edges land where the photo's are (within a couple of pixels after upsampling).
    row = d[50]
    edge = int(np.argmax(row < 0.5))
    assert abs(edge - 150) <= 3
    col = d[:, 50]
    assert abs(int(np.argmax(col < 0.5)) - 100) <= 3


def test_normalisation_is_applied_metric_keeps_values(tmp_path):
    model = mean_graph(tmp_path / "m.onnx")
    sidecar(model, output="metric", max_depth_m=20)
    rgb = (250, 240, 230)
    photo = np.empty((120, 160, 3), np.uint8)
    photo[:] = rgb
    dm = OnnxProvider(str(model)).estimate(DepthRequest(image=photo, output="metric"))
    assert dm.kind == "metric"
    assert np.allclose(dm.data, expected_mean_value(rgb), atol=1e-3)
    # The sidecar's own normalisation replaces ImageNet's.
    sidecar(model, output="metric", mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    dm2 = OnnxProvider(str(model)).estimate(DepthRequest(image=photo, output="metric"))
    assert np.allclose(dm2.data, expected_mean_value(rgb, (0.5,) * 3, (0.25,) * 3), atol=1e-3)
    assert not np.allclose(dm.data.mean(), dm2.data.mean(), atol=0.05)


def test_metric_output_keeps_meters_and_relative_request_normalises(tmp_path):
    model = mean_graph(tmp_path / "meters.onnx", scale=2.0)
    sidecar(model, output="metric", mean=[0, 0, 0], std=[1, 1, 1])  # output = 2 * mean(x/255) meters
    photo = np.zeros((100, 140, 3), np.uint8)
    photo[:, :70] = 255  # left half 2 m, right half ~0 -> clipped at 1 mm
    photo[:, 70:] = 51  # right half 0.4 m
    dm = OnnxProvider(str(model)).estimate(DepthRequest(image=photo, output="metric"))
    assert dm.kind == "metric"
    assert abs(float(dm.data[50, 10]) - 2.0) < 1e-3
    assert abs(float(dm.data[50, -10]) - 0.4) < 1e-3
    rel = OnnxProvider(str(model)).estimate(DepthRequest(image=photo, output="relative"))
    assert rel.kind == "relative_inverse"
    # 0.4 m is nearer than 2 m (not exactly 1: bicubic enlarging rings a little below 0.4 m at the edge).
    assert rel.data[50, 10] < 0.01 and rel.data[50, -10] > 0.8


def test_relative_model_refuses_metric_request(dyn_model):
    with pytest.raises(ParameterError, match="relative depth"):
        OnnxProvider(str(dyn_model)).estimate(DepthRequest(image=corner_photo(), output="metric"))


def test_fixed_28x28_model_gets_exactly_its_shape(tmp_path):
    model = mean_graph(tmp_path / "fixed.onnx", h=28, w=28)
    photo = corner_photo(210, 350)
    dm = OnnxProvider(str(model)).estimate(DepthRequest(image=photo))
    assert dm.meta["model_input"] == "28x28"
    assert dm.shape == (210, 350)
    assert dm.data[10, 10] > 0.8 and dm.data[-10, -10] < 0.2 and dm.data[10, -10] < 0.2


def test_channel_order_rgb_and_nchw1_output(tmp_path):
    model = red_conv_graph(tmp_path / "red.onnx")
    photo = np.zeros((100, 200, 3), np.uint8)
    photo[:, :100, 0] = 255  # left: red
    photo[:, 100:, 2] = 255  # right: blue
    dm = OnnxProvider(str(model)).estimate(DepthRequest(image=photo))
    assert dm.data[50, 20] > 0.95 and dm.data[50, 180] < 0.05
    sidecar(model, channel_order="bgr")
    dm_bgr = OnnxProvider(str(model)).estimate(DepthRequest(image=photo))
    assert dm_bgr.data[50, 20] < 0.05 and dm_bgr.data[50, 180] > 0.95


def test_local_model_defaults_are_reported(dyn_model):
    info = local_model(dyn_model)
    assert set(info.defaults_used) >= {"output", "input_size", "mean", "std"}
    dm = OnnxProvider(str(dyn_model)).estimate(DepthRequest(image=corner_photo(140, 140)))
    assert "input_size" in dm.meta["defaults_used"]
    sidecar(dyn_model, input_size=28, multiple_of=14)
    info2 = local_model(dyn_model)
    assert "input_size" not in info2.defaults_used
    dm2 = OnnxProvider(str(dyn_model)).estimate(DepthRequest(image=corner_photo(140, 280)))
    assert dm2.meta["model_input"] == "56x28"


def test_bad_sidecar_and_missing_file_name_the_file(tmp_path, dyn_model):
    sidecar(dyn_model, output="furlongs")
    with pytest.raises(InputError, match=r"dyn\.json"):
        OnnxProvider(str(dyn_model))
    sidecar(dyn_model, colour="blue")
    with pytest.raises(InputError, match="unknown keys"):
        OnnxProvider(str(dyn_model))
    with pytest.raises(InputError, match="no such model file"):
        OnnxProvider(str(tmp_path / "absent.onnx"))
    bad = tmp_path / "junk.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(InputError, match="is not an ONNX model"):
        OnnxProvider(str(bad)).estimate(DepthRequest(image=corner_photo()))


def test_identity_is_the_file_hash_and_follows_changes(tmp_path):
    model = mean_graph(tmp_path / "id.onnx")
    prov = OnnxProvider(str(model))
    ident = prov.identity()
    assert ident["provider"] == "onnx" and ident["model"] == "id"
    assert ident["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert prov.identity() == ident  # stable
    mean_graph(model, scale=3.0)  # new weights in the same place
    st = os.stat(model)
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    ident2 = OnnxProvider(str(model)).identity()
    assert ident2["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest() != ident["sha256"]
    # Moving the file does not change what it is.
    moved = tmp_path / "sub" / "id.onnx"
    moved.parent.mkdir()
    moved.write_bytes(model.read_bytes())
    assert OnnxProvider(str(moved)).identity() == ident2


# -- upsampling ----------------------------------------------------------------------------------
def _edge_case():
    H, W, x0 = 240, 360, 181  # the edge is not on the low-resolution grid
    truth = np.ones((H, W), np.float32)
    truth[:, x0:] = 0.2
    rng = np.random.default_rng(0)
    photo = np.empty((H, W, 3), np.uint8)
    photo[:, :x0] = 200
    photo[:, x0:] = 40
    photo = np.clip(photo.astype(int) + rng.integers(-6, 7, photo.shape), 0, 255).astype(np.uint8)
    import cv2

    low = cv2.resize(truth, (36, 24), interpolation=cv2.INTER_AREA)
    return truth, photo, low, x0


def test_guided_upsampling_follows_photo_edges_better_than_bilinear():
    truth, photo, low, x0 = _edge_case()
    g = upsample(low, photo, "guided")
    b = upsample(low, photo, "bilinear")
    assert g.shape == b.shape == truth.shape
    band = slice(x0 - 12, x0 + 12)
    err_g = float(np.abs(g[:, band] - truth[:, band]).mean())
    err_b = float(np.abs(b[:, band] - truth[:, band]).mean())
    assert err_g < 0.5 * err_b
    # Far from the edge both agree with the truth; no overshoot past the input's range.
    assert np.abs(g[:, :100] - 1.0).max() < 0.05 and np.abs(g[:, 280:] - 0.2).max() < 0.05
    assert g.min() >= low.min() - 1e-6 and g.max() <= low.max() + 1e-6


def test_guided_upsampling_keeps_units_and_handles_flat_input():
    _, photo, low, _ = _edge_case()
    meters = low * 10.0 + 3.0
    g = guided_upsample(meters, photo)
    assert 3.0 - 1e-4 <= g.min() and g.max() <= 13.0 + 1e-4
    flat = guided_upsample(np.full((24, 36), 7.0, np.float32), photo)
    assert flat.shape == photo.shape[:2] and np.allclose(flat, 7.0)
    with pytest.raises(ParameterError):
        upsample(low, photo, "nearest")
