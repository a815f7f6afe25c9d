"""The content-addressed artifact store.

Layout under the workspace's ``store/``::

    objects/ab/<sha256><suffix>     one file per distinct content (written once, atomically)
    records/<key>.json              what a step produced for a cache key: {name: Artifact}
    quarantine/<time>-<file>        objects whose bytes no longer matched their name, moved aside

An :class:`Artifact` is a path plus its content hash, its kind and metadata; it is what steps
pass to each other (never arrays, never bare path strings). Every write is temp file + rename,
so a crash never leaves a half-written object or record behind.

An object's name is its sha256, so its bytes can always be checked against it. Every object is
checked before it is used (a record loaded, an input read, an output published), once per
process and per state of the file (size, mtime, ctime, inode): a disk error, a stray editor or
a flipped bit is caught, the object is moved to ``quarantine/`` (never deleted) with one line
on stderr, and the step that made it runs again.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

CHUNK = 1 << 20


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


UMASK = _umask()  # mkstemp makes 0600 files; published outputs get the usual 0666 & ~umask


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stable_hash(obj) -> str:
    """sha256 of a JSON-serialisable object with sorted keys (for cache keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class Artifact:
    path: str
    sha256: str
    kind: str  # image | depth | video | mask | mesh | pointcloud | layers | data
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Artifact":
        return cls(path=d["path"], sha256=d["sha256"], kind=d["kind"], meta=dict(d.get("meta") or {}))

    @property
    def suffix(self) -> str:
        return Path(self.path).suffix


def _atomic_replace(dst: str | os.PathLike, fill) -> Path:
    """Write ``dst`` by calling ``fill(tmp_path)`` on a temp file in the destination folder, then
    renaming it over ``dst``: a reader never sees a half-written file, and a kill leaves at most
    a ``.NAME.*.tmp`` behind (never a truncated ``dst``)."""
    d = Path(dst)
    d.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d.parent, prefix=f".{d.name}.", suffix=".tmp")
    os.close(fd)
    try:
        fill(tmp)
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, d)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _drop_stale_temps(d)
    return d


STALE_TEMP_SECONDS = 600


def _drop_stale_temps(d: Path) -> None:
    """Remove the ``.NAME.*.tmp`` files a killed writer of ``d`` left beside it: untouched for
    :data:`STALE_TEMP_SECONDS` (a live copy writes to its temp file all the time)."""
    now = time.time()
    for old in d.parent.glob(f".{glob.escape(d.name)}.*.tmp"):
        try:
            if now - old.stat().st_mtime > STALE_TEMP_SECONDS:
                old.unlink()
        except OSError:  # gone already, or not ours to remove
            pass


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`_atomic_replace`)."""
    return _atomic_replace(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy ``src`` to ``dst`` through a temp file in the destination folder, then rename."""
    return _atomic_replace(dst, lambda tmp: shutil.copyfile(src, tmp))


class CorruptObject(Exception):
    """A store object whose bytes do not match its sha256 (it has been quarantined)."""

    def __init__(self, path: str, moved_to: str | None):
        self.path, self.moved_to = path, moved_to
        super().__init__(f"store object {Path(path).name} does not match its sha256"
                         + (f" (moved to {moved_to})" if moved_to else ""))


# objects verified by this process: path -> (size, mtime_ns, ctime_ns, inode) when they matched.
# ctime cannot be set back by a user, so bytes changed in place (even with the mtime restored)
# are hashed again; an unchanged object is hashed once per process ("once per run").
_verified: dict[str, tuple] = {}
_quarantined: list[dict] = []  # what this process moved aside (the run summary and manifest list it)
_lock = threading.Lock()


def _signature(st: os.stat_result) -> tuple:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def quarantined() -> list[dict]:
    """Every object this process has quarantined so far: {object, moved_to, sha256_now, why}."""
    with _lock:
        return list(_quarantined)


def notice(line: str) -> None:
    """One line on stderr (the store has no console of its own; steps run in worker threads).

    Written to the stream directly: ``print`` inside a Prefect flow with ``log_prints`` would
    turn it into a log record, which the command line hides."""
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def copy_verified(src: str | os.PathLike, dst: str | os.PathLike, sha256: str) -> Path:
    """Copy ``src`` to ``dst`` atomically, hashing the bytes as they are copied.

    The temp file is renamed into place only when its sha256 is ``sha256``; otherwise it is
    removed and :class:`CorruptObject` raised, so a published file is always the recorded one.
    """
    d = Path(dst)
    d.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d.parent, prefix=f".{d.name}.", suffix=".tmp")
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
                out.write(chunk)
        if h.hexdigest() != sha256:
            raise CorruptObject(str(src), None)
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, d)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _drop_stale_temps(d)
    return d


