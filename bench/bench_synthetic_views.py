"""View synthesis on scenes nobody tuned for: synthetic layered stereo pairs with exact truth.

Issue 12 §3 asks for disocclusions that hold on scenes outside the shared set. Besides the
Middlebury stand-ins (mirrored, half and quarter size: ``bench_render.py``), this generates
any number of scenes: a slanted textured background (a floor-like disparity ramp) and 6 nearer
fronto-parallel shapes (discs, bars, polygons), each textured with a different scikit-image
photo at a random scale and offset; both views are rendered at 4x and area-downsampled (a box
filter: anti-aliased edges, as a camera's pixels integrate), then optionally blurred. Both
disparity maps are exact (the surface at each pixel's centre), so the scorer's masks and
metrics apply unchanged (``../shared/eval/dc_eval.py``: the right view of the left photo and
its disparity, against the right photo).

Prints the scorer's means for depthcraft (``shift_view``, the defaults ``depthcraft stereo
--scale 1`` uses) and for the scorer's own baseline (``DIBR+stretch``: DIBR with the background
stretched across each hole), per blur.

usage: bench_synthetic_views.py [--scenes 24] [--blur 0 0.7 1.2]   (needs ../shared/eval)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def _textures() -> list[np.ndarray]:
    import skimage.data as sd

    gray = [sd.camera(), sd.brick(), sd.grass(), sd.gravel(), sd.moon(), sd.text()]
    return [sd.coffee(), sd.chelsea(), sd.astronaut(), sd.rocket(), sd.immunohistochemistry(),
            *(cv2.cvtColor(g, cv2.COLOR_GRAY2RGB) for g in gray)]


def _texture(tex: np.ndarray, w: int, h: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    """A ``h x w`` crop of ``tex`` scaled by ``scale``, mirrored beyond its edges (no seams)."""
    t = cv2.resize(tex, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    py, px = max(0, h - t.shape[0]) + 1, max(0, w - t.shape[1]) + 1
    t = cv2.copyMakeBorder(t, 0, py, 0, px, cv2.BORDER_REFLECT_101)
    y0, x0 = rng.integers(0, t.shape[0] - h + 1), rng.integers(0, t.shape[1] - w + 1)
    return t[y0:y0 + h, x0:x0 + w].astype(np.float32)


def scene(seed: int, *, size=(480, 360), objects: int = 6, max_disparity: float = 40.0, blur: float = 0.0,
          textures: list[np.ndarray] | None = None, ss: int = 4):
    """(left, right, left disparity, right disparity): uint8 RGB ``H x W x 3`` and float32 px
    (the left view's surface at x is at x - d in the right view)."""
    rng = np.random.default_rng(seed)
    textures = textures or _textures()
    W, H = size
    w, h = W * ss, H * ss
    pad = int(max_disparity * ss) + 8
    cw = w + 2 * pad  # the canvas each layer lives on (wider than the view: both views see into it)
    ys = np.arange(h, dtype=np.float32)[:, None]
    far0, far1 = rng.uniform(2, 8), rng.uniform(6, 16)
    layers = [(_texture(textures[rng.integers(len(textures))], cw, h, rng.uniform(0.8, 2.0) * ss, rng),
               np.ones((h, cw), bool), (far0 + (far1 - far0) * ys / h) * ss)]
    for _ in range(objects):
        m = np.zeros((h, cw), np.uint8)
        cx, cy = int(rng.integers(pad, pad + w)), int(rng.integers(0, h))
        kind = rng.integers(3)
        if kind == 0:
            cv2.circle(m, (cx, cy), int(rng.uniform(0.04, 0.15) * w), 1, -1)
        elif kind == 1:
            bw, bh = int(rng.uniform(0.01, 0.12) * w), int(rng.uniform(0.1, 0.6) * h)
            cv2.rectangle(m, (cx, cy), (cx + bw, cy + bh), 1, -1)
        else:
            pts = (np.array([cx, cy]) + rng.normal(0, 0.08 * w, (6, 2))).astype(np.int32)
            cv2.fillPoly(m, [cv2.convexHull(pts)], 1)
        d = np.full((h, 1), rng.uniform(far1 + 3, max_disparity) * ss, np.float32)
        layers.append((_texture(textures[rng.integers(len(textures))], cw, h, rng.uniform(0.5, 1.5) * ss, rng),
                       m.astype(bool), d))
    layers.sort(key=lambda layer: float(np.mean(layer[2])))  # painter's order: far to near
    gx = np.broadcast_to(np.arange(w, dtype=np.float32)[None, :], (h, w))
    gy = np.ascontiguousarray(np.broadcast_to(ys, (h, w)))

    def render(sign: float):
        img = np.zeros((h, w, 3), np.float32)
        disp = np.zeros((h, w), np.float32)
        for tex, mask, d in layers:
            d = np.broadcast_to(d, (h, w))
            src = np.ascontiguousarray(gx + pad - sign * d / 2.0)  # each view half the disparity away
            col = cv2.remap(tex, src, gy, cv2.INTER_LINEAR)
            on = cv2.remap(mask.view(np.uint8), src, gy, cv2.INTER_NEAREST).astype(bool)
            img[on] = col[on]
            disp[on] = d[on]
        return img, disp

    out = []
    for sign in (1.0, -1.0):
        img, disp = render(sign)
        img = cv2.resize(img, (W, H), interpolation=cv2.INTER_AREA)
        if blur > 0:
            img = cv2.GaussianBlur(img, (0, 0), blur)
        out.append((np.clip(img + 0.5, 0, 255).astype(np.uint8), disp[ss // 2::ss, ss // 2::ss] / ss))
    (left, dl), (right, dr) = out
    return left, right, dl.astype(np.float32), dr.astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=24)
    ap.add_argument("--blur", type=float, nargs="+", default=[0.0, 0.7, 1.2])
    a = ap.parse_args()
    if not (SHARED / "eval" / "dc_eval.py").exists():
        raise SystemExit(f"{SHARED / 'eval'} is absent: the scorer's metrics are needed")
    sys.path.insert(0, str(SHARED / "eval"))
    import dc_eval as E  # noqa: E402
    from rich.console import Console
    from rich.table import Table

    from depthcraft.tasks.lib.viewsynth import shift_view

    keys = ("psnr_disoccluded", "psnr", "psnr_visible", "ssim")
    table = Table(title=f"view synthesis on {a.scenes} synthetic layered scenes (right view of the left photo)")
    table.add_column("blur (px)")
    table.add_column("method")
    for k in keys:
        table.add_column(k, justify="right")
    textures = _textures()
    for blur in a.blur:
        ours, base = [], []
        for seed in range(a.scenes):
            left, right, dl, dr = scene(seed, blur=blur, textures=textures)
            view = shift_view(left, dl, direction=-1).image.astype(np.float32)
            ours.append([E.viewsynth_metrics(view, right, dl, dr)[k] for k in keys])
            stretch = E.synth_dibr_stretch(left, dl).astype(np.float32)
            base.append([E.viewsynth_metrics(stretch, right, dl, dr)[k] for k in keys])
        for name, rows in (("depthcraft", ours), ("DIBR+stretch", base)):
            m = np.mean(np.asarray(rows, np.float64), 0)
            table.add_row(f"{blur:g}", name, *(f"{x:.4f}" if k == "ssim" else f"{x:.2f}" for k, x in zip(keys, m)))
    Console().print(table)


if __name__ == "__main__":
    main()
