"""A run's output folder: one writer at a time, and a manifest that never lies.

**One writer.** Before a run publishes its first file it takes an exclusive ``flock`` on its
manifest folder itself (the folder ``manifest.json`` goes to; no lock file is left in it) and
holds it until its manifest and gallery are written. A second run writing to the same folder (a
different recipe with the same name, the same recipe twice) computes meanwhile, then waits
to publish with one line ``waiting for run ... (pid N) writing to DIR`` (read from the
holder's partial manifest); Ctrl-C stops the wait. The kernel drops the lock when the process ends, even by ``kill -9``: no stale lock.

**A manifest that never lies.** A re-run overwrites the previous run's files one by one, so
the previous manifest stops being true at the first publish. Just before it, the run replaces
``manifest.json`` with a *partial* manifest (``"partial": {"state": "running", "pid": ...}``)
listing nothing yet, and rewrites it (atomically: temp file + rename) after publishes, listing
the step runs published so far (at most every :data:`EVERY` seconds, and always after the
last). Whatever stops the run, every record in the manifest on disk names a file that holds
those bytes:

- finished: the full manifest (no ``partial``) replaces it;
- Ctrl-C / SIGTERM: ``partial.state`` becomes ``interrupted`` (with the signal);
- ``kill -9``, power cut: it stays ``running`` with a dead pid; the next run writing there
  says so in one line, and ``reproduce`` says it compares only what it recorded.

A run stopped before its first publish changed no file: the previous manifest stays true and
stays in place. The previous run's ``index.html`` is removed with its manifest, and what a
killed writer left half-written in the run's output folders (temp files of atomic writes,
partly extracted frame folders) is removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from pathlib import Path

from depthcraft.tasks.lib import cancel
from depthcraft.tasks.lib.errors import DepthcraftError, OutputError
from depthcraft.tasks.lib.notices import notice

from . import manifest as mf

EVERY = 0.5  # seconds between rewrites of the partial manifest (it only ever lags: never lies)


_OPEN: list = []  # folders held by this process, released by the flow run that took them
_OPEN_LOCK = threading.Lock()


def release(run_id: str | None) -> None:
    """Release the folders a flow run still holds (it raised before its end): a long-lived
    process (``depthcraft serve``) must not keep them, or its next run would wait on itself."""
    if run_id is None:
        return
    with _OPEN_LOCK:
        held = [f for f in _OPEN if f.run_id == run_id]
    for f in held:
        f.close()


class OutputFolder:
    """The publishing side of one run in one manifest folder (see the module docstring)."""

    def __init__(self, plan, folder: Path, *, run_id: str | None, started: float):
        self.plan, self.folder, self.run_id, self.started = plan, Path(folder), run_id, started
        self._fd: int | None = None
        self._base: dict | None = None
        self._nodes: list[dict] = []
        self._failures: list[dict] = []
        self._written = 0.0
        self._dirty = False
        self._lock = threading.Lock()  # the flow thread records, the main thread marks a stop
        self._closed = threading.Event()
        self._final = False  # the full manifest is being written: no partial one any more
        self._claim = None
        # a folder inside or around a running run's: refused now, before any step runs
        self._claim = claim_folder(self.folder, f"run {run_id or '?'} of recipe {plan.recipe.name!r}")
        if self._claim is not None:  # (released with the folder by a run that raised: see release())
            with _OPEN_LOCK:
                _OPEN.append(self)

    # -- the lock ------------------------------------------------------------------------
    def begin(self) -> bool:
        """Take the folder's lock and put the partial manifest in place (once, before the first
        publish). False when a stop was requested while waiting for another run's lock."""
        if self._base is not None:
            return True
        from depthcraft.tasks.lib.errors import OutputError

        try:  # (a file where the folder goes, a read-only parent: one line naming it, not a traceback)
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as e:
            raise OutputError(str(self.folder), e) from None
        said = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not said:
                    notice(f"waiting for {self._holder()} writing to {self.folder}")
                    said = True
                if cancel.requested():
                    os.close(fd)
                    return False
                time.sleep(0.2)
            except OSError as e:  # a file system without flock on folders (some NFS): unlocked, said once
                notice(f"{self.folder}: no lock on the output folder ({e.strerror}); two runs writing here at once "
                       "would mix their files")
                break
        self._fd = fd
        with _OPEN_LOCK:
            if self not in _OPEN:
                _OPEN.append(self)
        self._say_killed()
        _clean_leftovers({Path(d) for d in self.plan.out_dirs.values()})
        base = mf.build(self.plan, run_id=self.run_id, started=self.started, nodes=[], failures=[],
                        identities={})
        base["partial"] = {"state": "running", "pid": os.getpid(), "host": _host(),
                           "reason": "the run is publishing; if its process is gone it was killed"}
        (self.folder / "index.html").unlink(missing_ok=True)  # the previous run's gallery
        with self._lock:
            self._base = base
            self._write()
        # records that came within EVERY of the last write are written by this thread, so the
        # manifest never lags a publish by more than EVERY while the run waits on a long step
        threading.Thread(target=self._flusher, name="depthcraft-manifest", daemon=True).start()
        return True

    def _flusher(self) -> None:
        while not self._closed.wait(EVERY):
            try:
                self.flush()
            except OSError:  # a full disk: the final write says so
                pass

    def finishing(self) -> None:
        """The run's full manifest is about to be written: hold the folder (a run that published
        nothing takes it now) and write no partial one from here on (the flusher, a late Ctrl-C)."""
        self.begin()
        with self._lock:
            self._final = True
        self._closed.set()

    def close(self) -> None:
        self._closed.set()
        with _OPEN_LOCK:
            if self in _OPEN:
                _OPEN.remove(self)
        claim, self._claim = self._claim, None
        unclaim(claim)
        if self._fd is not None:
            try:
                os.close(self._fd)  # releases the flock
            finally:
                self._fd = None

    def __del__(self):  # a run that raised: its lock goes with it
        if hasattr(self, "_closed"):
            self.close()

    # -- the partial manifest ------------------------------------------------------------
    def record(self, rec: dict, failures: list[dict]) -> None:
        """A step run published (or failed): listed in the partial manifest (throttled)."""
        with self._lock:
            self._nodes.append(rec)
            self._failures = list(failures)
            self._dirty = True
            if self._base is not None and time.monotonic() - self._written >= EVERY:
                self._write()

    def flush(self) -> None:
        with self._lock:
            if self._base is not None and self._dirty:
                self._write()

    def stopped(self, signal_name: str) -> None:
        """Ctrl-C / SIGTERM: the manifest says the run was interrupted, with what it published."""
        with self._lock:
            if self._base is None:
                return
            self._stop(signal_name)

    def _stop(self, signal_name: str) -> None:
        self._base["partial"] = {"state": "interrupted", "signal": signal_name, "pid": os.getpid(),
                                 "host": _host(), "reason": f"interrupted by {signal_name}"}
        self._write()

    def _write(self) -> None:
        if self._final:
            return
        man = {**self._base, "steps": list(self._nodes), "failures": list(self._failures),
               "duration_s": round(time.time() - self.started, 3)}
        man["partial"] = {**man["partial"], "recorded": len(self._nodes), "of": len(self.plan.nodes)}
        mf.write(man, self.folder)
        self._written, self._dirty = time.monotonic(), False

    def _holder(self) -> str:
        """Who holds the folder: its partial manifest names the run, its recipe and its pid."""
        try:
            m = json.loads((self.folder / mf.MANIFEST).read_text())
            p = m["partial"]
            return f"run {m.get('run_id') or '?'} of recipe {m['recipe']['name']!r} (pid {p['pid']})"
        except (OSError, ValueError, KeyError, TypeError):
            return "another run"

    def _say_killed(self) -> None:
        """We hold the lock: a manifest still marked running here is a killed run's."""
        try:
            old = json.loads((self.folder / mf.MANIFEST).read_text())
            p = old.get("partial") if isinstance(old, dict) else None
        except (OSError, ValueError):
            return
        if isinstance(p, dict) and p.get("state") == "running":
            notice(f"the previous run writing to {self.folder} (pid {p.get('pid')}) was killed before it finished; "
                   f"its partial manifest ({p.get('recorded', 0)} step run(s)) is replaced by this run's")


