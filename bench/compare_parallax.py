"""Old (the renderer at a git revision) vs current ParallaxRenderer, side by side: CPU ms per
1080p frame (one thread, alternating, medians), rendering into the encoder's yuv420p input as
`depthcraft parallax` does, and the PSNR of the new frames against the old over an orbit clip.

    python bench/compare_parallax.py [--rev main] [--frames 24] [--png DIR]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_render import sample_depth, sample_photo  # noqa: E402
from depthcraft.tasks.lib.camera import frame_times, motion_path, needed_overscan  # noqa: E402
from depthcraft.tasks.lib.video import FrameBuilder  # noqa: E402
from depthcraft.tasks.lib.viewsynth import ParallaxRenderer  # noqa: E402
from depthcraft.tasks.parallax import max_parallax  # noqa: E402


def _old_module(rev: str, name: str, replace=()):
    code = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:tasks/lib/viewsynth/{name}.py"],
                          check=True, capture_output=True, text=True).stdout
    for a, b in replace:
        code = code.replace(a, b)
    m = types.ModuleType(f"depthcraft.tasks.lib.viewsynth._{name}_old")
    m.__package__ = "depthcraft.tasks.lib.viewsynth"
    sys.modules[m.__name__] = m
    exec(compile(code, f"{rev}:{name}.py", "exec"), m.__dict__)
    return m


def old_renderer_class(rev: str):
    """ParallaxRenderer as of ``rev`` (its renderer.py and raster.py; the rest as now)."""
    _old_module(rev, "raster")
    return _old_module(rev, "renderer", [("from .raster import", "from ._raster_old import")]).ParallaxRenderer


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rev", default="main")
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--motion", default="orbit")
    ap.add_argument("--png", default=None)
    ap.add_argument("--intensity", type=float, default=0.03)
    ap.add_argument("--scene", choices=["coffee", "edges"], default="coffee",
                    help="edges: the photo over a depth map of hard steps (near discs and a bar)")
    a = ap.parse_args()
    cv2.setNumThreads(1)
    size = (1920, 1080)
    photo = sample_photo((2048, 1536))
    depth = sample_depth(photo)
    if a.scene == "edges":  # hard depth edges: where a coarser refine would show first
        depth = np.full(depth.shape, 0.1, np.float32)
        cv2.circle(depth, (700, 600), 300, 0.9, -1)
        cv2.circle(depth, (1400, 900), 200, 0.6, -1)
        depth[200:260, :] = 1.0
    path = motion_path(a.motion, width=size[0], intensity=a.intensity)
    poses = [path(x) for x in frame_times(120, True)]
    kw = dict(overscan=needed_overscan(poses, size), max_parallax=max_parallax(poses, size), edge_dilation=3, workers=1)
    old = old_renderer_class(a.rev)(photo, depth, size, **kw)
    new = ParallaxRenderer(photo, depth, size, **kw)
    pick = poses[:: max(1, len(poses) // a.frames)][: a.frames]
    # quality: RGB frames, new against old
    ps, worst = [], (99.0, 0)
    for i, q in enumerate(pick):
        fo, _ = old.render(q)
        fn, _ = new.render(q)
        p = psnr(fo, fn)
        ps.append(p)
        if p < worst[0]:
            worst = (p, i, fo, fn)
    print(f"PSNR new vs old over {len(pick)} frames: min {min(ps):.2f} dB, median {np.median(ps):.2f} dB")
    if a.png and len(worst) > 2:
        d = Path(a.png); d.mkdir(parents=True, exist_ok=True)
        fo, fn = worst[2], worst[3]
        diff = np.abs(fo.astype(np.int16) - fn.astype(np.int16)).max(axis=2)
        y, x = np.unravel_index(np.argmax(cv2.blur(diff.astype(np.float32), (31, 31))), diff.shape)
        y0, x0 = max(0, min(y - 100, 1080 - 200)), max(0, min(x - 150, 1920 - 300))
        crop = lambda f: f[y0:y0 + 200, x0:x0 + 300]
        up = lambda f: cv2.resize(f, None, fx=3, fy=3, interpolation=cv2.INTER_NEAREST)
        amp = np.clip(diff[y0:y0 + 200, x0:x0 + 300].astype(np.int32) * 8, 0, 255).astype(np.uint8)
        strip = np.hstack([up(crop(fo)), up(crop(fn)), up(cv2.cvtColor(amp, cv2.COLOR_GRAY2RGB))])
        cv2.imwrite(str(d / "crop_old_new_diffx8.png"), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))
        print(f"worst frame {worst[1]}: crop at x={x0} y={y0} -> {d / 'crop_old_new_diffx8.png'}")
    # speed: CPU ms per frame into yuv420p, alternating old/new
    t = {"old": [], "new": []}
    for q in pick * 2:
        for name, r in (("old", old), ("new", new)):
            b = FrameBuilder(size, "yuv420p")
            c0 = time.thread_time()
            r.render(q, band_sink=b.put)
            t[name].append((time.thread_time() - c0) * 1e3)
    mo, mn = np.median(t["old"]), np.median(t["new"])
    print(f"CPU ms/frame (1 thread, median of {len(t['old'])}): old {mo:.1f}  new {mn:.1f}  "
          f"({mo / mn:.2f}x; {1000 / mo:.0f} -> {1000 / mn:.0f} frames/s per core); load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
