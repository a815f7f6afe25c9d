"""Empty path-valued options and environment variables (and empty names) are refused, naming the option.

An empty string given for a path (``--workspace ''``, ``--out ''``, ``--depth ''``,
``DEPTHCRAFT_HOME=``) is almost always a shell variable that was not set (``--out "$DEST"``).
Read as "not given" it silently ran against the default folder (another workspace, the current
folder, no depth map); read as a path it is the current folder. Neither is what was meant, so it
is one :class:`ParameterError` naming the option, exit code 2, before any work.
"""

from __future__ import annotations

import os

from depthcraft.tasks.lib.errors import ParameterError

# argparse destination -> the name the user typed; every option or argument that takes a path
PATH_OPTIONS: dict[str, str] = {
    "workspace": "--workspace",
    "out": "--out",
    "output": "-o",
    "depth_out": "--depth-out",
    "depth": "--depth",
    "recipe": "RECIPE",
    "recipes": "RECIPE",
    "manifest": "MANIFEST",
    "image": "IMAGE",
    "images": "IMAGE",
}

# argparse destination -> the name the user typed; options that take a name or an address, where
# an empty string was just as silently "not given" (--provider '' ran auto, --work-pool '' no pool,
# --dask-address '' threads, models verify '' every model)
NAMED_OPTIONS: dict[str, str] = {
    "provider": "--provider",
    "session": "--session",
    "work_pool": "--work-pool",
    "work_queue": "--work-queue",
    "dask_address": "--dask-address",
    "timezone": "--timezone",
    "cron": "--cron",
    "interval": "--interval",
    "rrule": "--rrule",
    "id": "ID",
    "name": "--name",  # (NAME for `models pull/verify`)
}

# environment variables that hold a folder (read by flows/workspace.py and tasks/lib/models.py)
PATH_VARIABLES = ("DEPTHCRAFT_HOME", "DEPTHCRAFT_MODELS_DIR")


def _empty(value: object) -> bool:
    return isinstance(value, str) and not value.strip()


def refuse_empty_paths(args) -> None:
    """Raise :class:`ParameterError` (parameter: the option, e.g. ``--workspace``) when a
    path-valued option or argument of the parsed ``args`` is an empty (or blank) string, or a
    path-valued ``DEPTHCRAFT_*`` environment variable is set but empty."""
    given = vars(args)
    for dest, option in PATH_OPTIONS.items():
        value = given.get(dest)
        values = value if isinstance(value, list) else [value]
        if any(_empty(v) for v in values):
            hint = ("give a file name, e.g. -o out.png" if option == "-o"
                    else f"give a path, or omit {option} for its default" if option.startswith("-")
                    else "give a path")
            raise ParameterError("an empty path (an unset shell variable?)", parameter=option, hint=hint)
    for dest, option in NAMED_OPTIONS.items():
        if dest == "name" and given.get("command") == "models":
            option = "NAME"
        if _empty(given.get(dest)):
            raise ParameterError("an empty value (an unset shell variable?)", parameter=option,
                                 hint=f"give a value, or omit {option} for its default" if option.startswith("-")
                                 else "give a value, or leave it out")
    for name in PATH_VARIABLES:
        if name == "DEPTHCRAFT_HOME" and given.get("workspace"):  # (an empty --workspace is refused above)
            continue  # --workspace is the workspace: the variable is not read
        if name in os.environ and _empty(os.environ[name]):
            raise ParameterError("set but empty", parameter=name,
                                 hint=f"give it a folder, or unset it (unset {name}) to use the default")
