"""The ONNX model registry, the model cache and the download path.

A registry entry says where a model comes from (URL, sha256), how to feed it (input size,
multiple of, mean/std, aspect handling) and what its output means (relative inverse depth or
metric depth in meters), plus its licence, which is shown to the user before a download.

Downloads go once into the user cache folder (``platformdirs``; ``DEPTHCRAFT_MODELS_DIR``
overrides it), through a ``.part`` file that an interrupted download resumes with an HTTP
``Range`` request. The file is checked against its sha256 before it is renamed into place,
so a cached model is always a verified one. An entry whose sha256 is not known (``None``) is
downloaded only when the user passes ``--trust-unpinned``; the hash it got is then recorded in
``trusted.json`` next to the models and checked from then on.

``DEPTHCRAFT_MODELS_MIRROR=http://host:port/`` replaces the scheme and host of every URL
(an internal mirror, or a test server), keeping the path.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from . import onnxfile
from .errors import InputError, ParameterError, ProviderError
from .stall import AUTO_DEADLINE_ENV, Guard, Stalled, StallRule, guard_client

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OUTPUT_KINDS = ("relative_inverse", "metric")

# fabio-sim/Depth-Anything-ONNX v2.0.0: dynamic-shape exports of the official weights
# (input "image" N x 3 x H x W, ImageNet-normalised RGB; output "depth" N x H x W).
_FABIO = "https://github.com/fabio-sim/Depth-Anything-ONNX/releases/download/v2.0.0/"
# onnx-community export pinned to one revision so that the bytes behind the URL cannot change.
_HF_DA2_SMALL = ("https://huggingface.co/onnx-community/depth-anything-v2-small/resolve/"
                 "4472b7362082ad9968fee890ca0f1e5aca36b93d/onnx/model.onnx")

_NC = "CC-BY-NC-4.0"
_DA2_CITE = "Yang et al., Depth Anything V2, NeurIPS 2024"


@dataclass(frozen=True)
class ModelInfo:
    """One model: where it comes from, how to feed it, what its output means."""

    name: str
    title: str
    url: str | None
    sha256: str | None  # None: not pinned; see the module docstring
    licence: str
    commercial_use: bool
    description: str
    output: str = "relative_inverse"  # relative_inverse (larger = nearer) | metric (meters)
    input_size: int = 518  # the side the photo is resized to
    multiple_of: int = 14
    keep_aspect: bool = True  # False: stretch to input_size x input_size
    mean: tuple[float, float, float] = IMAGENET_MEAN  # on 0..1 RGB
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: str = "rgb"
    max_depth_m: float | None = None  # metric models: the largest depth they can output
    size_bytes: int | None = None  # exact size when known
    approx_mb: float | None = None  # for the listing when the exact size is not known
    sha256_note: str = ""  # where the pinned hash comes from, or why there is none
    source: str = ""  # the page the model comes from
    local_path: str | None = None  # set for onnx:/path/model.onnx models
    defaults_used: tuple[str, ...] = field(default=(), compare=False)

    @property
    def filename(self) -> str:
        return f"{self.name}.onnx"

    @property
    def pinned(self) -> bool:
        return bool(self.sha256)

    def size_text(self) -> str:
        if self.size_bytes:
            return f"{self.size_bytes / 1e6:.1f} MB"
        if self.approx_mb:
            return f"~{self.approx_mb:.0f} MB"
        return "?"

    def input_text(self) -> str:
        if self.keep_aspect:
            return f"{self.input_size} short side, x{self.multiple_of}"
        return f"{self.input_size}x{self.input_size}"


# The registry is data: one entry per model, nothing computed.
_ENTRIES: list[dict] = [
    dict(name="depth-anything-v2-small", title="Depth Anything V2 Small (relative)",
         url=_HF_DA2_SMALL, sha256="afb6a5c28f3b6bf1618c6e43f02073ef9dfdc70e937502d51603e57b0a1df10c",
         size_bytes=99_060_839, licence="Apache-2.0", commercial_use=True, output="relative_inverse",
         description="ViT-S, 24.8M params; relative inverse depth (larger = nearer). Fast, the default choice. "
                     + _DA2_CITE + ".",
         sha256_note="onnx-community revision 4472b73; the same hash is pinned by several independent projects",
         source="https://huggingface.co/onnx-community/depth-anything-v2-small"),
    dict(name="depth-anything-v2-base", title="Depth Anything V2 Base (relative)",
         url=_FABIO + "depth_anything_v2_vitb_dynamic.onnx", sha256=None, approx_mb=390,
         licence=_NC, commercial_use=False, output="relative_inverse",
         description="ViT-B, 97.5M params; relative inverse depth, finer detail than Small. Non-commercial licence. "
                     + _DA2_CITE + ".",
         sha256_note="no published sha256 found; pull with --trust-unpinned to record the one you get",
         source="https://github.com/fabio-sim/Depth-Anything-ONNX/releases/tag/v2.0.0"),
    dict(name="depth-anything-v2-large", title="Depth Anything V2 Large (relative)",
         url=_FABIO + "depth_anything_v2_vitl_dynamic.onnx", sha256=None, approx_mb=1340,
         licence=_NC, commercial_use=False, output="relative_inverse",
         description="ViT-L, 335.3M params; the most detailed relative depth, slow on CPU. Non-commercial licence. "
                     + _DA2_CITE + ".",
         sha256_note="no published sha256 found; pull with --trust-unpinned to record the one you get",
         source="https://github.com/fabio-sim/Depth-Anything-ONNX/releases/tag/v2.0.0"),
    dict(name="depth-anything-v2-metric-indoor-small", title="Depth Anything V2 Metric Indoor Small (meters)",
         url=_FABIO + "depth_anything_v2_vits_indoor_dynamic.onnx",
         sha256="2e25a3f332b34d885a1b3059cab471f7916a36099325810821b2d6e0471f74ad", approx_mb=99,
         licence="Apache-2.0", commercial_use=True, output="metric", max_depth_m=20.0,
         description="ViT-S fine-tuned on Hypersim; metric depth in meters (larger = farther), up to 20 m. "
                     "For rooms and interiors. " + _DA2_CITE + ".",
         sha256_note="hash as pinned by a third-party download script that verifies it (one source)",
         source="https://github.com/fabio-sim/Depth-Anything-ONNX/releases/tag/v2.0.0"),
    dict(name="depth-anything-v2-metric-outdoor-small", title="Depth Anything V2 Metric Outdoor Small (meters)",
         url=_FABIO + "depth_anything_v2_vits_outdoor_dynamic.onnx", sha256=None, approx_mb=99,
         licence="Apache-2.0", commercial_use=True, output="metric", max_depth_m=80.0,
         description="ViT-S fine-tuned on Virtual KITTI 2; metric depth in meters (larger = farther), up to 80 m. "
                     "For streets and landscapes. " + _DA2_CITE + ".",
         sha256_note="no published sha256 found; pull with --trust-unpinned to record the one you get",
         source="https://github.com/fabio-sim/Depth-Anything-ONNX/releases/tag/v2.0.0"),
    dict(name="midas-v2.1-small", title="MiDaS v2.1 Small (relative)",
         url="https://github.com/isl-org/MiDaS/releases/download/v2_1/model-small.onnx",
         sha256="2d8c6cb8f415229daf1eb041024208e2608c9f98e17c81cc7c6ecb449c56fd58", size_bytes=66_764_249,
         licence="MIT", commercial_use=True, output="relative_inverse", input_size=256, multiple_of=32,
         keep_aspect=False,
         description="Fixed 256x256 input; relative inverse depth. Small and quick, coarser than Depth Anything. "
                     "Ranftl et al., Towards Robust Monocular Depth Estimation, TPAMI 2020.",
         sha256_note="official isl-org release asset v2_1; the same hash is pinned by several independent projects",
         source="https://github.com/isl-org/MiDaS/releases/tag/v2_1"),
]

REGISTRY: dict[str, ModelInfo] = {e["name"]: ModelInfo(**e) for e in _ENTRIES}


class ModelError(ProviderError):
    """A model cannot be downloaded, verified or found."""

    def __init__(self, message: str, *, hint: str | None = None, retryable: bool = False):
        super().__init__(message, provider="onnx", hint=hint, retryable=retryable)


# -- where things are ------------------------------------------------------------------------
def models_dir() -> Path:
    """The model cache: ``DEPTHCRAFT_MODELS_DIR`` or the user cache folder (platformdirs)."""
    env = os.environ.get("DEPTHCRAFT_MODELS_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("depthcraft", appauthor=False)) / "models"


def cached_path(info: ModelInfo) -> Path:
    if info.local_path:
        return Path(info.local_path)
    return models_dir() / info.filename


def _amount(n: int) -> str:
    """A byte count in words: MB from 0.1 MB up, else KB or bytes (a 500-byte part is not "0.0 MB")."""
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} KB" if n >= 1000 else f"{n} bytes"


def _is_file(path: Path) -> bool:
    """``path.is_file()``, False where the cache cannot even be looked at (permissions, a name too
    long): such a cache has no usable model, and the caller says why when it tries to write."""
    try:
        return path.is_file()
    except OSError:
        return False


def is_cached(info: ModelInfo) -> bool:
    return _is_file(cached_path(info))


def cached_ok(info: ModelInfo) -> bool:
    """The cached file is there and matches its pinned (or recorded) sha256; one that nothing can
    check (unpinned, no recorded hash) counts as good. A file with the right name and other bytes
    (corrupt, truncated, replaced by hand) is never used as the model it is named after.

    Always hashes the file (once per process and file version): the stamp that ``models list``
    reads is a record, not a proof, so a file changed behind it is still caught here."""
    path = cached_path(info)
    if not _is_file(path):
        return False
    expected = None if info.local_path else expected_sha256(info)
    if expected is None:
        # nothing to check it against, but junk is never a model: an empty file (a `touch`), random
        # bytes, an HTML error page, a truncated copy (lib/onnxfile.py: a few reads, no hashing)
        return _structure_problem(path) is None
    if info.pinned and info.size_bytes and not info.local_path:
        try:  # a pinned size is exact: a file of another size is not the model, and is not hashed
            if path.stat().st_size != info.size_bytes:  # (a 20 GB file took 50 s to hash before auto fell back)
                return False
        except OSError:
            return False
    try:
        got = file_sha256(path)
    except OSError:  # unreadable: not usable (a pull says why when it cannot replace it)
        return False
    _write_stamp(path, got)
    # a recorded (not pinned) hash only says the file is what a --trust-unpinned pull got, which
    # may have been an error page: it must be a model as well
    return got == expected and (info.pinned or _structure_problem(path) is None)


def _structure_problem(path: Path) -> str | None:
    """:func:`onnxfile.problem`, with an unreadable file as a problem rather than an OSError."""
    try:
        return onnxfile.problem(path)
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"


def cached_problem(info: ModelInfo) -> str | None:
    """Why the cached file of ``info`` is not used, in words that follow its path ("is empty", "is
    not an ONNX model (...)", "is truncated: ...", "does not match the sha256 of NAME (corrupt or
    replaced)"); None when it is fine or not there. Hashes at most once per file version."""
    path = cached_path(info)
    if not _is_file(path) or cached_ok(info):
        return None
    if not info.pinned or info.local_path:
        why = _structure_problem(path)
        if why is not None:
            return why
    return f"does not match the sha256 of {info.name} (corrupt or replaced)"


def repair_hint(info: ModelInfo) -> str:
    """The command that replaces a bad cached file of ``info`` with the model (an unpinned model
    needs --trust-unpinned: the bad file's hash may be the one on record)."""
    return f"`depthcraft models pull {info.name}{'' if info.pinned else ' --trust-unpinned'}`"


# -- verified stamps: what `models list` shows without hashing -------------------------------
# After a file was hashed (a verified pull, `models verify`, a use), ``<model>.onnx.verified``
# records its size, mtime, ctime, inode and sha256. `list` trusts it only while all four still
# match the file, so a copy, an edit or a touch makes it "not verified" until hashed again.
def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _stat_fields(st: os.stat_result) -> dict:
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "ino": st.st_ino}


