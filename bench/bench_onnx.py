"""The onnx provider's own cost around the model: pre-processing and upsampling, guided vs bilinear.

Runs a tiny graph (mean over channels: the model itself costs ~nothing) on photos of growing
size, so what is timed is depthcraft's resize/normalise and its return to the photo's size, and
measures how well each upsampling puts a depth edge where the photo's edge is (mean absolute
error in a 24 px band around it, depth step 1.0 -> 0.2). Side by side in one run; absolute
times are noisy on a shared machine, the ratios less so.

    python bench/bench_onnx.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from depthcraft.tasks.providers import DepthRequest  # noqa: E402
from depthcraft.tasks.providers.onnx import OnnxProvider, upsample  # noqa: E402


def tiny_model(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, [1, 3, "H", "W"])
    y = helper.make_tensor_value_info("depth", TensorProto.FLOAT, [1, "H", "W"])
    g = helper.make_graph([helper.make_node("ReduceMean", ["pixel_values"], ["depth"], axes=[1], keepdims=0)],
                          "mean", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def edge_scene(h: int, w: int):
    x0 = w // 2 + 7  # off the model's grid
    truth = np.ones((h, w), np.float32)
    truth[:, x0:] = 0.2
    photo = np.full((h, w, 3), 200, np.uint8)
    photo[:, x0:] = 40
    rng = np.random.default_rng(0)
    photo = np.clip(photo.astype(np.int16) + rng.integers(-6, 7, photo.shape, dtype=np.int16), 0, 255).astype(np.uint8)
    s = 518 / min(h, w)
    low = cv2.resize(truth, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    return truth, photo, low, x0


def timed(fn, reps=3):
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as d:
        prov = OnnxProvider(str(tiny_model(Path(d) / "tiny.onnx")))
        for (h, w) in [(768, 1024), (3000, 4000), (4000, 6000)]:
            truth, photo, low, x0 = edge_scene(h, w)
            band = slice(x0 - 12, x0 + 12)
            tb, b = timed(lambda: upsample(low, photo, "bilinear"))
            tg, g = timed(lambda: upsample(low, photo, "guided"))
            eb = float(np.abs(b[:, band] - truth[:, band]).mean())
            eg = float(np.abs(g[:, band] - truth[:, band]).mean())
            te, _ = timed(lambda: prov.estimate(DepthRequest(image=photo)), reps=2)
            rows.append((f"{w}x{h}", f"{tb * 1000:.0f}", f"{tg * 1000:.0f}", f"{eb:.4f}", f"{eg:.4f}",
                         f"{eb / max(eg, 1e-9):.1f}x", f"{te * 1000:.0f}"))
    head = ("photo", "bilinear ms", "guided ms", "edge err bilinear", "edge err guided", "err ratio",
            "estimate ms (tiny graph)")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    for r in [head] + rows:
        print("  ".join(str(c).rjust(wd) for c, wd in zip(r, widths)))


if __name__ == "__main__":
    main()
