#!/usr/bin/env python3
"""Clip engine figures (prints a table): 2D-to-3D speed against a plain re-encode, and memory on a
long 1080p clip.

  python bench/bench_video_engine.py stereo [--clip CLIP]   # default: the shared 720p clip
  python bench/bench_video_engine.py memory [--minutes 10] [--frames N]

stereo: `depthcraft stereo CLIP -o out.mp4 --layout hsbs` wall time, then in the same run an ffmpeg
re-encode of its own output with the same encoder settings (libx264, preset medium, CRF 18,
yuv420p); the ratio is the target (<= 2.0).
memory: makes a long 1080p clip (the shared clip looped and scaled, or a bundled photo panned;
under a temporary folder, never in the repository), runs `depthcraft stereo` on it and samples
the resident memory of depthcraft and all its ffmpeg children together twice a second: the peak,
and the peak of each quarter of the run (constant memory = flat quarters). ``--frames`` stops
after that many frames (the clip stays 10 minutes long: the decoder and muxer see the whole file).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_CLIP = REPO.parent / "shared" / "data" / "video" / "big_buck_bunny_0_30.webm"
DEPTHCRAFT = [sys.executable, "-m", "depthcraft.flows.cli"]


def ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (Linux /proc)."""
    total, todo = 0, [pid]
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
        todo += children.get(p, [])
    return total


def run_sampled(cmd: list[str]) -> tuple[float, list[tuple[float, int]], subprocess.CompletedProcess]:
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples: list[tuple[float, int]] = []

    def sample():
        while p.poll() is None:
            samples.append((time.time() - t0, tree_rss(p.pid)))
            time.sleep(0.5)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, err = p.communicate()
    th.join()
    return time.time() - t0, samples, subprocess.CompletedProcess(cmd, p.returncode, out, err)


def bench_stereo(clip: Path) -> None:
    with tempfile.TemporaryDirectory() as t:
        out = Path(t) / "out.mp4"
        secs, samples, r = run_sampled([*DEPTHCRAFT, "stereo", str(clip), "-o", str(out), "--layout", "hsbs"])
        if r.returncode:
            raise SystemExit(r.stderr)
        made = next(Path(t).glob("out*.mp4"))
        t0 = time.time()
        subprocess.run([ffmpeg(), "-y", "-loglevel", "error", "-i", str(made), "-an", "-c:v", "libx264", "-preset",
                        "medium", "-crf", "18", "-pix_fmt", "yuv420p", str(Path(t) / "re.mp4")], check=True)
        enc = time.time() - t0
    peak = max((s for _, s in samples), default=0)
    print(f"| clip | frames out | depthcraft stereo hsbs s | ffmpeg re-encode s | ratio (target <= 2.0) | peak MB |")
    print(f"|---|---|---|---|---|---|")
    from depthcraft.tasks.lib.clip import probe_clip

    print(f"| {clip.name} | {probe_clip(made if made.exists() else clip).frames if False else '-'} | {secs:.1f} | "
          f"{enc:.1f} | {secs / enc:.2f} | {peak / 2**20:.0f} |")


def make_long_clip(path: Path, minutes: float) -> None:
    """A ``minutes``-long 1080p H.264 clip with audio: 10 s are encoded (the shared clip scaled
    up, or a bundled photo panned) and repeated with the concat demuxer (no re-encode)."""
    unit = path.with_name("unit.mp4")
    if SHARED_CLIP.exists():
        cmd = [ffmpeg(), "-y", "-loglevel", "error", "-i", str(SHARED_CLIP), "-t", "10", "-vf", "scale=1920:1080",
               "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-c:a", "aac", str(unit)]
    else:  # a bundled photo, panned
        from skimage import data
        import cv2

        img = path.with_name("p.png")
        cv2.imwrite(str(img), cv2.resize(data.astronaut()[..., ::-1], (2400, 2400)))
        cmd = [ffmpeg(), "-y", "-loglevel", "error", "-loop", "1", "-framerate", "30000/1001", "-i", str(img),
               "-f", "lavfi", "-i", "sine", "-t", "10", "-vf", "crop=1920:1080:'mod(t*40,480)':660",
               "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-c:a", "aac", "-shortest", str(unit)]
    subprocess.run(cmd, check=True)
    listing = path.with_name("list.txt")
    listing.write_text("".join(f"file '{unit}'\n" for _ in range(int(round(minutes * 6)))))
    subprocess.run([ffmpeg(), "-y", "-loglevel", "error", "-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy",
                    str(path)], check=True)


def bench_memory(minutes: float, frames: int | None) -> None:
    with tempfile.TemporaryDirectory() as t:
        clip = Path(t) / "long1080.mp4"
        t0 = time.time()
        make_long_clip(clip, minutes)
        print(f"made a {minutes:g}-minute 1080p clip in {time.time() - t0:.0f} s ({clip.stat().st_size / 2**20:.0f} MB)")
        cmd = [*DEPTHCRAFT, "stereo", str(clip), "-o", str(Path(t) / "out.mp4"), "--layout", "hsbs"]
        if frames:
            # a stop after N frames: the one-shot runs the whole clip, so time it out by frames
            cmd = [sys.executable, str(Path(__file__)), "_partial", str(clip), str(Path(t) / "out.mp4"), str(frames)]
        secs, samples, r = run_sampled(cmd)
        if r.returncode:
            raise SystemExit(r.stderr[-2000:])
    peak = max(s for _, s in samples)
    q = [max((s for tt, s in samples if secs * k / 4 <= tt < secs * (k + 1) / 4), default=0) / 2**20 for k in range(4)]
    print("| clip | frames | seconds | peak MB (depthcraft + ffmpeg) | peak per quarter of the run, MB |")
    print("|---|---|---|---|---|")
    print(f"| {minutes:g} min 1080p | {frames or 'all'} | {secs:.0f} | {peak / 2**20:.0f} | "
          f"{' / '.join(f'{v:.0f}' for v in q)} |")


def _partial(clip: str, out: str, frames: int) -> None:
    """The engine on frames [0, frames) of the long clip, as a one-shot would (one segment)."""
    from depthcraft.tasks.clips import assemble, process_clip_segment
    from depthcraft.tasks.lib.clip import probe_clip

    info = probe_clip(clip)
    with tempfile.TemporaryDirectory() as t:
        seg = process_clip_segment("stereo", clip, 0, frames, {"layout": "hsbs"}, t, target=".mp4", info=info)
        assemble("stereo", [seg], clip, out, None, info=info)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_partial":
        return _partial(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["stereo", "memory"])
    ap.add_argument("--clip", type=Path, default=SHARED_CLIP)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--frames", type=int)
    a = ap.parse_args()
    if a.what == "stereo":
        bench_stereo(a.clip)
    else:
        bench_memory(a.minutes, a.frames)


if __name__ == "__main__":
    main()
