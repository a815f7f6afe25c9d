"""Issue 12 §3 view-synthesis yardstick on six sets, in process (seconds, not the CLI scorer's minutes).

The right view of each source photo (``shift_view``, its true disparity) scored with the scorer's own
metric functions (``../shared/eval/dc_eval.py``) on: the 9 shared scenes, their mirror images (the
right photo flipped as the source, the flipped left photo as the truth: unseen disocclusions), and
both at half and quarter size (photos area-downsampled, disparity read at pixel f/2 of each f x f
cell and divided by f). ``synth()`` adds ``bench_synthetic_views.py``'s layered scenes.
The sets are cached in the temp folder (delete it after the shared data changes).

usage: python bench/bench_viewsynth_sets.py      (needs ../shared)
"""
import pickle
import sys
import time
from pathlib import Path
import numpy as np, cv2
REPO = Path(__file__).resolve().parent.parent; SHARED = REPO.parent / "shared"
sys.path.insert(0, str(SHARED / "eval"))
import dc_eval as E
from score_depthcraft import fill_rows

import tempfile
CACHE = Path(tempfile.gettempdir()) / "depthcraft_viewsynth_sets.pkl"

def down(img, d, f):
    h, w = d.shape; h2, w2 = h // f, w // f
    im = cv2.resize(img[:h2*f, :w2*f].astype(np.float32), (w2, h2), interpolation=cv2.INTER_AREA)
    dd = d[f//2:h2*f:f, f//2:w2*f:f] / f if d is not None else None
    return np.clip(im + 0.5, 0, 255).astype(np.uint8).astype(np.float32), dd

def load():
    if CACHE.exists():
        return pickle.load(open(CACHE, "rb"))
    sets = {k: [] for k in ("shared", "mirrored", "half", "half_m", "quarter", "quarter_m")}
    flip = lambda a: np.ascontiguousarray(a[:, ::-1])
    for scene in sorted((SHARED / "data" / "stereo").iterdir()):
        if not (scene / "scene.json").exists(): continue
        left, right, dl, dr, _ = E.load_scene(str(scene))
        if dr is None: continue
        for f, name in ((1, ""), (2, "half"), (4, "quarter")):
            if f == 1: L, R, DL, DR = left, right, dl, dr
            else:
                L, DL = down(left, dl, f); R, DR = down(right, dr, f)
            k = name or "shared"; km = (name + "_m") if name else "mirrored"
            sets[k].append((scene.name, L.astype(np.uint8), fill_rows(DL), R, DL, DR))
            sets[km].append((scene.name, flip(R).astype(np.uint8), fill_rows(flip(DR)), flip(L), flip(DR), flip(DL)))
    pickle.dump(sets, open(CACHE, "wb"))
    return sets

def run(only=None, per_scene=False):
    from depthcraft.tasks.lib.viewsynth import shift_view
    sets = load()
    res = {}
    for k, items in sets.items():
        if only and k not in only: continue
        ms = []
        for name, src, d, truth, dsrc, dtgt in items:
            pred = shift_view(src, d, direction=-1).image
            m = E.viewsynth_metrics(pred.astype(np.float32), truth, dsrc, dtgt)
            m["name"] = name; ms.append(m)
        res[k] = {q: float(np.mean([m[q] for m in ms])) for q in ("psnr", "psnr_visible", "psnr_disoccluded", "ssim")}
        res[k]["per"] = {m["name"][:22]: round(m["psnr_disoccluded"], 2) for m in ms}
    return res

def synth(n=24, blurs=(0.0, 0.7, 1.2)):
    sys.path.insert(0, str(REPO / "bench"))
    import bench_synthetic_views as B
    from depthcraft.tasks.lib.viewsynth import shift_view
    out = {}
    for b in blurs:
        ms = []
        for s in range(n):
            sc = B.scene(s, blur=b)
            left, right, dl, dr = sc[:4]
            pred = shift_view(left, dl, direction=-1).image
            ms.append(E.viewsynth_metrics(pred.astype(np.float32), right.astype(np.float32), dl, dr))
        out[b] = (float(np.mean([m["psnr_disoccluded"] for m in ms])), float(np.mean([m["psnr_visible"] for m in ms])))
    return out

def show(res):
    for k, r in res.items():
        print(f"{k:10s} dis {r['psnr_disoccluded']:.3f} all {r['psnr']:.3f} vis {r['psnr_visible']:.3f} ssim {r['ssim']:.4f}")
    ks = [k for k in res]
    print("mean dis", round(float(np.mean([res[k]['psnr_disoccluded'] for k in ks])), 3))

if __name__ == "__main__":
    t = time.time()
    r = run(per_scene=True)
    show(r)
    for k in ("shared", "mirrored"): print(k, r[k]["per"])
    print("t", time.time() - t)
