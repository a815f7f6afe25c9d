#!/usr/bin/env python3
"""Temporal stability on a frame range of a clip, in one process (no per-command timeout), with
the shared yardstick's own metric functions (../shared/eval/video_eval.py).

  python bench/eval_temporal.py CLIP [START STOP]

Exactly what `depthcraft estimate CLIP -o DIR/ --format png16` writes with and without
`--set temporal=false` (the provider's per-frame nearness, and the default stabiliser on it, both
quantised to 16 bits), scored by video_eval.warp_error and video_eval.agreement. For clips whose
full scorer run exceeds score_depthcraft.py's 600 s per command on a loaded machine."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO.parent / "shared" / "eval"))


def main() -> None:
    import video_eval as V

    from depthcraft.tasks.clips import _prefetched, estimate_workers  # noqa: F401 (main-guarded script)
    from depthcraft.tasks.lib.clip import probe_clip, read_frames
    from depthcraft.tasks.lib.temporal import Stabilizer, TemporalParams

    clip = sys.argv[1]
    info = probe_clip(clip)
    a = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    b = int(sys.argv[3]) if len(sys.argv) > 3 else info.frames
    q = lambda x: (np.round(np.clip(x, 0, 1) * 65535) / 65535).astype(np.float32)  # noqa: E731 - png16
    t0 = time.time()
    rgb, raw, stable = [], [], []
    st = Stabilizer(TemporalParams())
    for f, est in _prefetched(read_frames(clip, a, b, info=info), "classic", "max", estimate_workers(), 4):
        rgb.append(f)
        raw.append(q(est))
        stable.append(q(st.step(f, est)))
    secs = time.time() - t0
    m, r = V.warp_error(rgb, stable), V.warp_error(rgb, raw)
    ag = V.agreement(stable, raw)
    print("| clip | frames | warp error stable | warp error frame by frame | ratio | agreement (min) | scene resets | s |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {Path(clip).name} [{a}, {b}) | {len(stable)} | {m['warp_error']:.4f} | {r['warp_error']:.4f} | "
          f"{m['warp_error'] / r['warp_error']:.3f} | {ag['agreement']:.4f} ({ag['min_frame']:.4f}) | {st.resets} | {secs:.0f} |")


if __name__ == "__main__":
    main()
