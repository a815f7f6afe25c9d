"""The ``classic`` provider: a weight-free single-image estimator, measured on real scenes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from skimage import data as skdata

from depthcraft.tasks.lib.cues import edge_cost, geodesic_popup, side_figure, vertical_ramp
from depthcraft.tasks.lib.errors import InputError
from depthcraft.tasks.lib.guided import guided_filter, guided_upsample
from depthcraft.tasks.providers import DepthRequest, get_provider
from depthcraft.tasks.providers.classic import ClassicProvider, estimate_classic

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def _ordinal_error(pred, truth, n=50000, seed=0):
    """Share of random pixel pairs with a clear true order (ratio > 1.05) that ``pred`` orders wrongly."""
    ok = np.isfinite(truth) & (truth > 0)
    p, g = pred[ok].astype(np.float64), truth[ok].astype(np.float64)
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, len(g), n), rng.integers(0, len(g), n)
    clear = (g[i] / g[j] > 1.05) | (g[i] / g[j] < 1 / 1.05)
    return float(np.mean(np.sign(p[i] - p[j])[clear] != np.sign(g[i] - g[j])[clear]))


def test_provider_contract():
    prov = get_provider("classic")
    assert isinstance(prov, ClassicProvider) and prov.name == "classic"
    assert prov.identity() == {"provider": "classic", "version": prov.identity()["version"]}
    img = skdata.astronaut()
    dm = prov.estimate(DepthRequest(image=img))
    assert dm.kind == "relative_inverse" and dm.shape == img.shape[:2] and dm.data.dtype == np.float32
    assert dm.data.min() == 0.0 and dm.data.max() == 1.0
    assert np.array_equal(prov.estimate(DepthRequest(image=img)).data, dm.data)  # deterministic


def test_no_edges_gives_the_ground_plane_ramp():
    # A featureless photo has no object: the estimate is (nearly) the plain bottom-near ramp; the
    # upper side borders are background seeds too, so only the top corners differ.
    img = np.full((120, 160, 3), 128, np.uint8)
    d = estimate_classic(img)
    assert np.all(np.diff(d[:, 80]) > 0)  # strictly nearer going down the middle
    assert np.corrcoef(d.ravel(), vertical_ramp(120, 160).ravel())[0, 1] > 0.95
    assert d[-1].min() > 0.95 and d[0].max() < 0.05


def test_an_object_standing_on_the_ground_is_near_over_its_whole_height():
    # Grey wall above a grey floor; a red box standing on the floor reaches high into the wall.
    h, w = 200, 300
    img = np.full((h, w, 3), 150, np.uint8)
    img[120:] = 110  # floor
    img[40:180, 120:180] = (200, 30, 30)  # the box, from the floor (row 180) up to row 40
    d = estimate_classic(img)
    wall_beside_top = d[50, 40]
    box_top = d[50, 150]
    assert box_top > wall_beside_top + 0.2  # the plain ramp would give them the same value
    assert d[190, 150] > d[100, 40]  # the floor in front is nearer than the wall


def test_motorcycle_beats_the_vertical_ramp():
    left, _, disp = skdata.stereo_motorcycle()
    d = estimate_classic(left)
    ramp = vertical_ramp(*d.shape)
    assert _ordinal_error(d, disp) < _ordinal_error(ramp + 1e-6, disp)


def test_bad_image_is_refused():
    with pytest.raises(InputError):
        estimate_classic(np.zeros((64, 64), np.float32))


def test_guided_filter_keeps_a_step_in_the_guide():
    guide = np.zeros((64, 64), np.float32)
    guide[:, 32:] = 1.0
    noisy = guide + np.random.default_rng(0).normal(0, 0.05, guide.shape).astype(np.float32)
    out = guided_filter(guide, noisy, r=4, eps=1e-3)
    assert abs(out[:, 30].mean() - 0.0) < 0.05 and abs(out[:, 34].mean() - 1.0) < 0.05
    assert out.std(axis=0)[[10, 50]].max() < 0.03  # noise removed inside each side
    low = np.zeros((16, 16), np.float32)
    low[:, 8:] = 1.0
    up = guided_upsample(low, guide, r=2)
    assert up.shape == guide.shape and up[:, 28].mean() < 0.2 and up[:, 36].mean() > 0.8


def test_an_object_walled_off_from_the_sides_comes_forward():
    # A backdrop that reaches the bottom border, with a floating disc in front of it: the pop-up
    # alone sees no ground contact; the side figure map brings the disc forward.
    h, w = 200, 300
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.full((h, w, 3), 140, np.uint8)
    r2 = (yy - 90) ** 2 + (xx - 150) ** 2
    disc = r2 < 40 ** 2
    img[disc] = (40, 160, 60)
    fig = side_figure(edge_cost(img))
    assert fig.dtype == np.float32 and fig.min() >= 0.0 and fig.max() <= 1.0
    assert fig[r2 < 37 ** 2].min() > 0.9 and fig[r2 > 43 ** 2].max() < 0.05  # away from the outline
    assert side_figure(edge_cost(np.full((60, 80, 3), 90, np.uint8))).max() == 0.0  # no edges, no figure
    d = estimate_classic(img)
    rows = slice(70, 110)  # the disc is nearer than the backdrop beside it at the same height
    assert np.median(d[rows, 130:170]) > np.median(d[rows, 20:60]) + 0.05


def test_geodesic_popup_is_bounded():
    d = geodesic_popup(skdata.coffee()[::4, ::4])
    assert d.dtype == np.float32 and 0.0 <= d.min() and d.max() <= 1.0


def test_shared_scenes_mean_ordinal_error_beats_the_ramp():
    root = SHARED / "data" / "stereo"
    if not root.exists():
        pytest.skip("../shared data not present")
    sys.path.insert(0, str(SHARED / "eval"))
    import dc_eval as E
    from depthcraft.tasks.lib.images import read_image

    ours, ramp = [], []
    for scene in sorted(root.glob("middlebury*")):
        meta = json.loads((scene / "scene.json").read_text())
        _, _, dl, _, _ = E.load_scene(str(scene))
        pred = estimate_classic(read_image(scene / meta["left"]).rgb)
        ours.append(E.depth_metrics(pred, dl, "disparity")["ordinal_error"])
        ramp.append(E.depth_baselines(dl)["vertical_ramp (bottom near)"]["ordinal_error"])
    assert np.mean(ours) < 0.95 * np.mean(ramp)
