"""The content-addressed artifact store.

Layout under the workspace's ``store/``::

    objects/ab/<sha256><suffix>     one file per distinct content (written once, atomically)
    records/<key>.json              what a step produced for a cache key: {name: Artifact}

An :class:`Artifact` is a path plus its content hash, its kind and metadata; it is what steps
pass to each other (never arrays, never bare path strings). Every write is temp file + rename,
so a crash never leaves a half-written object or record behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
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


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy ``src`` to ``dst`` through a temp file in the destination folder, then rename."""
    d = Path(dst)
    d.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d.parent, prefix=f".{d.name}.", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, d)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return d


class Store:
    """Content-addressed objects and per-key records under ``root``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.records = self.root / "records"

    def put_file(self, src: str | os.PathLike, kind: str, meta: dict | None = None, *, move: bool = False) -> Artifact:
        """Add a file; returns its Artifact. Identical content is stored once."""
        src = Path(src)
        digest = sha256_file(src)
        dst = self.objects / digest[:2] / f"{digest}{src.suffix.lower()}"
        if not dst.exists():
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
        if not dst.exists():
            atomic_write_bytes(dst, data)
        return Artifact(path=str(dst), sha256=digest, kind=kind, meta=dict(meta or {}))

    def record_path(self, key: str) -> Path:
        return self.records / f"{key}.json"

    def save_record(self, key: str, outputs: dict[str, Artifact], info: dict | None = None) -> None:
        body = {"key": key, "outputs": {k: a.to_dict() for k, a in outputs.items()}, "info": info or {}}
        atomic_write_bytes(self.record_path(key), json.dumps(body, indent=1, sort_keys=True).encode())

    def load_record(self, key: str) -> dict[str, Artifact] | None:
        """The outputs stored for ``key``, or None when missing or any object has gone."""
        p = self.record_path(key)
        try:
            body = json.loads(p.read_text())
        except (OSError, ValueError):
            return None
        outs = {k: Artifact.from_dict(v) for k, v in body.get("outputs", {}).items()}
        if not all(Path(a.path).exists() for a in outs.values()):
            return None
        return outs

    def has(self, key: str) -> bool:
        return self.load_record(key) is not None
