"""A recipe's ``provider_options`` reach every frame of a clip, as they reach a photo: before,
the clip engine called the provider without them (onnx ``upsample: bilinear`` was ignored on
clips, while its cache key said otherwise)."""

from __future__ import annotations

import numpy as np
import pytest

from cliputil import make_clip
from test_onnx import mean_graph

from depthcraft.tasks import clips
from depthcraft.tasks.lib.errors import ParameterError


@pytest.fixture
def clip(tmp_path):
    return make_clip(tmp_path / "c.mp4", n=6, size=(96, 64), audio=False)


@pytest.fixture
def model(tmp_path):
    return mean_graph(tmp_path / "mean.onnx")


def _nearness(clip, model, workdir, options, workers=1):
    res = clips.process_clip_segment("estimate", clip, 0, 6, {"format": "npy", "temporal": False}, workdir,
                                     target="folder", provider=f"onnx:{model}", provider_options=options,
                                     workers=workers)
    d = res.files["main"]
    return np.stack([np.load(p) for p in sorted(d.glob("*.npy"))])


@pytest.mark.parametrize("workers", [1, 2])  # 2: the frames estimated ahead in spawned processes
def test_upsample_option_changes_clip_depth_as_it_does_for_photos(clip, model, tmp_path, workers):
    guided = _nearness(clip, model, tmp_path / "g", None, workers)
    bilinear = _nearness(clip, model, tmp_path / "b", {"upsample": "bilinear"}, workers)
    assert guided.shape == bilinear.shape == (6, 64, 96)
    assert np.abs(guided - bilinear).max() > 1e-3  # the option was read
    again = _nearness(clip, model, tmp_path / "b2", {"upsample": "bilinear"})
    np.testing.assert_array_equal(bilinear, again)


def test_a_bad_option_on_a_clip_is_the_photo_error(clip, model, tmp_path):
    with pytest.raises(ParameterError, match="upsample"):
        _nearness(clip, model, tmp_path / "x", {"upsample": "nearest"})
