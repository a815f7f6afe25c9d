"""Rendering benchmarks for issues 3 and 12 (view synthesis, stereo, parallax, bokeh); prints a table.

    python bench/bench_render.py            # everything (the 4K memory run takes a few minutes)
    python bench/bench_render.py --quick    # skip the 4K run
    python bench/bench_render.py --only parallax   # just the 1080p parallax ratio and rendering speed

Ratios are measured side by side in one run (the machine is shared, absolute times are noisy);
each timing is taken three times (``--repeat``) and the median counts:

- parallax: total time of ``depthcraft parallax`` (1920x1080, 4 s at 30 fps, H.264 defaults,
  from a ~3 MP photo with its depth file) over the time the same ffmpeg takes to re-encode that
  output with the same settings (the encoder is the floor); target <= 1.5;
- rendering alone: frames per second of the renderer with no encoder (frames made as the command
  makes them, converted for the encoder, one per thread); target >= 60 (issue 12; issue 3 had 30);
- stereo pair (also with sharp depth jumps) and bokeh on a 12 MP (4000x3000) photo, depth
  normalisation included; targets <= 2 s (issue 12) and <= 3 s;
- 4K (3840x2160) 10 s parallax: peak memory of the whole command, the depthcraft process and the
  ffmpeg it streams to, sampled together (what a user's machine must hold); target < 1.5 GB;
- the Middlebury view-synthesis yardstick (when ../shared is present).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO))

from depthcraft.tasks import bokeh as B  # noqa: E402
from depthcraft.tasks import stereo as S  # noqa: E402
from depthcraft.tasks.lib.depthmap import DepthMap, normalized_nearness  # noqa: E402
from depthcraft.tasks.parallax import ParallaxParams, max_parallax, rendered_frames  # noqa: E402
from depthcraft.tasks.lib.camera import frame_times, motion_path, needed_overscan  # noqa: E402
from depthcraft.tasks.lib.video import reencode_command  # noqa: E402
from depthcraft.tasks.lib.viewsynth import ParallaxRenderer, threads  # noqa: E402

DEPTHCRAFT = [sys.executable, "-m", "depthcraft.flows.cli"]


def sample_photo(size: tuple[int, int]) -> np.ndarray:
    import skimage.data as sd

    return cv2.resize(sd.coffee(), size, interpolation=cv2.INTER_CUBIC)


def sample_depth(img: np.ndarray) -> np.ndarray:
    """A depth map with real structure: the classic provider's estimate at 1 MP, resized."""
    from depthcraft.tasks.providers import DepthRequest, get_provider

    h, w = img.shape[:2]
    f = min(1.0, (1_000_000 / (w * h)) ** 0.5)
    small = cv2.resize(img, (int(w * f), int(h * f)), interpolation=cv2.INTER_AREA)
    dm = get_provider("classic").estimate(DepthRequest(image=small, image_path="bench"))
    return cv2.resize(normalized_nearness(dm), (w, h), interpolation=cv2.INTER_LINEAR)


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds, and CPU seconds of the command and its children (ffmpeg) together."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{r.stderr[-800:]}")
    ru2 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (ru2.ru_utime - ru.ru_utime) + (ru2.ru_stime - ru.ru_stime)


def seconds(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def peak_memory(cmd: list[str]) -> tuple[float, int, int, int]:
    """Seconds, and the peak resident memory of the whole process tree (sampled together every
    50 ms), with the command's and its children's (ffmpeg) shares at that moment."""
    import psutil

    proc = psutil.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = own = enc = 0
    t = time.perf_counter()
    while proc.poll() is None:
        try:
            tree = [proc] + proc.children(recursive=True)
            mem = {p.pid: p.memory_info().rss for p in tree}
        except psutil.Error:  # a process ended between listing and reading: sample again
            continue
        total = sum(mem.values())
        if total > peak:
            peak, own, enc = total, mem[proc.pid], total - mem[proc.pid]
        time.sleep(0.05)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr.read()[-800:]}")
    return time.perf_counter() - t, peak, own, enc


