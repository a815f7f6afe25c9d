"""Where depthcraft keeps its state: the artifact store, sessions, downloads and the local server.

The workspace is ``$DEPTHCRAFT_HOME`` when set, else the user data folder (platformdirs), e.g.
``~/.local/share/depthcraft`` on Linux. Everything in it is a cache or a log: deleting it loses
no output, only the speed of the next run and the session history.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from platformdirs import user_data_dir

from depthcraft.tasks.lib.errors import InputError, ParameterError
from depthcraft.tasks.lib.store import Store


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def default(cls, root: str | os.PathLike | None = None) -> "Workspace":
        if root is not None and not str(root).strip():  # (an unset shell variable; never "the default")
            raise ParameterError("an empty path (an unset shell variable?)", parameter="--workspace",
                                 hint="give a path, or omit --workspace for its default")
        if root is None and "DEPTHCRAFT_HOME" in os.environ and not os.environ["DEPTHCRAFT_HOME"].strip():
            raise ParameterError("set but empty", parameter="DEPTHCRAFT_HOME",
                                 hint="give it a folder, or unset it (unset DEPTHCRAFT_HOME) to use the default")
        r = root or os.environ.get("DEPTHCRAFT_HOME") or user_data_dir("depthcraft", appauthor=False)
        p = Path(r).expanduser().resolve()
        how = ("--workspace" if root else "DEPTHCRAFT_HOME" if os.environ.get("DEPTHCRAFT_HOME")
               else "the default under HOME")
        hint = "set DEPTHCRAFT_HOME or --workspace to a folder you can write"
        try:
            p.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise InputError(f"the workspace ({how}) is not a folder", path=str(p), hint=hint) from None
        except OSError as e:  # (read-only HOME, a file where a parent folder should be...)
            raise InputError(f"the workspace ({how}) cannot be made: {e.strerror or e}", path=str(p),
                             hint=hint) from None
        if not p.is_dir():
            raise InputError(f"the workspace ({how}) is not a folder", path=str(p), hint=hint)
        if not os.access(p, os.W_OK | os.X_OK):
            raise InputError(f"the workspace ({how}) is not writable", path=str(p), hint=hint)
        return cls(p)

    @property
    def store(self) -> Store:
        return Store(self.root / "store")

    @property
    def sessions(self) -> Path:
        return self.root / "sessions"

    @property
    def downloads(self) -> Path:
        return self.root / "downloads"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def prefect_home(self) -> Path:
        return self.root / "prefect"

    @property
    def results(self) -> Path:
        return self.root / "prefect-results"

    @property
    def runs(self) -> Path:
        return self.root / "runs"
