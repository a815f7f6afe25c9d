"""The manifest every run writes beside its outputs, and reproducing a run from it.

``manifest.json`` holds the recipe (text and hash, overrides, resolved parameters), every
input and output with its sha256, the versions of the code that made them, the provider and
model identity, the session id, and per-step timings and cache hits. ``reproduce`` runs the
recorded recipe again (recomputing by default) and lists every output whose hash differs.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

from depthcraft.tasks.lib.store import atomic_write_bytes, sha256_bytes, sha256_file

MANIFEST = "manifest.json"


def versions() -> dict:
    out = {"python": platform.python_version()}
    for dist in ("depthcraft", "prefect", "numpy", "opencv-python-headless", "moviepy", "pillow", "onnxruntime",
                 "scikit-image", "pydantic"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    try:
        import imageio_ffmpeg

        out["ffmpeg"] = imageio_ffmpeg.get_ffmpeg_version()
    except Exception:  # noqa: BLE001 - versions are informative, never fatal
        pass
    return out


def manifest_dir(out_dirs: list[Path], root: Path) -> Path:
    """The deepest folder holding every image's output folder (the folder itself for one image)."""
    if not out_dirs:
        return root
    common = Path(*Path(out_dirs[0]).parts)
    for d in out_dirs[1:]:
        parts = []
        for a, b in zip(common.parts, Path(d).parts):
            if a != b:
                break
            parts.append(a)
        common = Path(*parts)
    return common


def build(plan, *, run_id: str | None, started: float, nodes: list[dict], failures: list[dict],
          identities: dict) -> dict:
    r = plan.recipe
    return {
        "depthcraft_manifest": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "run_id": run_id,
        "session_id": plan.session_id,
        "recipe": {
            "name": r.name, "file": plan.src.file, "text": plan.src.text,
            "sha256": sha256_bytes(plan.src.text.encode()), "overrides": plan.src.overrides,
            "resolved": r.model_dump(mode="json", by_alias=True, exclude_none=True),
        },
        "out_root": str(plan.out_root),
        "provider": {"name": r.provider, "mode": r.mode, "identities": identities,
                     "resolved": getattr(plan, "resolved", {})},
        "inputs": [{"name": i.name, "origin": i.origin, "sha256": i.source.sha256 if i.source else None,
                    "depth": i.given_depth.meta.get("given_path") if i.given_depth else None,
                    "depth_sha256": i.given_depth.sha256 if i.given_depth else None, "error": i.error,
                    **({"size": list(i.size)} if getattr(i, "size", None) else {}),
                    **({"working_size": list(i.working_size)} if getattr(i, "working_size", None) else {}),
                    **_colour(i)}
                   for i in plan.images],
        # the pixel limit in effect (recipe, else DEPTHCRAFT_MAX_PIXELS, else 50 MP) and what it does
        "limits": {"max_pixels": plan.max_pixels() if hasattr(plan, "max_pixels") else None,
                   "downscale": bool(r.inputs.downscale)},
        "steps": nodes,
        "failures": failures,
        "versions": versions(),
        "platform": {"system": platform.system(), "machine": platform.machine(), "argv0": Path(sys.argv[0]).name},
        "duration_s": round(time.time() - started, 3),
    }


def _colour(image) -> dict:
    """``{"colour": "converted from the ICC profile 'Display P3' to sRGB (...)"}`` for a photo whose
    embedded profile was converted (tasks/lib/colour.py); nothing for an untagged or sRGB one."""
    from depthcraft.tasks.lib.colour import manifest_note

    src = getattr(image, "source", None)
    note = manifest_note(src.path) if src is not None and getattr(src, "kind", "") == "image" else None
    return {"colour": note} if note else {}


def write(manifest: dict, folder: Path) -> Path:
    from depthcraft.tasks.lib.errors import OutputError

    p = Path(folder) / MANIFEST
    try:
        atomic_write_bytes(p, json.dumps(manifest, indent=2, sort_keys=False).encode())
    except OSError as e:  # (a read-only output folder, a file in the way: one line, not a traceback)
        raise OutputError(str(p.parent) if isinstance(e, (FileExistsError, NotADirectoryError)) else str(p),
                          e) from None
    return p