def _clean_leftovers(folders) -> None:
    """Half-written files a killed writer left in our output folders (we hold them now): the
    temp files of atomic writes (``.NAME.XXXX.tmp``, a minute old) and the folders a frame
    folder is extracted into (``.NAME.part-PID``, PID gone). One line when any was removed."""
    import re
    import shutil

    from .recovery import process_alive

    removed = 0
    for d in folders:
        try:
            entries = list(d.glob(".*"))
        except OSError:
            continue
        for p in entries:
            try:
                m = re.fullmatch(r"\..+\.part-(\d+)", p.name)
                if m and p.is_dir() and not process_alive(int(m.group(1))):
                    shutil.rmtree(p)
                    removed += 1
                elif (re.fullmatch(r"\..+\.[A-Za-z0-9_]{8}\.tmp", p.name) and p.is_file()  # mkstemp's name
                      and time.time() - p.stat().st_mtime > 60):
                    p.unlink()
                    removed += 1
            except OSError:
                continue
    if removed:
        notice(f"removed {removed} half-written file(s) a killed run left in its output folder(s)")




# -- nested output folders ---------------------------------------------------------------------
# The folder flock above keeps two runs out of ONE folder; it cannot see a run whose folder is
# inside (or holds) another's, which writes the same files when an image's name is the inner
# folder's. So every run also registers its folder host-wide, in a folder of small records, each
# held with a flock by its run's process for the run's life (the kernel drops it on kill -9:
# a record nobody holds is stale and removed). Registering and checking happen under one lock.
def _registry() -> Path:
    import tempfile

    return Path(tempfile.gettempdir()) / f".depthcraft-outfolders-{os.getuid()}"  # (hidden: not a one-shot's temp folder)


