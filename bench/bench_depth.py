#!/usr/bin/env python3
"""Speed of the ``classic`` estimator and of ``refine`` on photos of growing size (up to 12 MP).

    python bench/bench_depth.py [--sizes 1000x750,2000x1500,4000x3000] [--repeat 3]

The photo is scikit-image's ``coffee`` enlarged; the depth to refine is the classic estimate
degraded to 1/8 resolution and enlarged again (blurry edges, as in the accuracy test). Prints
the best of ``--repeat`` wall times per size; the target is 2 s at 4000x3000 on 2 cores.
"""

from __future__ import annotations

import argparse
import time

import cv2
from skimage import data as skdata

from depthcraft.tasks.lib.cues import VP_WIDTH, vanishing_layout, working_image
from depthcraft.tasks.providers.classic import estimate_classic
from depthcraft.tasks.refine import refine_depth


def best_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000x750,2000x1500,4000x3000")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    base = skdata.coffee()
    print(f"{'size':>11} {'MP':>5} {'classic s':>10} {'of which VP s':>13} {'refine s':>9}")
    for s in a.sizes.split(","):
        w, h = map(int, s.split("x"))
        img = cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC)
        est = estimate_classic(img) * 50.0
        small = cv2.resize(est, (w // 8, h // 8), interpolation=cv2.INTER_AREA)
        blurry = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        tc = best_time(lambda: estimate_classic(img), a.repeat)
        mid = working_image(img, VP_WIDTH)  # made anyway for the cue image; the VP's own cost is LSD + vote
        tv = best_time(lambda: vanishing_layout(mid), a.repeat)
        tr = best_time(lambda: refine_depth(img, blurry), a.repeat)
        print(f"{s:>11} {w * h / 1e6:5.1f} {tc:10.2f} {tv:13.3f} {tr:9.2f}")


if __name__ == "__main__":
    main()