def _write_stamp(path: Path, sha: str, *, loads_with: str | None = None) -> str | None:
    """Record ``sha`` for ``path`` (and, given ``loads_with``, that the runtime it names created a
    session for these bytes); None when recorded, else why not (a read-only cache...). A record
    that still describes the file keeps its ``loads_with``."""
    stamp = _stamp_path(path)
    try:
        rec = {**_stat_fields(path.stat()), "sha256": sha}
        old = _small_json(stamp)
        if isinstance(old, dict) and {k: old.get(k) for k in rec} == rec:
            if loads_with is None or old.get("loads_with") == loads_with:
                return None
            rec["loads_with"] = loads_with
        elif loads_with is not None:
            rec["loads_with"] = loads_with
        tmp = stamp.with_name(f"{stamp.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(rec))
            os.replace(tmp, stamp)
        except OSError:  # e.g. a folder where the stamp should be: leave no temporary file behind
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            raise
    except OSError as e:  # a read-only cache: list says "not verified", nothing else changes
        return e.strerror or str(e)
    return None


def runtime_marker() -> str:
    """Names the ONNX Runtime that would load a model here (its version and the execution
    providers asked for), without importing it (``importlib.metadata``: no second of import)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("onnxruntime")
    except PackageNotFoundError:
        ver = "?"
    return f"onnxruntime {ver}; providers {os.environ.get('DEPTHCRAFT_ORT_PROVIDERS', '').strip() or 'default'}"


def stamped_loadable(path: Path, sha: str) -> bool:
    """The stamp says that this runtime (:func:`runtime_marker`) created a session for this very
    file, whose bytes hash to ``sha`` (the caller has just hashed them). Lets a run skip the
    trial load of a model it loaded before: same bytes, same runtime, same answer."""
    try:
        st = path.stat()
    except OSError:
        return False
    rec = _small_json(_stamp_path(path))
    return (isinstance(rec, dict) and all(rec.get(k) == v for k, v in _stat_fields(st).items())
            and str(rec.get("sha256") or "").lower() == sha.lower() and rec.get("loads_with") == runtime_marker())


def stamp_loadable(path: Path) -> None:
    """Note in the stamp that this runtime created a session for the file the stamp describes
    (no stamp, or one of other bytes: nothing is noted; a read-only cache: nothing either)."""
    try:
        sha = _stamped_sha(path, path.stat())
    except OSError:
        return
    if sha is not None:
        _write_stamp(path, sha, loads_with=runtime_marker())


def _stamped_sha(path: Path, st: os.stat_result) -> str | None:
    """The sha256 the stamp records, when the stamp still describes this very file."""
    rec = _small_json(_stamp_path(path))
    if isinstance(rec, dict) and all(rec.get(k) == v for k, v in _stat_fields(st).items()):
        return str(rec.get("sha256") or "").lower() or None
    return None


@dataclass(frozen=True)
class CacheState:
    """What the cache holds for one model, without hashing: ``state`` is missing | partial |
    corrupt | verified | unverified | unpinned | unreadable; ``text`` says it in a few words (the
    `models list` cell); ``advice``, where there is something to do, the command that does it."""

    state: str
    text: str
    advice: str = ""


def cache_state(info: ModelInfo) -> CacheState:
    """The cached file's state from its size and its stamp (no hashing: `models verify` hashes)."""
    path = cached_path(info)
    try:
        if not path.is_file():
            part = path.with_name(path.name + ".part")
            if part.is_file() and part.stat().st_size:
                return CacheState("partial", f"partial ({_amount(part.stat().st_size)})",
                                  f"`depthcraft models pull {info.name}` resumes it")
            return CacheState("missing", "no")
        st = path.stat()
    except OSError as e:
        return CacheState("unreadable", f"unreadable ({e.strerror or e})")
    if info.pinned and info.size_bytes and st.st_size != info.size_bytes:
        return CacheState("corrupt", f"corrupt (size {st.st_size}, expected {info.size_bytes})",
                          f"`depthcraft models pull {info.name}` downloads it again")
    expected = expected_sha256(info)
    if not info.pinned:  # (never used: cached_ok) a few reads, no hashing
        why = "empty file" if not st.st_size else _structure_problem(path)
        if why is not None:
            return CacheState("corrupt", f"corrupt ({why.removeprefix('is ')})",
                              f"{repair_hint(info)} downloads it again (or delete {path})")
    if expected is None:
        return CacheState("unpinned", "cached, unpinned (no hash to verify against)")
    got = _stamped_sha(path, st)
    if got is None:
        return CacheState("unverified", "cached, not verified", f"run `depthcraft models verify {info.name}`")
    if got != expected:
        return CacheState("corrupt", "corrupt (sha256 mismatch)",
                          f"`depthcraft models pull {info.name}` downloads it again")
    return CacheState("verified", "cached (verified)")


def get_model(name: str) -> ModelInfo:
    """The registry entry ``name``; an unknown name lists the close ones."""
    if name in REGISTRY:
        return REGISTRY[name]
    import difflib

    close = difflib.get_close_matches(name, list(REGISTRY), n=3, cutoff=0.4)
    hint = f"did you mean {', '.join(close)}?" if close else "`depthcraft models list` shows the names"
    raise ParameterError(f"unknown model {name!r}; known: {', '.join(REGISTRY)}", parameter="provider", hint=hint)


def resolved_url(info: ModelInfo) -> str:
    """The URL to fetch: the entry's, with scheme and host replaced by ``DEPTHCRAFT_MODELS_MIRROR``."""
    if not info.url:
        raise ModelError(f"model {info.name!r} has no download URL", hint="pass onnx:/path/model.onnx")
    mirror = os.environ.get("DEPTHCRAFT_MODELS_MIRROR", "").strip()
    if not mirror:
        return info.url
    _check_mirror(mirror)
    parts = urlsplit(info.url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return mirror.rstrip("/") + path


def _check_mirror(mirror: str) -> None:
    """``http(s)://host[:port][/path]``, or one line naming the variable (a typo is not a network failure)."""
    try:
        m = urlsplit(mirror)
        ok = m.scheme in ("http", "https") and bool(m.hostname)
        m.port  # noqa: B018 - raises for a port out of range or not a number
    except ValueError:
        ok = False
    if not ok or m.query or m.fragment:
        raise ParameterError(f"{mirror!r} is not an http(s)://host[:port]/ address",
                             parameter="DEPTHCRAFT_MODELS_MIRROR",
                             hint="e.g. DEPTHCRAFT_MODELS_MIRROR=http://mirror.example:8080/ (unset it to use the "
                                  "registry's own addresses)")


# -- hashes ----------------------------------------------------------------------------------
_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, computed once per (path, mtime, size) in this process."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _HASH_CACHE:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASH_CACHE[key] = h.hexdigest()
    return _HASH_CACHE[key]


def hashed_sha256(path: str | os.PathLike) -> str | None:
    """The sha256 :func:`file_sha256` computed for this file version in this process, or None
    (never hashes)."""
    try:
        p = Path(path)
        st = p.stat()
        return _HASH_CACHE.get((str(p.resolve()), st.st_mtime_ns, st.st_size))
    except OSError:
        return None


def _trusted_file() -> Path:
    return models_dir() / "trusted.json"


def _small_json(path: Path, limit: int = 1 << 20):
    """The JSON in ``path``, or None when it is missing, unreadable, not JSON, nested too deep
    (RecursionError) or larger than ``limit`` bytes (a record of ours is a few hundred)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(limit + 1)
        return None if len(raw) > limit else json.loads(raw)
    except (OSError, ValueError, RecursionError):
        return None


def trusted_hashes() -> dict[str, dict]:
    """Hashes recorded by ``pull --trust-unpinned``: name -> {sha256, url, recorded}. A damaged
    file (not JSON, another shape, a hash that is not 64 hex digits) records nothing for the
    entries it spoils: those models count as unrecorded, as with no file at all."""
    table = _small_json(_trusted_file(), 16 << 20)
    if not isinstance(table, dict):
        return {}
    return {str(k): v for k, v in table.items() if isinstance(v, dict) and _is_sha256(v.get("sha256"))}


def _is_sha256(value) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdefABCDEF" for c in value)


def _record_trusted(info: ModelInfo, sha: str, url: str) -> None:
    table = trusted_hashes()
    table[info.name] = {"sha256": sha, "url": url, "recorded": time.strftime("%Y-%m-%dT%H:%M:%S")}
    f = _trusted_file()
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(table, indent=2, sort_keys=True))
    os.replace(tmp, f)


def expected_sha256(info: ModelInfo) -> str | None:
    """The pinned hash, else the one recorded when the user trusted an unpinned download."""
    if info.sha256:
        return info.sha256.lower()
    rec = trusted_hashes().get(info.name)
    return rec["sha256"].lower() if rec else None


# -- download --------------------------------------------------------------------------------
_WHY_CHARS = 300  # what a server controls (a status line, a chunk header) is cut to this in our one line


def _unreachable(host: str, why: str, info: ModelInfo, part: Path | None, *, started: bool = False) -> ModelError:
    kept = ""
    if len(why) > _WHY_CHARS:
        why = why[:_WHY_CHARS] + f"... ({len(why)} characters)"
    why = " ".join(why.split())  # one line, whatever the server sent
    try:
        if part is not None and part.exists():
            if part.stat().st_size:
                kept = f" ({_amount(part.stat().st_size)} kept in {part.name}; running it again resumes)"
            else:
                part.unlink()  # an empty part resumes nothing; list and the next pull need not see it
    except OSError:
        pass
    return ModelError(
        f"{'download from ' + host + ' interrupted' if started else 'could not reach ' + host}: {why}{kept}",
        hint=f"download {info.url or 'the model'} elsewhere and pass onnx:/path/model.onnx, "
             f"or copy it to {models_dir() / info.filename} (or set DEPTHCRAFT_MODELS_DIR to a folder that has it)",
        retryable=True)


def host_of(url: str) -> str:
    return urlsplit(url).netloc or url


def _oversized(host: str, info: ModelInfo, what: str) -> ModelError:
    size = f"{info.size_bytes} bytes" if info.size_bytes else info.size_text()
    return ModelError(f"{host} is not sending {info.name} ({size}): {what}; nothing was kept",
                      hint=f"check DEPTHCRAFT_MODELS_MIRROR, or download {info.url} yourself and pass "
                           "onnx:/path/model.onnx")


class _Bar:
    """A rich progress bar, or nothing."""

    def __init__(self, enabled: bool, label: str):
        self.progress = None
        if enabled:
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                       TransferSpeedColumn)

            self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                                     TransferSpeedColumn(), TimeRemainingColumn(), transient=False)
            self.task = self.progress.add_task(label, total=None)

    def __enter__(self):
        if self.progress:
            self.progress.start()
        return self

    def update(self, done: int, total: int | None):
        if self.progress:
            self.progress.update(self.task, completed=done, total=total)

    def __exit__(self, *exc):
        if self.progress:
            self.progress.stop()


def _lock(dest: Path, guard: Guard | None = None, say: Callable[[str], None] | None = None):
    """An exclusive lock for one model's download across processes (POSIX), else a no-op.

    The lock file (``<model>.onnx.lock``) is removed by its holder before it lets go, so a pull
    leaves nothing behind. That is safe because a waiter, once it holds a lock, checks that the
    file it locked is still the one at that path (same inode); if the holder removed it meanwhile,
    the waiter locks afresh, so two processes never both hold "the" lock of one model.
    With a ``guard`` that has a deadline, waiting for another process ends at that deadline
    (:class:`ModelError`); without one it waits as long as the other download takes (that one has
    its own stall rule). ``say`` is told once when it has to wait.
    """
    import contextlib

    @contextlib.contextmanager
    def held():
        try:
            import fcntl
        except ImportError:  # Windows: parallel downloads of one model are the user's to avoid
            yield
            return
        lock = dest.with_name(dest.name + ".lock")
        while True:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                _flock_until(fd, fcntl, guard, dest, say)
                try:
                    same = os.path.samestat(os.fstat(fd), os.stat(lock))
                except FileNotFoundError:
                    same = False
            except BaseException:
                os.close(fd)
                raise
            if same:
                break
            os.close(fd)  # the holder before us removed (and maybe someone re-created) the file: again
        try:
            yield
        finally:
            try:
                os.unlink(lock)  # still ours: nobody else can hold this inode while we do
            except OSError:
                pass
            os.close(fd)  # closing the descriptor releases the lock

    return held()


def _flock_until(fd: int, fcntl, guard: Guard | None, dest: Path, say: Callable[[str], None] | None = None) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:  # a silent wait looks like a hang: say what it waits for
        if say is not None:
            say(f"waiting for another depthcraft process that is downloading {dest.name} "
                f"(it holds {dest.name}.lock)")
    if guard is None or guard.deadline is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if guard.clock() >= guard.deadline:
                raise ModelError(f"another depthcraft process has been downloading {dest.name} for longer than "
                                 f"{guard.rule.deadline_s:g} s ({AUTO_DEADLINE_ENV}); not waiting for it",
                                 hint=f"wait for it, or run `depthcraft models pull {dest.stem}`",
                                 retryable=True) from None
            time.sleep(0.05)


def _fetch_to_part(url: str, part: Path, info: ModelInfo, *, progress: bool, timeout: float,
                   read_timeout: float | None = None, client=None, guard: Guard | None = None) -> None:
    """Stream ``url`` into ``part``, resuming from its current size with a Range request.

    ``guard`` (:mod:`.stall`) ends a download that trickles, crawls or runs past its deadline;
    what arrived stays in ``part`` for the next run to resume."""
    import httpx

    host = urlsplit(url).netloc or url
    guard = guard or Guard(StallRule.for_pull())
    own = client is None
    if own:
        client = httpx.Client(follow_redirects=True, timeout=httpx.Timeout(timeout, read=read_timeout or max(timeout, 60.0)),
                              headers={"User-Agent": "depthcraft"})
    guard_client(client, guard)
    try:
        for _attempt in range(2):  # a second pass only after a refused range restarts from zero
            offset = part.stat().st_size if part.exists() else 0
            # The stored bytes must be the file's own: a compressed answer would be decoded in memory
            # (a gzip bomb: 64 KB read, 64 MB decoded) and its Range offsets would not be the file's.
            headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={offset}-"} if offset else {})}
            guard.begin()
            try:
                with client.stream("GET", url, headers=headers) as r:
                    if r.status_code == 416 and offset:
                        # Nothing left past our offset: the part is whole already, or longer than the file.
                        total = _content_range_total(r.headers.get("content-range"))
                        if total is not None and total == offset:
                            return
                        part.unlink(missing_ok=True)
                        continue
                    if r.status_code >= 400:
                        raise ModelError(f"HTTP {r.status_code} for {url}",
                                         hint="the file may have moved; download it yourself and pass "
                                              "onnx:/path/model.onnx", retryable=r.status_code >= 500)
                    coding = r.headers.get("content-encoding", "identity").strip().lower()
                    if coding not in ("", "identity"):
                        raise ModelError(f"{host} answered {info.name} compressed (Content-Encoding: {coding[:40]}) "
                                         "although asked for the file itself (Accept-Encoding: identity)",
                                         hint="check DEPTHCRAFT_MODELS_MIRROR (a proxy or mirror that compresses "
                                              f"downloads), or download {info.url} yourself and pass "
                                              "onnx:/path/model.onnx")
                    if r.status_code == 206:
                        start = _content_range_start(r.headers.get("content-range"))
                        if start != offset:  # a server that answers another range than asked: start over
                            part.unlink(missing_ok=True)
                            continue
                        total = _content_range_total(r.headers.get("content-range"))
                        mode = "ab"
                    else:  # 200: the server ignored the range; the body is the whole file
                        offset, mode = 0, "wb"
                        length = r.headers.get("content-length")
                        total = int(length) if length and length.isdigit() else None
                    if total is None and info.size_bytes:
                        total = info.size_bytes
                    limit = info.size_bytes if info.pinned else None  # a pinned model's size is exact
                    if limit is not None and total is not None and total > limit:
                        part.unlink(missing_ok=True)
                        raise _oversized(host, info, f"it announced {total} bytes")
                    if limit is not None and total is not None and total < limit:
                        # not the file (an error page, another model): said now, not after downloading it
                        kept = part.stat().st_size if part.exists() else 0
                        raise ModelError(f"{host} is not sending {info.name} ({limit} bytes): it announced {total} "
                                         "bytes; " + (f"the {_amount(kept)} in {part.name} were kept" if kept
                                                      else "nothing was downloaded"),
                                         hint=f"check DEPTHCRAFT_MODELS_MIRROR, or download {info.url} yourself and "
                                              "pass onnx:/path/model.onnx")
                    if limit is None:  # unpinned: no exact size, but never more than it announced or twice its listing
                        limit = total if total is not None else (int(info.approx_mb * 2e6) if info.approx_mb else None)
                    done = offset
                    with _Bar(progress, info.name) as bar, open(part, mode) as out:
                        bar.update(done, total)
                        # No chunk size: httpx would drop a half-filled buffer when the connection dies,
                        # and every byte received is a byte the resume does not need again.
                        for chunk in r.iter_raw():
                            out.write(chunk)
                            done += len(chunk)
                            bar.update(done, total)
                            if limit is not None and done > limit:  # an endless or wrong answer: never fill the disk
                                out.close()
                                part.unlink(missing_ok=True)
                                raise _oversized(host, info, f"it sent more than {limit} bytes")
                            guard.check(done, total)  # where the socket-level guard could not be installed
                    if total is not None and done < total:
                        raise _unreachable(host, f"the connection closed after {done} of {total} bytes",
                                           info, part, started=True)
                    return
            except ModelError:
                raise
            except Stalled as e:
                raise _unreachable(host, str(e), info, part, started=guard.connected) from None
            except httpx.HTTPError as e:  # connect, timeout, read, protocol errors
                started = not isinstance(e, (httpx.ConnectError, httpx.ConnectTimeout))
                why = guard.tripped or (f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
                if not guard.tripped and isinstance(e, (httpx.ConnectTimeout, httpx.ReadTimeout)):
                    # "ReadTimeout: timed out" says neither how long nor what the server did
                    silent = timeout if isinstance(e, httpx.ConnectTimeout) else (read_timeout or max(timeout, 60.0))
                    why = (f"no connection within {silent:g} s" if isinstance(e, httpx.ConnectTimeout) else
                           f"the server sent nothing for {silent:g} s") + f" ({type(e).__name__})"
                raise _unreachable(host, why, info, part, started=started) from None
        raise ModelError(f"{host} refused to resume the download of {info.name}",
                         hint=f"delete {part} and run the pull again")
    finally:
        if own:
            client.close()


def _content_range_start(value: str | None) -> int | None:
    # "bytes 100-199/200"
    try:
        return int(value.split()[1].split("-")[0]) if value else None
    except (IndexError, ValueError):
        return None


def _content_range_total(value: str | None) -> int | None:
    try:
        tail = value.rsplit("/", 1)[1] if value else "*"
        return None if tail == "*" else int(tail)
    except (IndexError, ValueError):
        return None


def pull(info: ModelInfo | str, *, trust_unpinned: bool = False, force: bool = False, progress: bool = True,
         timeout: float = 30.0, read_timeout: float | None = None, say: Callable[[str], None] | None = None,
         client=None, stall: StallRule | None = None) -> Path:
    """Download a registry model into the cache (once), verified by sha256; returns its path.

    A cached file that matches its hash is returned as it is; one that does not is downloaded
    again over it; ``force`` downloads again anyway. ``timeout``: seconds to connect;
    ``read_timeout``: seconds the server may stay silent (default ``max(timeout, 60)``).
    ``stall``: the minimum sustained rate and the overall deadline (:mod:`.stall`; default
    :meth:`StallRule.for_pull`, a rate floor and no deadline): a download that trickles or crawls
    raises :class:`ModelError` in one line and keeps its ``.part`` for the next pull to resume.
    An unwritable cache folder raises :class:`ModelError` naming it.
    An unpinned model needs ``trust_unpinned``; the hash it gets is then recorded and printed.
    """
    info = get_model(info) if isinstance(info, str) else info
    if info.local_path:
        return Path(info.local_path)
    say = say or (lambda s: None)
    dest = cached_path(info)
    # An explicit --trust-unpinned accepts (and re-records) whatever an unpinned URL serves now.
    expected = info.sha256.lower() if info.sha256 else (None if trust_unpinned else expected_sha256(info))
    if _is_file(dest) and not force and cached_ok(info):
        return dest
    way = _in_the_way(dest)
    if way:  # found before the download, not when the finished file cannot be renamed onto it
        raise ModelError(f"{dest} {way}; nothing was downloaded", hint=f"remove it, then run "
                         f"`depthcraft models pull {info.name}` again")
    if expected is None and not trust_unpinned:
        raise ModelError(
            f"model {info.name!r} has no pinned sha256, so its download cannot be verified",
            hint=f"run `depthcraft models pull {info.name} --trust-unpinned` to download it anyway and "
                 "record the hash you get, or download it yourself and pass onnx:/path/model.onnx")
    try:
        return _pull_into(info, dest, expected, force=force, progress=progress, timeout=timeout,
                          read_timeout=read_timeout, say=say, client=client,
                          guard=Guard(stall or StallRule.for_pull()))
    except OSError as e:  # the cache folder: read-only, full, a file where the folder should be
        why = "it is not a folder" if isinstance(e, (FileExistsError, NotADirectoryError)) else (e.strerror or e)
        if isinstance(e, FileExistsError) and dest.parent.is_symlink():  # a loop, or a link to nothing
            why = f"it is a symbolic link to {os.readlink(dest.parent)}, which leads to no folder"
        raise ModelError(f"cannot write the model cache {dest.parent}: {why}"
                         + (f" ({e.filename})" if e.filename and str(e.filename) != str(dest.parent) else ""),
                         hint="free some space or make it writable, or set DEPTHCRAFT_MODELS_DIR to a folder "
                              "that is") from None


def _pull_into(info: ModelInfo, dest: Path, expected: str | None, *, force: bool, progress: bool, timeout: float,
               read_timeout: float | None, say: Callable[[str], None], client, guard: Guard) -> Path:
    if dest.is_file() and not force:  # there, but not the bytes its name promises
        say(f"{dest} does not match the sha256 of {info.name} (corrupt or replaced): downloading it again")
    dest.parent.mkdir(parents=True, exist_ok=True)
    say(f"{info.title}: licence {info.licence}" + ("" if info.commercial_use else
        " - NON-COMMERCIAL use only; check the licence before using its output in commercial work"))
    url = resolved_url(info)
    part = dest.with_name(dest.name + ".part")
    with _lock(dest, guard, say):
        if dest.is_file() and not force and cached_ok(info):  # another process finished it while we waited
            return dest
        resumed = part.exists() and part.stat().st_size > 0
        if resumed:
            say(f"resuming {info.name} from {_amount(part.stat().st_size)}")
        _fetch_to_part(url, part, info, progress=progress, timeout=timeout, read_timeout=read_timeout,
                       client=client, guard=guard)
        got = file_sha256(part)
        if expected is not None and got != expected and resumed:
            # The bytes kept from before may be what is wrong (another file's start, a damaged
            # disk): one download from zero decides.
            say(f"{info.name}: the resumed download does not match its sha256; downloading it from the start")
            part.unlink(missing_ok=True)
            _fetch_to_part(url, part, info, progress=progress, timeout=timeout, read_timeout=read_timeout,
                           client=client, guard=guard)
            got = file_sha256(part)
        bad = None if info.pinned else _structure_problem(part)
        if bad is not None:  # unpinned: an error page served with 200 must not be recorded as the model
            size = part.stat().st_size
            part.unlink(missing_ok=True)
            raise ModelError(f"{host_of(url)} did not send {info.name}: the {_amount(size)} it sent {bad}; "
                             "nothing was kept or recorded",
                             hint=f"check DEPTHCRAFT_MODELS_MIRROR, or download {info.url} yourself and pass "
                                  "onnx:/path/model.onnx")
        if expected is not None and got != expected:
            size = part.stat().st_size
            part.unlink(missing_ok=True)
            raise ModelError(
                f"sha256 mismatch for {info.name}: expected {expected}, got {got} ({size} bytes from {url}); "
                "the partial file was removed",
                hint=f"run `depthcraft models pull {info.name}` again; if it fails the same way the file behind "
                     "the URL has changed: download one you trust and pass onnx:/path/model.onnx")
        os.replace(part, dest)
        _write_stamp(dest, got)
        if not info.pinned:
            _record_trusted(info, got, url)
            say(f"trusted unpinned download of {info.name}: sha256 {got} (recorded in {_trusted_file()})")
        else:
            say(f"verified {info.name}: sha256 {got}")
    return dest


@dataclass
class VerifyResult:
    name: str
    status: str  # ok | mismatch | missing | unpinned | empty (unpinned and 0 bytes) | unloadable (see why)
    expected: str | None = None
    got: str | None = None
    path: Path | None = None
    not_recorded: str | None = None  # why the result could not be recorded for `models list`, if it could not
    why: str | None = None  # unloadable: why the file is not an ONNX model (lib/onnxfile.py)


_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _in_the_way(path: Path) -> str | None:
    """What stands at a model's cache path that is not a file (and that no download can replace):
    None for a file, nothing, or a dangling link (a download replaces the link)."""
    try:
        if path.is_dir():
            return "is a folder, not a model file"
        if path.exists() and not path.is_file():
            return "is not a regular file (a device, socket or pipe)"
    except OSError:
        return None
    return None


def verify(info: ModelInfo | str, *, load: bool = True) -> VerifyResult:
    """Re-hash a cached model against its pinned (or recorded) hash; with ``load`` (the default,
    ``models verify``) a file whose hash matches or that nothing pins is also loaded by ONNX
    Runtime (a session on the CPU, as costly as the hash), so a graph it refuses is "unloadable"."""
    info = get_model(info) if isinstance(info, str) else info
    path = cached_path(info)
    expected = expected_sha256(info)
    if not _is_file(path):
        way = _in_the_way(path)  # (was "missing ... run pull": a pull that downloads, then cannot rename)
        return VerifyResult(info.name, "unloadable" if way else "missing", expected, None, path, None, way)
    got = file_sha256(path)
    why = _write_stamp(path, got)
    if expected is None and got == _EMPTY_SHA256:  # (an empty file is never a model: cached_ok)
        return VerifyResult(info.name, "empty", None, got, path, why)
    if not info.pinned and (expected is None or got == expected):  # nothing pins it: is it a model at all?
        bad = _structure_problem(path)
        if bad is not None:
            return VerifyResult(info.name, "unloadable", expected, got, path, why, bad)
    if load and (expected is None or got == expected):
        bad = _session_problem(path)
        if bad is not None:
            return VerifyResult(info.name, "unloadable", expected, got, path, why, bad)
    if expected is None:
        return VerifyResult(info.name, "unpinned", None, got, path, why)
    return VerifyResult(info.name, "ok" if got == expected else "mismatch", expected, got, path, why)


def _session_problem(path: Path) -> str | None:
    """None when ONNX Runtime creates a CPU session for ``path``, else its reason in one line."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime's own exception types
        why = " ".join(str(e).split())
        why = why.split(" failed:", 1)[-1].strip() if " failed:" in why else why
        return f"is a model ONNX Runtime {ort.__version__} cannot load ({why[:200]})"
    return None


_NOT_OFFLINE = ("", "0", "false", "no", "off")


def is_offline() -> bool:
    """``DEPTHCRAFT_OFFLINE=1`` (also set by ``--offline``): no model is ever downloaded.

    Any value but unset, empty, ``0``, ``false``, ``no`` or ``off`` (any case) means offline: a
    user who wrote ``DEPTHCRAFT_OFFLINE=2`` or ``=y`` meant it, and a download they did not want
    costs more than a fallback they can undo."""
    return os.environ.get("DEPTHCRAFT_OFFLINE", "").strip().lower() not in _NOT_OFFLINE


def ensure_model(info: ModelInfo, *, download: bool = True, say: Callable[[str], None] | None = None) -> Path:
    """The model file, downloading a pinned registry model on first use (never when offline)."""
    path = cached_path(info)
    if _is_file(path) and (info.local_path or cached_ok(info)):
        return path
    if info.local_path:
        raise InputError("no such model file", path=info.local_path)
    if _is_file(path) and (is_offline() or not download or expected_sha256(info) is None):
        # (pinned and online: pulled again over it below; unpinned: only the user can vouch for a new one)
        raise ModelError(f"{path} {cached_problem(info) or 'cannot be used'}, so it is not used",
                         hint=f"run {repair_hint(info)} to download it again, or pass "
                              "onnx:/path/model.onnx for a model of your own")
    if is_offline():
        raise ModelError(f"model {info.name!r} is not downloaded and DEPTHCRAFT_OFFLINE=1 (or --offline) forbids "
                         "downloads", hint=f"run `depthcraft models pull {info.name}` when online, or use "
                         "--provider classic")
    if not download or expected_sha256(info) is None:
        flag = "" if info.pinned else " --trust-unpinned"
        raise ModelError(f"model {info.name!r} is not downloaded yet",
                         hint=f"run `depthcraft models pull {info.name}{flag}`")
    if say is None:
        import sys

        def say(s: str) -> None:  # the licence line must reach the user even inside a flow
            print(s, file=sys.stderr)
    return pull(info, progress=_interactive(), say=say)


def _interactive() -> bool:
    import sys

    return sys.stderr.isatty()


# -- local files with a sidecar --------------------------------------------------------------
_SIDECAR_KEYS = {"name", "title", "output", "input_size", "multiple_of", "keep_aspect", "mean", "std",
                 "channel_order", "max_depth_m", "licence", "description"}
_LOCAL_DEFAULTS = {"output": "relative_inverse", "input_size": 518, "multiple_of": 14, "keep_aspect": True,
                   "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "channel_order": "rgb"}


def sidecar_for(path: Path) -> Path | None:
    for cand in (path.with_suffix(".json"), path.with_name(path.name + ".json")):
        if cand.is_file():
            return cand
    return None


def local_model(path: str | os.PathLike) -> ModelInfo:
    """A :class:`ModelInfo` for ``onnx:/path/model.onnx`` from its optional sidecar JSON.

    The sidecar (``model.json`` or ``model.onnx.json``) may give ``output`` (relative_inverse |
    metric), ``input_size``, ``multiple_of``, ``keep_aspect``, ``mean``, ``std`` (on 0..1 RGB),
    ``channel_order`` (rgb | bgr), ``max_depth_m``, ``name``, ``licence``, ``description``.
    Missing keys take Depth Anything's values; ``defaults_used`` says which.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError("no such model file" if not p.exists() else "is not a file", path=str(p),
                         hint="give onnx:/path/model.onnx, or a registry name from `depthcraft models list`")
    side = sidecar_for(p)
    data: dict = {}
    if side is not None:
        try:
            data = json.loads(side.read_text())
        except (OSError, ValueError) as e:
            raise InputError(f"unreadable model description ({e})", path=str(side)) from None
        if not isinstance(data, dict):
            raise InputError("model description must be a JSON object", path=str(side))
        unknown = set(data) - _SIDECAR_KEYS
        if unknown:
            raise InputError(f"unknown keys {sorted(unknown)}; allowed: {sorted(_SIDECAR_KEYS)}", path=str(side))
    used = tuple(k for k in _LOCAL_DEFAULTS if k not in data)
    vals = {**_LOCAL_DEFAULTS, **data}
    where = str(side or p)
    if vals["output"] not in OUTPUT_KINDS:
        raise InputError(f"output must be one of {OUTPUT_KINDS}, got {vals['output']!r}", path=where)
    if vals["channel_order"] not in ("rgb", "bgr"):
        raise InputError(f"channel_order must be rgb or bgr, got {vals['channel_order']!r}", path=where)
    try:
        mean = tuple(float(x) for x in vals["mean"])
        std = tuple(float(x) for x in vals["std"])
        size, mult = int(vals["input_size"]), int(vals["multiple_of"])
    except (TypeError, ValueError) as e:
        raise InputError(f"bad number in model description ({e})", path=where) from None
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0 or size < 1 or mult < 1:
        raise InputError("mean and std need 3 values (std > 0); input_size and multiple_of must be >= 1",
                         path=where)
    name = str(data.get("name") or p.stem)
    return ModelInfo(name=name, title=str(data.get("title") or name), url=None, sha256=None,
                     licence=str(data.get("licence", "unknown (local file)")), commercial_use=False,
                     description=str(data.get("description", f"local model {p}")), output=vals["output"],
                     input_size=size, multiple_of=mult, keep_aspect=bool(vals["keep_aspect"]), mean=mean, std=std,
                     channel_order=vals["channel_order"],
                     max_depth_m=float(vals["max_depth_m"]) if vals.get("max_depth_m") is not None else None,
                     local_path=str(p.resolve()), defaults_used=used)


def with_registry_entry(info: ModelInfo) -> None:
    """Add (or replace) a registry entry: for tests and plugins."""
    REGISTRY[info.name] = info


__all__ = ["ModelInfo", "REGISTRY", "ModelError", "VerifyResult", "CacheState", "models_dir", "cached_path",
           "is_cached", "cached_ok", "cached_problem", "repair_hint", "cache_state", "get_model", "resolved_url", "file_sha256", "expected_sha256", "trusted_hashes", "pull", "verify",
           "ensure_model", "is_offline", "local_model", "sidecar_for", "with_registry_entry"]