def read(path: str | Path) -> dict:
    from depthcraft.tasks.lib.errors import InputError

    p = Path(path)
    if p.is_dir():
        p = p / MANIFEST
    try:
        m = json.loads(p.read_text())
    except FileNotFoundError:
        raise InputError("no such manifest", path=str(p)) from None
    except ValueError as e:
        raise InputError(f"not a JSON manifest ({e})", path=str(p)) from None
    from .manifest_check import check_shape

    check_shape(m, p)  # a list, a string, a manifest missing its recipe: one line, never a traceback
    return m


def how_made(manifest: dict) -> str:
    """``recomputed`` when every step run (and clip segment) of ``manifest`` was computed, else
    the counts (``3 computed, 2 cached``): a cache hit is never called recomputed."""
    counts = {"computed": 0, "cached": 0}
    for n in manifest.get("steps", []):
        if n.get("status") in counts:
            counts[n["status"]] += 1
        for seg in n.get("segments") or []:
            if seg.get("status") in counts:
                counts[seg["status"]] += 1
    if not counts["cached"]:
        return "recomputed"
    if not counts["computed"]:
        return "all from the cache"
    return f"{counts['computed']} computed, {counts['cached']} from the cache"


def output_hashes(manifest: dict) -> dict[str, str]:
    """{published path: sha256} over every node of a manifest."""
    out = {}
    for n in manifest.get("steps", []):
        for o in (n.get("outputs") or {}).values():
            out[o["path"]] = o["sha256"]
    return out


def compare(old: dict, new: dict) -> list[dict]:
    """Outputs whose hash differs (or that appeared / went missing) between two manifests."""
    a, b = output_hashes(old), output_hashes(new)
    diffs = []
    for path in sorted(set(a) | set(b)):
        if a.get(path) != b.get(path):
            diffs.append({"path": path, "recorded": a.get(path), "now": b.get(path)})
    ins_old = {i["name"]: i["sha256"] for i in old.get("inputs", [])}
    for i in new.get("inputs", []):
        if i["name"] in ins_old and ins_old[i["name"]] != i["sha256"]:
            diffs.append({"path": i["origin"], "recorded": ins_old[i["name"]], "now": i["sha256"], "input": True})
    return diffs


def _relative(path: str, root: str | None) -> str:
    try:
        return str(Path(path).relative_to(root)) if root else path
    except ValueError:
        return path


def measure_reproduction(old: dict, new: dict) -> tuple[list[dict], int]:
    """Compare the files a reproduction actually wrote with what ``old`` recorded.

    Every output the new run wrote is hashed on disk now (never taken from the new manifest),
    and matched to the recorded output at the same path relative to each run's output root.
    Returns (differences, number of files measured). A difference is an output whose bytes
    differ, one recorded but not written (its step failed or was not run), or one written
    but not recorded; ``now`` is None for a file that is not there.
    """
    recorded = {_relative(p, old.get("out_root")): h for p, h in output_hashes(old).items()}
    written = {_relative(p, new.get("out_root")): p for p in output_hashes(new)}
    diffs, measured = [], 0
    for rel in sorted(set(recorded) | set(written)):
        path = written.get(rel)
        now = None
        if path is not None:
            try:
                now = sha256_file(path)
                measured += 1
            except OSError:
                now = None
        if rel not in recorded:
            if old.get("partial"):  # a partial manifest recorded only what its run published
                continue
            diffs.append({"path": rel, "recorded": None, "now": now, "why": "not in the recorded manifest"})
        elif now is None:
            diffs.append({"path": rel, "recorded": recorded[rel], "now": None, "why": "not written"})
        elif now != recorded[rel]:
            diffs.append({"path": rel, "recorded": recorded[rel], "now": now, "why": "different bytes"})
    ins_old = {i["name"]: i["sha256"] for i in old.get("inputs", [])}
    for i in new.get("inputs", []):
        if i["name"] in ins_old and ins_old[i["name"]] != i["sha256"]:
            diffs.append({"path": i["origin"], "recorded": ins_old[i["name"]], "now": i["sha256"],
                          "why": "input changed", "input": True})
    return diffs, measured