class Store:
    """Content-addressed objects and per-key records under ``root``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.records = self.root / "records"
        self.quarantine_dir = self.root / "quarantine"

    # -- integrity -------------------------------------------------------------------------
    def is_object(self, path: str | os.PathLike) -> bool:
        p = Path(path)
        return p.parent.parent == self.objects and len(p.name) >= 64

    @staticmethod
    def expected_sha256(path: str | os.PathLike) -> str:
        return Path(path).name[:64]

    def verify(self, path: str | os.PathLike, *, size: int | None = None, what: str = "",
               quarantine: bool = True) -> bool:
        """Whether the object at ``path`` exists and its bytes match its name (and ``size``).

        A mismatch moves the object to ``quarantine/`` (when ``quarantine``) and prints one
        line naming ``what`` used it. Files outside ``objects/`` are not checked (True).
        """
        p = Path(path)
        if not self.is_object(p):
            return True
        try:
            st = p.stat()
        except OSError:
            return False
        sig = _signature(st)
        key = str(p)
        if _verified.get(key) == sig:
            return True
        if size is not None and st.st_size != size:
            now = f"{st.st_size} bytes instead of {size}"
        else:
            try:
                digest = sha256_file(p)
            except OSError:
                return False
            if digest == self.expected_sha256(p):
                with _lock:
                    _verified[key] = sig
                return True
            now = f"its sha256 is now {digest[:12]}"
        if quarantine:
            self.quarantine(p, now, what)
        return False

    def quarantine(self, path: str | os.PathLike, why: str = "", what: str = "") -> Path | None:
        """Move a bad object aside (never delete it) and say so in one line."""
        p = Path(path)
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        dst = self.quarantine_dir / f"{time.strftime('%Y%m%dT%H%M%S')}-{time.monotonic_ns() % 10**6}-{p.name}"
        try:
            os.replace(p, dst)
        except FileNotFoundError:  # another thread got there first
            return None
        with _lock:
            _verified.pop(str(p), None)
            _quarantined.append({"object": str(p), "moved_to": str(dst), "why": why, "used_by": what})
        notice(f"store: {what + ': ' if what else ''}object {p.name[:12]}...{p.suffix} is corrupt ({why}); "
               f"moved to {dst}; it will be recomputed")
        return dst

    def check_artifacts(self, outputs: dict[str, "Artifact"], *, sizes: dict | None = None, what: str = "") -> bool:
        """Verify every object of a step's outputs; quarantines the bad ones. True when all are good."""
        ok = True
        for name, a in outputs.items():
            if not self.verify(a.path, size=(sizes or {}).get(name), what=what):
                ok = False
        return ok

    def record_is_sound(self, outputs: dict[str, "Artifact"]) -> bool:
        """A record names only objects of this store, each under its own sha256 (a damaged or
        edited record is ignored, and the step recomputed, without blaming its objects)."""
        return all(self.is_object(a.path) and self.expected_sha256(a.path) == a.sha256 for a in outputs.values())

    def put_file(self, src: str | os.PathLike, kind: str, meta: dict | None = None, *, move: bool = False) -> Artifact:
        """Add a file; returns its Artifact. Identical content is stored once."""
        src = Path(src)
        digest = sha256_file(src)
        dst = self.objects / digest[:2] / f"{digest}{src.suffix.lower()}"
        if not (dst.exists() and self.verify(dst, what="a new copy of it")):
            dst.parent.mkdir(parents=True, exist_ok=True)
            if move:
                try:
                    os.replace(src, dst)  # same filesystem: atomic
                except OSError:
                    atomic_copy(src, dst)
            else:
                atomic_copy(src, dst)
        return Artifact(path=str(dst), sha256=digest, kind=kind, meta=dict(meta or {}))

    def put_bytes(self, data: bytes, suffix: str, kind: str, meta: dict | None = None) -> Artifact:
        digest = sha256_bytes(data)
        dst = self.objects / digest[:2] / f"{digest}{suffix.lower()}"
        if not (dst.exists() and self.verify(dst, what="a new copy of it")):
            atomic_write_bytes(dst, data)
        return Artifact(path=str(dst), sha256=digest, kind=kind, meta=dict(meta or {}))

    def record_path(self, key: str) -> Path:
        return self.records / f"{key}.json"

    def save_record(self, key: str, outputs: dict[str, Artifact], info: dict | None = None) -> None:
        sizes = {}
        for k, a in outputs.items():
            try:
                sizes[k] = os.path.getsize(a.path)
            except OSError:
                pass
        body = {"key": key, "outputs": {k: a.to_dict() for k, a in outputs.items()}, "sizes": sizes,
                "info": info or {}}
        atomic_write_bytes(self.record_path(key), json.dumps(body, indent=1, sort_keys=True).encode())

    def load_record(self, key: str, *, what: str = "") -> dict[str, Artifact] | None:
        """The outputs stored for ``key``, or None when missing, unreadable, or when any object
        has gone or no longer matches its sha256 (those are quarantined: the key recomputes)."""
        p = self.record_path(key)
        try:
            body = json.loads(p.read_text())
            outs = {k: Artifact.from_dict(v) for k, v in body.get("outputs", {}).items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        if not self.record_is_sound(outs):
            return None
        if not self.check_artifacts(outs, sizes=body.get("sizes") or {}, what=what):
            return None
        return outs

    def has(self, key: str, *, what: str = "") -> bool:
        return self.load_record(key, what=what) is not None
