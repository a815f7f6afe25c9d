"""Hostile cases of the stereo fill's row lean (tasks/lib/viewsynth/shift.py: _row_lean, _unmixed)."""
import cv2
import numpy as np
import pytest

from depthcraft.tasks.lib.viewsynth import shift_view


def _occluder_bias(sigma: float, noise: float = 3.0, seed: int = 0, **kw) -> float:
    """Mean fill (uint8 levels) behind a white occluder minus behind a black one: a 40 px wide
    near bar (disparity 14) over a textured grey background (disparity 2), its edges blurred
    by a Gaussian of ``sigma`` px (0: sharp), the right view."""
    h, w = 80, 160
    rng = np.random.default_rng(seed)
    bg = np.full((h, w, 3), 110, np.float32) + rng.normal(0, noise, (h, w, 1)) + rng.normal(0, noise / 2, (h, w, 3))
    m = np.zeros((h, w), np.float32)
    m[:, 50:90] = 1
    mb = (cv2.GaussianBlur(m, (0, 0), sigma) if sigma else m)[..., None]
    d = np.full((h, w), 2, np.float32)
    d[:, 50:90] = 14
    means = []
    for occ in (255.0, 0.0):
        img = np.clip(bg * (1 - mb) + occ * mb + 0.5, 0, 255).astype(np.uint8)
        v = shift_view(img, d, direction=-1, **kw)
        means.append(v.image[v.filled].astype(np.float64).mean())
    return means[0] - means[1]


@pytest.mark.parametrize("sigma", [0.0, 0.5])
def test_row_lean_does_not_take_the_occluders_colour_on_a_soft_edge(sigma):
    # a camera's edge (Gaussian sigma 0.5 px) leaves the first background pixel ~16 % occluder:
    # _unmixed's ramp (0.05 .. 0.25 before) kept 45 % of that pixel, and the lean carried the
    # occluder into the fill (white - black 1.98 levels; 0.08 without the lean)
    assert abs(_occluder_bias(sigma)) < 0.5
    assert abs(_occluder_bias(sigma)) <= abs(_occluder_bias(sigma, row_lean=0.0)) + 0.3


@pytest.mark.parametrize("shape", [(48, 64), (48, 64, 4), (48, 64, 1), (48, 64, 3, 1)])
def test_shift_view_refuses_an_image_that_is_not_rgb_in_one_clear_error(shape):
    """Grey or RGBA arrays given to the library were a numpy broadcast error from deep inside
    the background layer (found by a hostile review); now one ParameterError naming the shape."""
    from depthcraft.tasks.lib.errors import ParameterError

    d = np.zeros((48, 64), np.float32)
    d[:, 20:30] = 8.0
    with pytest.raises(ParameterError, match=r"H x W x 3; got shape"):
        shift_view(np.zeros(shape, np.uint8), d)
