"""Temporal stability (tasks/lib/temporal.py and the clip engine): lower warp error than frame by
frame with the same depth ordering, scene cuts reset, and segments join without a jump."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cliputil import frames, make_clip
from depthcraft.tasks.clips import process_clip_segment
from depthcraft.tasks.lib.clip import probe_clip, read_depth_frames, read_frames
from depthcraft.tasks.lib.temporal import CutDetector, Stabilizer, TemporalParams


def pair_warp_errors(rgb, depth):
    """Per consecutive pair: mean |depth(t+1) warped onto t - depth(t)| in percent, on pixels that
    pass the forward-backward flow check (the yardstick of shared/eval/video_eval.py)."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    out = []
    for t in range(len(depth) - 1):
        ga, gb = (cv2.cvtColor(rgb[k], cv2.COLOR_RGB2GRAY) for k in (t, t + 1))
        h, w = ga.shape
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        fw, bw = dis.calc(ga, gb, None), dis.calc(gb, ga, None)
        samp = lambda img: cv2.remap(img, gx + fw[..., 0], gy + fw[..., 1], cv2.INTER_LINEAR,  # noqa: E731
                                     borderMode=cv2.BORDER_CONSTANT, borderValue=np.nan)
        bwa = np.stack([samp(bw[..., 0]), samp(bw[..., 1])], -1)
        ok = ((fw + bwa) ** 2).sum(-1) < 0.01 * ((fw ** 2).sum(-1) + (bwa ** 2).sum(-1)) + 0.5
        warped = samp(depth[t + 1])
        ok &= np.isfinite(warped)
        out.append(float(np.mean(np.abs(warped[ok] - depth[t][ok]))) * 100)
    return np.array(out)


def spearman(a, b):
    from scipy.stats import spearmanr

    return float(spearmanr(a.ravel()[::7], b.ravel()[::7]).statistic)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("t") / "pan.mp4", n=36, size=(192, 128), pan=1.5, audio=False)


def _depth(clip, temporal, segments=((0, 36),), warmup=12):
    out = []
    for a, b in segments:
        seg = process_clip_segment("estimate", clip, a, b, {"format": "png16", "temporal": temporal},
                                   clip.parent / f"w-{temporal}-{a}-{warmup}-{len(segments)}", target="folder",
                                   warmup=warmup)
        out += list(read_depth_frames(seg.files["main"], a, b))
    return out


def test_stable_depth_has_lower_warp_error_and_same_order(clip):
    rgb = [f.copy() for f in read_frames(clip)]
    stable, single = _depth(clip, True), _depth(clip, False)
    assert len(stable) == len(single) == len(rgb) == 36
    e_stable, e_single = pair_warp_errors(rgb, stable).mean(), pair_warp_errors(rgb, single).mean()
    agree = np.mean([spearman(a, b) for a, b in zip(stable, single)])
    assert e_stable <= 0.5 * e_single, (e_stable, e_single)
    assert agree >= 0.95, agree


def test_segments_join_without_a_jump(clip):
    rgb = [f.copy() for f in read_frames(clip)]
    joined = _depth(clip, True, segments=((0, 18), (18, 36)))
    errs = pair_warp_errors(rgb, joined)
    boundary, others = errs[17], np.delete(errs, 17)
    assert boundary <= others.max(), (boundary, others.max())
    # and the segment start is close to the frame the whole clip gives there
    whole = _depth(clip, True)
    assert float(np.abs(joined[18] - whole[18]).mean()) < 0.01


def test_without_warmup_the_boundary_can_jump(clip):
    # the warm-up is what makes the join seamless: with none the state starts over at frame 18
    joined = _depth(clip, True, segments=((0, 18), (18, 36)), warmup=0)
    whole = _depth(clip, True)
    assert float(np.abs(joined[18] - whole[18]).mean()) > float(np.abs(joined[17] - whole[17]).mean())


def test_scene_cut_resets_state(tmp_path):
    fs = list(frames(12, (128, 96), cut_at=6))
    det = CutDetector()
    cuts = [i for i, f in enumerate(fs) if det.is_cut(f) and i > 0]
    assert cuts == [6]
    st = Stabilizer(TemporalParams())
    for i, f in enumerate(fs[:7]):
        d = np.full(f.shape[:2], 0.2 if i < 6 else 0.9, np.float32)
        d[:, :10] = 0.0  # some range for the alignment
        out = st.step(f, d)
    # the first frame after the cut is what a fresh stabiliser gives: no trace of the first shot
    assert st.resets == 1 and np.array_equal(out, Stabilizer(TemporalParams()).step(fs[6], d))


def test_normalisation_pumping_is_removed():
    # the same scene estimated with a per-frame gain/offset: the output keeps one scale
    f = next(frames(1, (160, 120)))
    base = np.tile(np.linspace(0, 1, 120, dtype=np.float32)[:, None], (1, 160))
    st = Stabilizer(TemporalParams())
    outs = [st.step(f, np.clip(base * g + o, 0, 1)) for g, o in ((1.0, 0.0), (0.7, 0.2), (0.9, 0.05), (0.6, 0.3))]
    raw_spread = np.std([float((base * g + o).mean()) for g, o in ((1.0, 0.0), (0.7, 0.2), (0.9, 0.05), (0.6, 0.3))])
    out_spread = np.std([float(o.mean()) for o in outs])
    assert out_spread < 0.2 * raw_spread


def test_temporal_false_is_frame_by_frame():
    f = next(frames(1, (96, 64)))
    st = Stabilizer(TemporalParams(enabled=False))
    d = np.random.default_rng(0).random((64, 96), dtype=np.float32)
    assert np.array_equal(st.step(f, d), d) and np.array_equal(st.step(f, 1 - d), 1 - d)
