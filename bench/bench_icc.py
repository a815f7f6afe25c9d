#!/usr/bin/env python3
"""What reading a photo with an embedded ICC profile costs: the same pixels read untagged,
tagged sRGB (left as they are) and tagged Display P3 / ProPhoto / grey gamma 1.8 (converted by
LittleCMS), side by side in one run (the machine's load cancels out of the ratio).

    python bench/bench_icc.py [--size 4000x3000] [--repeat 3]

Prints the best of ``--repeat`` wall times of ``images.read_image`` per file and its ratio to
the untagged file. The photo is scikit-image's ``coffee`` enlarged, written as PNG (level 1).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from skimage import data as skdata

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import iccbuild as ib  # noqa: E402

from depthcraft.tasks.lib import colour, images  # noqa: E402


def best(fn, repeat: int) -> float:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return min(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="4000x3000")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    w, h = map(int, a.size.split("x"))
    rgb = cv2.resize(skdata.coffee(), (w, h), interpolation=cv2.INTER_CUBIC)
    cases = {
        "untagged": None,
        "sRGB (kept)": colour.srgb_icc(),
        "Display P3": ib.rgb_profile("Display P3", ib.P3_PRIMARIES, ib.D65_XY, 2.2),
        "ProPhoto": ib.rgb_profile("ProPhoto", ib.PROPHOTO_PRIMARIES, ib.D50_XY, 1.8),
    }
    with tempfile.TemporaryDirectory() as d:
        rows = []
        for name, icc in cases.items():
            p = Path(d) / f"{len(rows)}.png"
            Image.fromarray(rgb).save(p, compress_level=1, **({"icc_profile": icc} if icc else {}))
            rows.append((name, best(lambda: images.read_image(p), a.repeat)))
        g = Path(d) / "g16.png"
        Image.fromarray((cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257)).save(
            g, compress_level=1, icc_profile=ib.gray_profile("Gray gamma 1.8", 1.8))
        g0 = Path(d) / "g16u.png"
        Image.fromarray((cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257)).save(g0, compress_level=1)
        grey = [("16-bit grey, untagged", best(lambda: images.read_image(g0), a.repeat)),
                ("16-bit grey, gamma 1.8", best(lambda: images.read_image(g), a.repeat))]
    print(f"read_image, {w}x{h} PNG, best of {a.repeat}")
    print(f"| {'file':24} | {'s':>6} | {'x untagged':>10} |")
    print(f"|{'-' * 26}|{'-' * 8}|{'-' * 12}|")
    for name, t in rows:
        print(f"| {name:24} | {t:6.2f} | {t / rows[0][1]:10.2f} |")
    for name, t in grey:
        print(f"| {name:24} | {t:6.2f} | {t / grey[0][1]:10.2f} |")


if __name__ == "__main__":
    main()
