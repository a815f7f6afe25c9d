"""Focus stacking on a synthetic bracket made from a real photo."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from depthcraft.tasks.lib.errors import InputError, ParameterError
from depthcraft.tasks.focus_stack import align_frames, focus_measure, focus_stack, guided_filter, peak_index, stack_frames

RGB = data.astronaut()[::2, ::2].copy()  # 256 x 256
H, W = RGB.shape[:2]
REGION = np.tile(np.minimum((np.arange(W) * 3) // W, 2), (H, 1))  # three bands: near, middle, far


def bracket(n_frames=3, blur_per_step=2.0):
    """Frame k is sharp in band k and blurred more the farther a band is from k (a focus sweep)."""
    frames = []
    for k in range(n_frames):
        fr = np.zeros(RGB.shape, np.float32)
        for r in range(3):
            s = blur_per_step * abs(r - k * 2 / max(n_frames - 1, 1))
            img = RGB if s == 0 else cv2.GaussianBlur(RGB, (0, 0), s)
            fr += img.astype(np.float32) * (REGION == r)[..., None]
        frames.append(np.clip(fr + 0.5, 0, 255).astype(np.uint8))
    return frames


def mse(a):
    return float(np.mean((a.astype(np.float64) - RGB) ** 2))


def test_all_in_focus_beats_every_frame_and_depth_orders_the_regions():
    frames = bracket()
    res = stack_frames(frames, align=False)
    assert res.image.dtype == np.uint8 and res.image.shape == RGB.shape
    best_single = min(mse(f) for f in frames)
    assert mse(res.image) < 0.2 * best_single  # much closer to the sharp original than any frame
    near = [float(np.median(res.depth.data[REGION == r])) for r in range(3)]
    assert near[0] > near[1] > near[2]  # band 0 was in focus in the first (nearest) frame
    assert (np.round(res.index) == REGION).mean() > 0.85
    assert res.depth.kind == "relative_inverse" and res.depth.meta["frames"] == 3
    far_first = stack_frames(frames, align=False, order="far_first")
    assert np.allclose(far_first.depth.data, 1.0 - res.depth.data, atol=1e-6)


def test_more_frames_give_finer_depth_steps():
    res = stack_frames(bracket(5), align=False)
    med = [float(np.median(res.index[REGION == r])) for r in range(3)]
    assert med == pytest.approx([0, 2, 4], abs=0.5)


def test_alignment_undoes_focus_breathing():
    frames = bracket()
    m = np.float32([[1.01, 0, 3], [0, 1.01, -2]])  # 1 % magnification and a small shift
    frames[0] = cv2.warpAffine(frames[0], m, (W, H), borderMode=cv2.BORDER_REFLECT)
    aligned, warps = align_frames(frames)
    assert warps[1] is None  # the reference
    assert np.allclose(warps[0][:, :2], m[:, :2], atol=0.003) and np.allclose(warps[0][:, 2], m[:, 2], atol=0.3)
    assert mse(stack_frames(frames, align=True).image) < 0.2 * mse(stack_frames(frames, align=False).image)


def test_focus_measure_and_peak_interpolation():
    g = RGB[..., 1].astype(np.float32) / 255
    sharp, soft = focus_measure(g).mean(), focus_measure(cv2.GaussianBlur(g, (0, 0), 2)).mean()
    assert sharp > 2 * soft
    # a Gaussian focus curve peaking at 1.3 between frames 1 and 2 is recovered exactly
    ks = np.arange(5, dtype=np.float64)[:, None, None]
    curve = np.exp(-((ks - 1.3) ** 2) / 2) * np.ones((5, 2, 2))
    assert np.allclose(peak_index(curve), 1.3, atol=1e-5)


def test_guided_filter_keeps_edges_of_the_guide():
    guide = np.zeros((64, 64), np.float32)
    guide[:, 32:] = 1
    noisy = guide + np.random.default_rng(0).normal(0, 0.2, guide.shape).astype(np.float32)
    out = guided_filter(guide, noisy, 4, 1e-3)
    assert np.abs(out - guide).mean() < 0.3 * np.abs(noisy - guide).mean()
    assert out[:, 35:].mean() - out[:, :29].mean() > 0.9  # the step survives


def test_one_shot_from_files_and_errors(tmp_path):
    paths = []
    for i, fr in enumerate(bracket()):
        paths.append(tmp_path / f"f{i}.png")
        Image.fromarray(fr).save(paths[-1])
    image, depth = focus_stack(paths)
    assert mse(image) < 0.2 * min(mse(f) for f in bracket())
    assert depth.shape == (H, W) and depth.source == "focus_stack"
    with pytest.raises(ParameterError):
        focus_stack(paths[:1])
    Image.fromarray(RGB[:128]).save(tmp_path / "small.png")
    with pytest.raises(InputError, match="same size"):
        focus_stack([paths[0], tmp_path / "small.png"])