def _own_registry() -> Path:
    """The registry folder, made if missing; OSError unless it is a real folder of this user's
    that only they can write: in a shared temp folder another user could make it first (or a link
    to theirs) and keep a record there that refuses every run (a folder of "/"), or hold the
    one-shots' locks forever."""
    import stat

    reg = _registry()
    reg.mkdir(mode=0o700, exist_ok=True)
    st = os.lstat(reg)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise PermissionError(f"{reg} is not a folder of this user's that only they can write")
    return reg


class FolderInUse(OutputError):
    """A run would write inside (or around) the output folder of a run that is running."""

    def __init__(self, folder: Path, other: dict):
        self.path = str(folder)
        inside = Path(folder).is_relative_to(other["folder"])
        DepthcraftError.__init__(
            self, f"cannot write {folder}: it is {'inside' if inside else 'around'} {other['folder']}, the output "
                  f"folder of a running run ({other.get('who') or 'a run'}, pid {other.get('pid')}); two runs in "
                  "nested folders would overwrite each other's files",
            hint="wait for it to finish, or choose another output root with --out")


def _records(reg: Path):
    """(path, record) of every live record; stale ones (their process gone) are removed."""
    for rec in reg.glob("*.json"):
        try:
            fd = os.open(rec, os.O_RDONLY)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:  # held: its run is running
                try:
                    yield rec, json.loads(os.pread(fd, 65536, 0))
                except ValueError:
                    pass
                continue
            rec.unlink(missing_ok=True)  # nobody holds it: its process is gone
        finally:
            os.close(fd)


def claim_folder(folder: Path, who: str, *, register: bool = True) -> int | None:
    """Refuse (:class:`FolderInUse`) a ``folder`` inside or around the folder of a running run;
    then, with ``register``, note ``folder`` as this run's until the returned descriptor is
    closed (:func:`unclaim`). The same folder is not refused: its runs take turns (the flock).
    None where the registry cannot be used (then only the same folder is guarded)."""
    from contextlib import suppress

    folder = Path(os.path.realpath(folder))  # (a link to a running run's folder, or into it, is that folder)
    try:
        reg = _own_registry()
        glock = os.open(reg / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(glock, fcntl.LOCK_EX)
        for _, other in _records(reg):
            theirs = Path(other.get("folder", "/"))
            if theirs != folder and (folder.is_relative_to(theirs) or theirs.is_relative_to(folder)):
                raise FolderInUse(folder, other)
        if not register:
            return None
        path = reg / f"{os.getpid()}-{time.monotonic_ns()}.json"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)  # before the registry lock goes: never seen unheld
        os.write(fd, json.dumps({"folder": str(folder), "pid": os.getpid(), "who": who}).encode())
        _CLAIMS[fd] = path
        return fd
    except OSError:
        return None
    finally:
        with suppress(OSError):
            os.close(glock)


_CLAIMS: dict[int, Path] = {}


def unclaim(fd: int | None) -> None:
    path = _CLAIMS.pop(fd, None) if fd is not None else None
    if path is None:
        return
    path.unlink(missing_ok=True)
    os.close(fd)


@contextlib.contextmanager
def oneshot_writing(out: Path):
    """Around a one-shot command's final writes (its files, already made, copied into place):
    one such writer per output at a time. Each file is replaced atomically anyway (temp file +
    rename: never torn); this keeps a set of files (``d.npy`` and its ``d.npy.json``, a stereo
    view and its mask) from two one-shots writing the same ``-o`` from being mixed. The lock is
    a file in the registry folder named by the output's path (none is ever left in the output
    folder), held for the copies (a clip's: its concatenation and mux too) and removed after;
    two different outputs never wait for each other."""
    import hashlib

    fd = path = None
    try:
        reg = _own_registry()
        path = reg / f"oneshot-{hashlib.sha256(os.path.abspath(out).encode()).hexdigest()[:32]}.lock"
        told = False
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not told:
                    notice(f"waiting for another command writing {out}")
                    told = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:  # the writer before us removes the file when it is done: ours must still be the one there
                if os.fstat(fd).st_ino == os.stat(path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
            fd = None
    except OSError:  # no registry (a read-only temp folder): each file is still atomic
        if fd is not None:
            os.close(fd)
        fd = None
    try:
        yield
    finally:
        if fd is not None:
            try:
                path.unlink(missing_ok=True)  # (while holding it: a waiter then finds it gone and retries)
            except OSError:
                pass
            os.close(fd)


def _host() -> str:
    import socket

    return socket.gethostname()


def describe_partial(m: dict) -> str | None:
    """One line on a partial manifest (for ``reproduce``), None for a finished run's."""
    p = m.get("partial")
    if not isinstance(p, dict):
        return None
    how = {"interrupted": f"was interrupted ({p.get('signal', 'a signal')})",
           "running": f"was killed or is still running (pid {p.get('pid')})"}.get(p.get("state"), "did not finish")
    return (f"this manifest is partial: its run {how} after publishing {p.get('recorded', '?')} of "
            f"{p.get('of', '?')} step run(s); only those are compared")
