"""Globs never pick up depthcraft's own files: outputs fed back as photos, or the workspace.

A recipe whose glob covers its own output folder (``images: ["**/*.png"]`` with the output
below the recipe) would read last run's depth maps as new photos: 1, then 7, then 43 images over
three runs. A glob's matches therefore leave out:

- the recipe's output folders: the output template's fixed part (up to the first ``{image}`` or
  ``{session}``, ``{recipe}`` filled in) under the output root, when that is a folder below it;
- any folder that holds a depthcraft ``manifest.json`` (a run's outputs, wherever written);
- the workspace's folders (its store objects, downloads, work folders, Prefect results).

A path named without a glob is taken as it is. What was left out is said in one notice line
per pattern.
"""

from __future__ import annotations

from pathlib import Path

from depthcraft.tasks.lib.notices import notice


class GlobGuard:
    """Filters the matches of a recipe's globs (see the module docstring)."""

    def __init__(self, recipe, out_root: Path | None, workspace: Path | None):
        self.excluded: list[Path] = []
        if workspace is not None:  # its folders, not the root: a workspace may be the photos' folder
            root = Path(workspace).resolve()
            self.excluded += [root / f for f in ("store", "tmp", "downloads", "prefect", "prefect-results")]
        if out_root is not None:
            fixed = recipe.output.replace("{recipe}", recipe.name)
            fixed = fixed.split("{", 1)[0].rsplit("/", 1)[0] if "{" in fixed else fixed
            d = (Path(out_root) / fixed).resolve()
            if d != Path(out_root).resolve():  # the output root itself may hold the photos
                self.excluded.append(d)
        self._manifest_dirs: dict[Path, bool] = {}

    def _holds_manifest(self, d: Path) -> bool:
        if d not in self._manifest_dirs:
            m = d / "manifest.json"
            ok = False
            if m.is_file():
                try:
                    with open(m, "rb") as f:
                        ok = b'"depthcraft_manifest"' in f.read(4096)
                except OSError:
                    ok = False
            self._manifest_dirs[d] = ok
        return self._manifest_dirs[d]

    def _why(self, hit: Path) -> str | None:
        for d in self.excluded:
            if hit == d or d in hit.parents:
                return str(d)
        for d in hit.parents:
            if self._holds_manifest(d):
                return str(d)
        return None

    def filter(self, pattern: str, hits: list[str]) -> list[str]:
        """``hits`` without the files of excluded folders; one notice line when some were left out."""
        kept, left = [], {}
        for h in hits:
            why = self._why(Path(h).resolve())
            if why is None:
                kept.append(h)
            else:
                left[why] = left.get(why, 0) + 1
        if left:
            where = ", ".join(f"{n} in {d}" for d, n in sorted(left.items()))
            notice(f"{pattern!r}: {sum(left.values())} match(es) left out, depthcraft's own outputs or workspace "
                   f"({where})")
        return kept

