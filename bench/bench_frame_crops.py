"""The frame-edge rule (docs/rendering.md, fourth round, item 8) on framings other than the
yardstick's: each Middlebury pair of ../shared/data/stereo is cropped at 12 columns (the
right W/36 .. W/3 cut away, both photos alike), so objects cut by the crop continue past it,
and the right view of the cropped left photo is scored against the cropped right photo,
with the rule (``holefill.border_far``: the strip beside an object cut by the edge shows the
mean of the background behind it and its edge pixel) and without it (every row: no object at
the edge, the strip stretches the edge pixel).

Prints, per set of pixels, PSNR pooled over the pixels and the mean over cases:
- ``tail, object rows``: the run of filled pixels each row ends with (what the view invents at
  its right edge), in rows where ``border_far`` sees an object touching the edge;
- ``tail, other rows``: the same in the other rows;
- ``disoccluded``: the scorer's disoccluded pixels (``dc_eval.right_view_masks``).

usage: bench_frame_crops.py [--crops 12]   (needs ../shared beside the repository)
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crops", type=int, default=12)
    a = ap.parse_args()
    if not (SHARED / "eval" / "dc_eval.py").exists():
        raise SystemExit(f"{SHARED} is absent: nothing to measure")
    sys.path.insert(0, str(SHARED / "eval"))
    import dc_eval as E  # noqa: E402
    from score_depthcraft import fill_rows  # noqa: E402

    import depthcraft.tasks.lib.viewsynth.holefill as HF
    import depthcraft.tasks.lib.viewsynth.shift as SH
    from depthcraft.tasks.lib.viewsynth import shift_view

    rule = HF.border_far

    def no_rule(d, tau=1.0):
        return np.full(d.shape[0], np.inf, np.float32)

    sums: dict[tuple[str, bool, str], list] = {}
    for scene in sorted(glob.glob(str(SHARED / "data" / "stereo" / "*"))):
        left, right, dl, dr, meta = E.load_scene(scene)
        if dr is None:
            continue
        left = np.clip(np.rint(left), 0, 255).astype(np.uint8)
        w = dl.shape[1]
        for c in np.linspace(0, w // 3, a.crops + 1).astype(int):
            w2 = w - int(c)
            src, d = np.ascontiguousarray(left[:, :w2]), fill_rows(dl[:, :w2])
            truth, dr2 = right[:, :w2].astype(np.float64), dr[:, :w2]
            objrow = np.isfinite(rule(d))[:, None]
            _, _, dis = E.right_view_masks(dl[:, :w2], dr2)
            for name, fn in (("rule", rule), ("no rule", no_rule)):
                HF.border_far = SH.border_far = fn
                try:
                    v = shift_view(src, d, direction=-1)
                finally:
                    HF.border_far = SH.border_far = rule
                err = ((v.image - truth) ** 2).sum(2) / 3
                tail = np.flip(np.logical_and.accumulate(np.flip(v.filled, 1), 1), 1) & np.isfinite(dr2)
                for part, m in (("tail, object rows", tail & objrow), ("tail, other rows", tail & ~objrow),
                                ("disoccluded", dis)):
                    if m.any():
                        sums.setdefault((part, c == 0, name), []).append((int(m.sum()), float(err[m].sum())))

    def psnr(n, sse):
        return 10 * np.log10(255.0 ** 2 / (sse / n))

    print(f"{'pixels':18s} {'framing':22s} {'cases':>5s}   {'rule':>22s}   {'no rule':>22s}")
    for part in ("tail, object rows", "tail, other rows", "disoccluded"):
        for uncropped in (True, False):
            cells = []
            for name in ("rule", "no rule"):
                r = sums.get((part, uncropped, name), [])
                n, s = sum(x[0] for x in r), sum(x[1] for x in r)
                cells.append(f"{psnr(n, s):6.2f} pooled {np.mean([psnr(*x) for x in r]):6.2f} mean" if r else "")
            cases = len(sums.get((part, uncropped, "rule"), []))
            print(f"{part:18s} {'as photographed' if uncropped else f'{a.crops} crops per scene':22s} {cases:5d}   "
                  f"{cells[0]:>22s}   {cells[1]:>22s}")


if __name__ == "__main__":
    main()
