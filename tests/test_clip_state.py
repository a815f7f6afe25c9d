"""State that follows a clip (the bokeh focus pull, the depth planes of ``layers``) continues
across segment boundaries (warmed up with the stabiliser) and starts over at a scene cut."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cliputil import make_clip
from depthcraft.tasks import bokeh, layers
from depthcraft.tasks.clips import process_clip_segment


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("s") / "pan.mp4", n=36, size=(192, 128), pan=3.0, audio=False)


def _frames(clip, kind, params, segments, name):
    out = []
    for a, b in segments:
        seg = process_clip_segment(kind, clip, a, b, params, clip.parent / f"{kind}-{a}-{b}-{len(segments)}",
                                   target="folder")
        folder = seg.files[name]
        out += [np.asarray(Image.open(f)) for f in sorted(folder.iterdir())]
    return out


def test_layers_planes_continue_across_a_segment_boundary(clip):
    params = {"count": 3, "feather": 0.0}
    whole = _frames(clip, "layers", params, ((0, 36),), "layer_0")
    joined = _frames(clip, "layers", params, ((0, 18), (18, 36)), "layer_0")
    assert len(whole) == len(joined) == 36
    near = lambda f: f[..., 3] > 127  # noqa: E731 - the nearest plane's alpha
    # at the boundary the planes are where the whole clip has them (not chosen anew on frame 18)
    diff = [float(np.mean(near(a) != near(b))) for a, b in zip(whole, joined)]
    assert max(diff[18:21]) < 0.03, diff[16:22]  # 0.8 % here: pixels at a threshold


def test_a_scene_cut_starts_the_planes_and_the_focus_over():
    rng = np.random.default_rng(3)
    rgb = np.zeros((64, 96, 3), np.uint8)
    a = np.clip(rng.normal(0.3, 0.1, (64, 96)), 0, 1).astype(np.float32)
    b = np.clip(rng.normal(0.8, 0.05, (64, 96)), 0, 1).astype(np.float32)
    lp = layers.LayersParams(count=2)
    state: dict = {}
    for _ in range(5):
        layers.clip_warm(rgb, a, lp, state)
    carried = layers.clip_warm(rgb, b, lp, dict(state))  # no cut: pulled towards the first shot
    fresh = layers.clip_warm(rgb, b, lp, {**state, "cut": True})
    alone = layers.clip_warm(rgb, b, lp, {})
    assert np.allclose(fresh, alone) and not np.allclose(carried, alone)
    bp = bokeh.BokehParams()
    st: dict = {}
    for _ in range(5):
        bokeh.clip_warm(rgb, a, bp, st)
    assert bokeh.clip_warm(rgb, b, bp, {**st, "cut": True}) == bokeh.clip_warm(rgb, b, bp, {})
    assert bokeh.clip_warm(rgb, b, bp, dict(st)) != bokeh.clip_warm(rgb, b, bp, {})
