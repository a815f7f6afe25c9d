"""Frames/s of 1080p parallax rendering as bench_render.py measures it (ordered_map over all
cores, one frame per thread, into yuv420p), old renderer (git revision) vs current, in
alternating rounds; medians. python bench/compare_parallax_fps.py [--rev main] [--rounds 4]"""
import argparse
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from bench_render import sample_depth, sample_photo  # noqa: E402
from compare_parallax import old_renderer_class  # noqa: E402
from depthcraft.tasks.lib.camera import frame_times, motion_path, needed_overscan  # noqa: E402
from depthcraft.tasks.lib.video import FrameBuilder, ordered_map  # noqa: E402
from depthcraft.tasks.lib.viewsynth import ParallaxRenderer, threads  # noqa: E402
from depthcraft.tasks.parallax import max_parallax  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--rev", default="main")
ap.add_argument("--rounds", type=int, default=4)
a = ap.parse_args()
size = (1920, 1080)
photo = sample_photo((2048, 1536))
depth = sample_depth(photo)
path = motion_path("orbit", width=size[0])
poses = [path(x) for x in frame_times(120, True)]
kw = dict(overscan=needed_overscan(poses, size), max_parallax=max_parallax(poses, size), edge_dilation=3, workers=1)
rs = {"old": old_renderer_class(a.rev)(photo, depth, size, **kw), "new": ParallaxRenderer(photo, depth, size, **kw)}
cv2.setNumThreads(1)
fps = {"old": [], "new": []}
cpu = {"old": [], "new": []}
for _ in range(a.rounds):
    for name, r in rs.items():
        def frame(q):
            b = FrameBuilder(size, "yuv420p")
            r.render(q, band_sink=b.put)
            return b
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in ordered_map(frame, poses, workers=threads()):
            pass
        fps[name].append(len(poses) / (time.perf_counter() - t0))
        cpu[name].append((time.process_time() - c0) / len(poses) * 1e3)
print(f"frames/s ({threads()} threads, median of {a.rounds}): old {np.median(fps['old']):.1f}  new {np.median(fps['new']):.1f}; "
      f"CPU ms/frame old {np.median(cpu['old']):.1f}  new {np.median(cpu['new']):.1f}; load {os.getloadavg()}")
