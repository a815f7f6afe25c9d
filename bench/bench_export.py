"""Depth formats, 3D export, layers and focus stacking on a ~1 MP photo: time and size.

    .venv/bin/python bench/bench_export.py

Prints one table (times are wall seconds on this machine, noisy on a shared box; sizes in kB).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from rich.console import Console
from rich.table import Table
from skimage import data

from depthcraft.tasks.lib.depthio import read_depth
from depthcraft.tasks.lib.depthmap import DepthMap
from depthcraft.tasks.lib.formats import FORMATS, SUFFIX, MetricScale, write_format
from depthcraft.tasks.focus_stack import stack_frames
from depthcraft.tasks.layers import split_layers
from depthcraft.tasks.mesh import export_3d


def timed(fn, *a, **k):
    t = time.perf_counter()
    out = fn(*a, **k)
    return out, time.perf_counter() - t


def main() -> None:
    rgb = cv2.resize(data.astronaut(), (1216, 912), interpolation=cv2.INTER_CUBIC)  # 1.1 MP
    g = cv2.GaussianBlur(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32), (0, 0), 4) / 255
    dm = DepthMap(g, kind="relative_inverse", source="bench")
    scale = MetricScale(near=0.6, far=6.0, fov_deg=60)
    table = Table(title=f"depthcraft export bench, {rgb.shape[1]}x{rgb.shape[0]}")
    for col in ("what", "write s", "read s", "size kB", "note"):
        table.add_column(col)
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in FORMATS:
            p = Path(tmp) / f"d_{fmt}{SUFFIX[fmt]}"
            _, tw = timed(write_format, dm, fmt, p, scale=scale)
            if fmt == "preview":
                table.add_row(fmt, f"{tw:.3f}", "-", f"{p.stat().st_size / 1e3:.0f}", "colour map")
                continue
            (vals, _), tr = timed(read_depth, p)
            table.add_row(fmt, f"{tw:.3f}", f"{tr:.3f}", f"{p.stat().st_size / 1e3:.0f}", f"read back {vals.dtype}")
        for fmt in ("glb", "obj", "ply"):
            (p, info), tw = timed(export_3d, rgb, dm, Path(tmp) / f"m.{fmt}", fmt=fmt, scale=scale)
            what = f"{info.get('faces', info.get('points'))} {'faces' if 'faces' in info else 'points'}, stride {info['stride']}"
            table.add_row(f"mesh {fmt}", f"{tw:.3f}", "-", f"{p.stat().st_size / 1e3:.0f}", what)
        res, t = timed(split_layers, rgb, dm, count=4, feather=2.0)
        table.add_row("layers x4 (kmeans, feather 2)", f"{t:.3f}", "-", "-", f"fractions {np.round(res['fractions'], 2).tolist()}")
        band = np.tile(np.minimum((np.arange(rgb.shape[1]) * 4) // rgb.shape[1], 3), (rgb.shape[0], 1))
        frames = []
        for k in range(4):
            fr = sum(cv2.GaussianBlur(rgb, (0, 0), 2.5 * abs(r - k) or 0.01).astype(np.float32) * (band == r)[..., None]
                     for r in range(4))
            frames.append(np.clip(fr + 0.5, 0, 255).astype(np.uint8))
        res, t = timed(stack_frames, frames, align=True)
        mse = lambda a: float(np.mean((a.astype(np.float64) - rgb) ** 2))  # noqa: E731
        acc = float((np.round(res.index) == band).mean())
        table.add_row("focus stack x4 (aligned)", f"{t:.3f}", "-", "-",
                      f"MSE fused {mse(res.image):.1f} vs best frame {min(map(mse, frames)):.1f}; index acc {acc:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