def viewsynth_yardstick() -> dict | None:
    ev = SHARED / "eval"
    if not (ev / "dc_eval.py").exists():
        return None
    sys.path.insert(0, str(ev))
    import dc_eval as E
    from score_depthcraft import fill_rows

    from depthcraft.tasks.lib.viewsynth import shift_view

    keys = ("psnr", "psnr_visible", "psnr_disoccluded", "ssim")
    rows, mirrored = [], []
    for scene in sorted((SHARED / "data" / "stereo").iterdir()):
        if not (scene / "scene.json").exists():
            continue
        left, right, dl, dr, _ = E.load_scene(str(scene))
        if dr is None:
            continue
        pred = shift_view(left.astype(np.uint8), fill_rows(dl), direction=-1).image
        rows.append(E.viewsynth_metrics(pred.astype(np.float32), right, dl, dr))
        # the stand-in for scenes we do not have: the pair mirrored (the right photo, flipped,
        # is the source; the flipped left photo the truth): disocclusions never tuned on
        flip = lambda a: np.ascontiguousarray(a[:, ::-1])  # noqa: E731
        pred = shift_view(flip(right).astype(np.uint8), fill_rows(flip(dr)), direction=-1).image
        mirrored.append(E.viewsynth_metrics(pred.astype(np.float32), flip(left), flip(dr), flip(dl)))
    return ({k: float(np.mean([r[k] for r in rows])) for k in keys} | {"scenes": len(rows)}
            | {"mirrored_disoccluded": float(np.mean([r["psnr_disoccluded"] for r in mirrored]))})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="skip the 4K memory run")
    ap.add_argument("--repeat", type=int, default=3, help="timings taken this many times; the median counts")
    ap.add_argument("--only", choices=["parallax"], help="run only this part (parallax: the 1080p ratio and "
                    "rendering speed)")
    a = ap.parse_args()
    rows: list[tuple[str, str, str, str]] = []

    def row(name, value, target, ok):
        rows.append((name, value, target, "yes" if ok else "NO"))
        print(f"  {name}: {value} (target {target})", flush=True)

    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        # -- parallax: command vs ffmpeg re-encode --------------------------------------------
        photo = sample_photo((2048, 1536))
        depth = sample_depth(photo)
        cv2.imwrite(str(tmp / "photo.jpg"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 93])
        np.save(tmp / "depth.npy", depth)
        out = tmp / "parallax.mp4"
        p = ParallaxParams()
        pairs = []  # (command, re-encode) taken back to back, three times: the median pair counts
        for _ in range(a.repeat):
            t_cmd, c_cmd = timed(DEPTHCRAFT + ["parallax", str(tmp / "photo.jpg"), "--depth", str(tmp / "depth.npy"),
                                        "-o", str(out), "--duration", "4", "--fps", "30", "--size", "1920x1080"])
            t_ff, c_ff = timed(reencode_command(out, tmp / "re.mp4", "mp4", crf=p.crf, preset=p.preset,
                                                pix_fmt=p.pix_fmt, size=(1920, 1080)))
            pairs.append((t_cmd / t_ff, t_cmd, t_ff, c_cmd, c_ff))
        ratio, t_cmd, t_ff, c_cmd, c_ff = sorted(pairs)[len(pairs) // 2]
        every = ", ".join(f"{x[0]:.2f}" for x in pairs)
        row("parallax 1080p 4 s: command / ffmpeg re-encode", f"{t_cmd:.1f} s / {t_ff:.1f} s = {ratio:.2f}x "
            f"(median of {every}; CPU {c_cmd:.1f} s / {c_ff:.1f} s)", "<= 1.5x", ratio <= 1.5)

        # -- rendering alone -------------------------------------------------------------------
        size = (1920, 1080)
        path = motion_path("orbit", width=size[0])
        poses = [path(x) for x in frame_times(120, True)]
        r = ParallaxRenderer(photo, depth, size, overscan=needed_overscan(poses, size),
                             max_parallax=max_parallax(poses, size), edge_dilation=3, workers=1)

        cv_threads = cv2.getNumThreads()
        cv2.setNumThreads(1)  # as in render_video: one frame per worker
        # as `depthcraft parallax` renders: into the encoder's input format (forked worker
        # processes on Linux, else threads), without the encoder
        def fps_of(fork: str) -> float:
            os.environ["DEPTHCRAFT_FORK"] = fork
            t0 = time.perf_counter()
            for _ in rendered_frames(r, poses, size, "yuv420p", workers=threads()):
                pass
            return len(poses) / (time.perf_counter() - t0)

        # the default (forked processes where available) and threads, alternated; medians
        fork_env = os.environ.get("DEPTHCRAFT_FORK")
        runs = [(fps_of("1"), fps_of("0")) for _ in range(a.repeat)]
        if fork_env is None:
            os.environ.pop("DEPTHCRAFT_FORK", None)
        else:
            os.environ["DEPTHCRAFT_FORK"] = fork_env
        cv2.setNumThreads(cv_threads)
        fps = sorted(x for x, _ in runs)[len(runs) // 2]
        fps_threads = sorted(y for _, y in runs)[len(runs) // 2]
        row("parallax rendering alone, 1080p", f"{fps:.0f} frames/s (median of {', '.join(f'{x:.0f}' for x, _ in runs)})",
            ">= 60", fps >= 60)
        row("  the same on threads (DEPTHCRAFT_FORK=0)", f"{fps_threads:.0f} frames/s", "", True)

        if a.only is None:  # (--only parallax stops here)
            # -- 12 MP stereo pair and bokeh -------------------------------------------------
            big = sample_photo((4000, 3000))
            bdepth = sample_depth(big)
            dm = DepthMap(bdepth, "relative_inverse")

            def stereo():
                ld, rd, _ = S.eye_disparities(dm, divergence=2.0, convergence=0.5, scale=None, width=4000)
                S.render_pair(big, ld, rd, edge_dilation=round(4000 / 600))

            # the same photo with sharp depth jumps (near blocks in front of the estimate): a
            # wide band of hidden background to fill (about a sixth of the photo)
            jumps = bdepth.copy()
            for y0, x0 in ((400, 300), (1500, 1200), (700, 2600), (1900, 3100)):
                jumps[y0:y0 + 700, x0:x0 + 500] = float(bdepth.max()) * 1.5
            jdm = DepthMap(jumps, "relative_inverse")

            def stereo_jumps():
                ld, rd, _ = S.eye_disparities(jdm, divergence=2.0, convergence=0.5, scale=None, width=4000)
                S.render_pair(big, ld, rd, edge_dilation=round(4000 / 600))

            def bokeh():
                B.render_bokeh(big, normalized_nearness(dm), focus=B.focus_value(bdepth, "nearest"), max_radius=0.015 * 4000)

            for name, fn, limit in (("stereo pair, 12 MP", stereo, 2.0), ("stereo pair, 12 MP, depth jumps", stereo_jumps, 2.0),
                                    ("bokeh, 12 MP", bokeh, 3.0)):
                times = sorted(seconds(fn) for _ in range(a.repeat))
                med = times[len(times) // 2]
                row(name, f"{med:.2f} s (median of {', '.join(f'{x:.2f}' for x in times)})", f"<= {limit:.0f} s", med <= limit)

            # -- 4K memory -------------------------------------------------------------------
            if not a.quick:
                secs, peak, own, enc = peak_memory(DEPTHCRAFT + ["parallax", str(tmp / "photo.jpg"), "--depth",
                                                                 str(tmp / "depth.npy"), "-o", str(tmp / "4k.mp4"),
                                                                 "--duration", "10", "--fps", "30", "--size", "3840x2160"])
                row("parallax 4K 10 s: peak memory, command + ffmpeg", f"{peak / 2**30:.2f} GB "
                    f"(ours {own / 2**30:.2f} + ffmpeg {enc / 2**30:.2f}; {secs:.0f} s)", "< 1.5 GB", peak < 1.5 * 2**30)

    ys = viewsynth_yardstick() if a.only is None else None
    if ys:
        # issue 12 targets (visible: not lower than before issue 12, 32.64 dB). Measured: all 30.52 dB
        # (was 30.31), visible 32.931 (32.701), disoccluded 21.61 (21.38), mirrored 20.96 (20.68),
        # SSIM 0.9489 (0.9465)
        row(f"view synthesis PSNR all ({ys['scenes']} Middlebury scenes)", f"{ys['psnr']:.2f} dB", ">= 30.0", ys["psnr"] >= 30.0)
        row("view synthesis PSNR visible", f"{ys['psnr_visible']:.2f} dB", ">= 32.64", ys["psnr_visible"] >= 32.64)
        row("view synthesis PSNR disoccluded", f"{ys['psnr_disoccluded']:.2f} dB", ">= 21.0", ys["psnr_disoccluded"] >= 21.0)
        row("  the same, scenes mirrored (unseen stand-in)", f"{ys['mirrored_disoccluded']:.2f} dB", ">= 21.0",
            ys["mirrored_disoccluded"] >= 21.0)
        row("view synthesis SSIM", f"{ys['ssim']:.3f}", ">= 0.940", ys["ssim"] >= 0.940)

    try:
        from rich.console import Console
        from rich.table import Table

        tab = Table(title=f"depthcraft rendering ({os.cpu_count()} cores)")
        for c in ("measure", "value", "target", "met"):
            tab.add_column(c)
        for r_ in rows:
            tab.add_row(*r_)
        Console().print(tab)
    except ImportError:
        for r_ in rows:
            print(" | ".join(r_))


if __name__ == "__main__":
    main()
