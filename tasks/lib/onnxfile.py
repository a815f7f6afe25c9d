"""Is a file an ONNX model at all? A cheap structural check, without ONNX Runtime or ``onnx``.

An ``.onnx`` file is one serialized ``ModelProto`` (protocol buffers, onnx/onnx.proto). Its
top level is a short run of fields, in field-number order as protobuf writes them:
``ir_version`` (1, varint) first, strings (2-4, 6), ``graph``
(7, one length-delimited message holding nearly all the bytes), ``opset_import`` (8, repeated)
and a few more. :func:`problem` walks those top-level fields, reading only each field's tag and
length and seeking over its payload, so a 1.3 GB model costs a few dozen small reads. It tells
apart what ends up under a model's name in practice: random bytes, an HTML error page or a
JSON answer saved as the model, and a truncated download (a field that claims more bytes than
the file has). What it cannot see (bytes flipped inside the graph, a missing external-data
file) is left to creating the ONNX Runtime session, which ``provider: auto`` does before it
picks a model.
"""

from __future__ import annotations

import os
from pathlib import Path

_REQUIRED = {1: "ir_version", 7: "graph", 8: "opset_import"}
# Wire types of the ModelProto fields that have one fixed meaning (0 varint, 2 length-delimited).
_WIRE = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2}
_MAX_FIELDS = 100_000  # a real model has tens; more is not a model (and bounds the walk)
_CACHE: dict[tuple, str | None] = {}


def _varint(f) -> int | None:
    """One protobuf varint from ``f``; None at end of file or past 10 bytes."""
    shift = value = 0
    for _ in range(10):
        b = f.read(1)
        if not b:
            return None
        value |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return value
        shift += 7
    return None


def _looks_like(head: bytes) -> str:
    """A few words on what the first bytes of a file that is not a model look like."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:64].lower()
    if text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<")):
        return "it is an HTML/XML page (an error page saved as the model?)"
    if text.startswith((b"{", b"[")):
        return "it is JSON text (an error answer saved as the model?)"
    if text.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer, not the model's bytes"
    return "random or damaged bytes"


def problem(path: str | os.PathLike) -> str | None:
    """None when ``path`` is structurally an ONNX ``ModelProto`` (every top-level field whole,
    ``ir_version``, ``graph`` and ``opset_import`` present), else why not, in a few words
    ("is empty", "is truncated: ...", "is not an ONNX model: ..."). Remembered per file version
    (path, size, mtime, inode) in this process. Raises OSError when the file cannot be read."""
    p = Path(path)
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _CACHE:
        _CACHE[key] = _walk(p, st.st_size)
    return _CACHE[key]


def _walk(p: Path, size: int) -> str | None:
    if size == 0:
        return "is empty"
    seen: set[int] = set()
    with open(p, "rb") as f:
        head = f.read(64)
        f.seek(0)
        for _ in range(_MAX_FIELDS):
            at = f.tell()
            if at == size:
                break
            tag = _varint(f)
            if tag is None:
                return f"is truncated (it ends inside a field header at byte {at} of {size})"
            number, wire = tag >> 3, tag & 7
            if at == 0 and tag != 0x08:  # every exporter writes ir_version (field 1, a varint) first
                return "is not an ONNX model: " + _looks_like(head)
            if number == 0 or wire not in (0, 1, 2, 5) or _WIRE.get(number, wire) != wire:
                return "is not an ONNX model: " + _looks_like(head)
            if wire == 0:
                if _varint(f) is None:
                    return f"is truncated (it ends at byte {size}, inside field {number})"
            elif wire == 2:
                n = _varint(f)
                if n is None:
                    return f"is truncated (it ends at byte {size}, inside field {number})"
                end = f.tell() + n
                if end > size:
                    what = _REQUIRED.get(number, f"field {number}")
                    return (f"is truncated: its {what} needs {end} bytes and the file has {size} "
                            "(an interrupted download or copy?)")
                f.seek(end)
            else:
                step = 8 if wire == 1 else 4
                if f.tell() + step > size:
                    return f"is truncated (it ends at byte {size}, inside field {number})"
                f.seek(step, os.SEEK_CUR)
            seen.add(number)
        else:
            return "is not an ONNX model: " + _looks_like(head)
    missing = [name for num, name in _REQUIRED.items() if num not in seen]
    if missing:
        if 7 in seen or 1 in seen:
            return f"is not a whole ONNX model: it has no {' and no '.join(missing)} (truncated?)"
        return "is not an ONNX model: " + _looks_like(head)
    return None


__all__ = ["problem"]
