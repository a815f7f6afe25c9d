"""Frame folders of clip steps through the artifact store: one tar file per segment and output.

The store keeps files, a clip step with a folder target (``layers`` by default, any step with
``clip_output: folder``) writes one file per frame named by its frame index (``000000.png``,
``000001.png``...). A segment's folder is packed into an uncompressed tar (PNG frames are already
compressed) whose bytes depend on the frames only (sorted names, mtime 0, no owner), so the same
frames give the same sha256 on every runner; the step's assembly joins its segments' tars in
frame order (members copied, nothing decoded), checking that the names are exactly the frames
``0..frames-1`` once each; publishing extracts the joined tar into the output folder.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

from depthcraft.tasks.lib.errors import DepthcraftError


def _info(name: str, size: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime, ti.mode, ti.uid, ti.gid, ti.uname, ti.gname = size, 0, 0o644, 0, 0, "", ""
    return ti


def frame_index(name: str) -> int | None:
    """The frame index a frame file is named by (``000123.png`` -> 123), else None."""
    stem = name.split(".", 1)[0]
    return int(stem) if stem.isdigit() else None


def check_frames(names: list[str], start: int, stop: int, what: str) -> None:
    """Raise ``DepthcraftError`` unless ``names`` are frames ``start..stop-1``, each once."""
    idx = sorted(i for i in (frame_index(n) for n in names) if i is not None)
    if len(idx) != len(names) or idx != list(range(start, stop)):
        missing = sorted(set(range(start, stop)) - set(idx))[:5]
        extra = sorted(set(idx) - set(range(start, stop)))[:5]
        dup = len(idx) - len(set(idx))
        raise DepthcraftError(f"{what}: the frame files are not frames {start}..{stop - 1} once each "
                              f"(missing {missing}, outside {extra}, {dup} duplicated, "
                              f"{len(names) - len(idx)} not named by frame)")


def pack(folder: Path, tar_path: Path, start: int, stop: int, what: str) -> Path:
    """A segment's frame folder as a tar of its files in name (= frame) order."""
    files = sorted(p for p in Path(folder).iterdir() if p.is_file())
    check_frames([p.name for p in files], start, stop, what)
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for p in files:
            with open(p, "rb") as f:
                tar.addfile(_info(p.name, p.stat().st_size), f)
    return tar_path


def join(parts: list[Path], out: Path, frames: int, what: str) -> Path:
    """Segment tars (in frame order) joined into one tar holding frames ``0..frames-1``."""
    names: list[str] = []
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as dst:
        for part in parts:
            with tarfile.open(part, "r") as src:
                for m in src:
                    if not m.isfile() or "/" in m.name or m.name.startswith("."):
                        raise DepthcraftError(f"{what}: unexpected entry {m.name!r} in a segment's frames")
                    names.append(m.name)
                    dst.addfile(_info(m.name, m.size), src.extractfile(m))
    check_frames(names, 0, frames, what)
    return out


def count(tar_path: Path) -> int:
    with tarfile.open(tar_path, "r") as t:
        return sum(1 for m in t if m.isfile())


def extract(tar_path: Path, dst: Path) -> Path:
    """Publish a joined tar as the folder ``dst``: extracted beside it, then swapped in (a
    reader sees the old folder or the new one, never half of one; frames of an older, longer
    run do not linger)."""
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.part-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with tarfile.open(tar_path, "r") as t:
            for m in t:
                if not m.isfile() or "/" in m.name or m.name.startswith("."):
                    raise DepthcraftError(f"{tar_path}: unexpected entry {m.name!r}")
                with open(tmp / m.name, "wb") as f:
                    shutil.copyfileobj(t.extractfile(m), f, 1 << 20)
        old = None
        if dst.is_dir():
            old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dst, old)
        elif dst.exists():
            dst.unlink()
        os.replace(tmp, dst)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst
