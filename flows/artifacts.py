"""What a run made, shown in the Prefect UI: artifacts published with each flow run.

- a **markdown** summary, key ``depthcraft-<recipe slug>`` (so the latest is one click away
  under *Artifacts*), with the gallery's facts, small previews of the outputs and the failures;
- a **table** of outputs, key ``depthcraft-<recipe slug>-outputs``: image, step, file, size,
  sha256 prefix, cached;
- a **progress** artifact per long step run (video frames), attached to its task run.

Previews are ``data:`` URI JPEGs inside the markdown: the Prefect UI renders markdown images
and its server sets no Content-Security-Policy, so they show in the artifact page without
the UI reaching any file of the run (see docs/viewing.md for what works where).
"""

from __future__ import annotations

import base64
import contextvars
import io
import re
import threading
import time
from pathlib import Path

from .gallery import _facts, _size, output_records

PREVIEW = 128  # px, longest side of a preview in the markdown
MAX_PREVIEWS = 24
MAX_PREVIEW_BYTES = 256_000  # all previews of one summary together


def slug(name: str) -> str:
    """An artifact key part: lowercase letters, digits and dashes (Prefect's rule for keys)."""
    s = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return s[:60] or "recipe"


def _preview_uri(path: Path) -> str | None:
    """A small JPEG of a gallery thumbnail as a data URI."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((PREVIEW, PREVIEW), Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=72, optimize=True)
    except Exception:  # noqa: BLE001 - a preview is a nicety
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _md(text: str) -> str:
    """Escape text for a markdown table cell or line."""
    return re.sub(r"([\\`*_\[\]|<>#])", r"\\\1", str(text)).replace("\n", " ")


def summary_markdown(m: dict, folder: str | Path, *, previews: bool = True) -> str:
    """The markdown summary of manifest ``m`` (gallery and manifest in ``folder``)."""
    from .gallery import thumbnail

    folder = Path(folder)
    lines = [f"# {_md(m['recipe']['name'])}", "", "| | |", "|---|---|"]
    lines += [f"| {_md(k)} | {_md(v)} |" for k, v in _facts(m)]
    index = folder / "index.html"
    lines += [f"| gallery | `{index}` |" if index.exists() else "", ""]
    recs = output_records(m)
    budget, shown = MAX_PREVIEW_BYTES, 0
    for inp in m.get("inputs", []):
        name = inp["name"]
        lines += [f"## {_md(name)}", ""]
        mine = [r for r in recs if r["image"] == name]
        pics = []  # (caption, data URI)
        for r in mine:
            p = Path(r["path"])
            if not previews or shown >= MAX_PREVIEWS or not p.exists() or p.name.endswith(".json"):
                continue
            t = thumbnail(p, folder, r["sha256"])
            uri = _preview_uri(t) if t else None
            if uri and len(uri) <= budget:
                budget -= len(uri)
                shown += 1
                pics.append((f"{r['step']} · {r['name']}", uri))
        # a table lays the previews out side by side (the UI stacks bare images)
        for i in range(0, len(pics), 6):
            row = pics[i:i + 6]
            lines += ["| " + " | ".join(_md(c) for c, _ in row) + " |", "|" + "---|" * len(row),
                      "| " + " | ".join(f"![{_md(c)}]({u})" for c, u in row) + " |", ""]
        if mine:
            lines += ["| step | output | file | cached |", "|---|---|---|---|"]
            lines += [f"| {_md(r['step'])} | {_md(r['name'])} | `{_md(Path(r['path']).name)}` | "
                      f"{'yes' if r['cached'] else 'no'} |" for r in mine]
            lines.append("")
        for f in m.get("failures", []):
            if f.get("image") == name:
                lines.append(f"- **failed** {_md(f.get('step') or 'input')}: {_md(f.get('error'))}")
        lines.append("")
    return "\n".join(lines).strip() + "\n"


def output_table(m: dict, folder: str | Path) -> list[dict]:
    """One row per output: image, step, file (relative to the manifest), size, sha256 prefix, cached."""
    import os

    rows = []
    for r in output_records(m):
        p = Path(r["path"])
        rows.append({"image": r["image"], "step": r["step"], "file": os.path.relpath(p, folder),
                     "size": _size(p.stat().st_size) if p.exists() else "missing",
                     "sha256": r["sha256"][:12], "cached": r["cached"]})
    return rows


def publish_run(m: dict, folder: str | Path) -> dict[str, str]:
    """Create the summary and table artifacts of the current flow run. Outside a flow run
    (a test of the runner alone) nothing is published. Returns {kind: artifact id}."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is None:
        return {}
    key = f"depthcraft-{slug(m['recipe']['name'])}"
    failed = len(m.get("failures", []))
    desc = (f"{m['recipe']['name']}: {len(m.get('inputs', []))} input(s), {len(m.get('steps', []))} step run(s)"
            + (f", {failed} failed" if failed else ""))
    md = create_markdown_artifact(markdown=summary_markdown(m, folder), key=key, description=desc)
    table = create_table_artifact(table=output_table(m, folder), key=f"{key}-outputs",
                                  description=f"outputs of {m['recipe']['name']}")
    return {"markdown": str(md), "table": str(table)}


class ProgressArtifact:
    """A Prefect progress artifact fed by a step's ``(done, total)`` callback.

    Created on the first report (so only steps that report get one), attached to the task run
    it was made for by id (the callback may be called from any thread), updated at most every
    ``interval`` seconds and at the end.

    The API calls run on a thread of their own and the step never waits for them: with the
    server gone, Prefect's client retries each call for minutes, and a video render that
    waited for its progress bar kept the command from ending (80 s after the server died).
    Only the final value is waited for, at most ``final_wait`` seconds, and not at all once
    the server is known to be gone (:mod:`depthcraft.flows.serverwatch`).
    """

    def __init__(self, label: str, flow_run_id, task_run_id, interval: float = 0.5, final_wait: float = 2.0):
        self.label, self.flow_run_id, self.task_run_id = label, flow_run_id, task_run_id
        self.interval, self.final_wait = interval, final_wait
        self.id = None
        self.last = 0.0
        self.lock = threading.Lock()
        self.failed = False
        self._pending: tuple[int, int] | None = None
        self._wake = threading.Event()
        self._sent = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self, done: int, total: int) -> None:
        from . import serverwatch

        if self.failed or total <= 0 or serverwatch.lost():
            return
        now = time.monotonic()
        if done < total and now - self.last < self.interval:
            return
        with self.lock:
            self.last = now
            self._pending = (done, total)
            self._sent.clear()
            if self._thread is None:
                # (in the caller's context: Prefect's settings and client live in context variables)
                self._thread = threading.Thread(target=contextvars.copy_context().run, args=(self._send_loop,),
                                                name="depthcraft-progress-artifact", daemon=True)
                self._thread.start()
        self._wake.set()
        if done >= total:
            self._sent.wait(self.final_wait)

    def _send_loop(self) -> None:
        from . import serverwatch

        while not self.failed:
            self._wake.wait()
            self._wake.clear()
            with self.lock:
                item, self._pending = self._pending, None
            if item is None:
                continue
            if serverwatch.lost():
                self.failed = True
                break
            try:
                self._send(*item)
            except Exception:  # noqa: BLE001 - progress is informative; the step goes on
                self.failed = True
            finally:
                if self._pending is None:
                    self._sent.set()
            if item[0] >= item[1]:
                break
        self._sent.set()

    def _send(self, done: int, total: int) -> None:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import ArtifactCreate, ArtifactUpdate

        pct = round(100.0 * min(done, total) / total, 1)
        with get_client(sync_client=True) as client:
            if self.id is None:
                a = client.create_artifact(ArtifactCreate(
                    type="progress", data=pct, description=f"{self.label}: {done}/{total}",
                    flow_run_id=self.flow_run_id, task_run_id=self.task_run_id))
                self.id = a.id
            else:
                client.update_artifact(self.id, ArtifactUpdate(data=pct, description=f"{self.label}: {done}/{total}"))


def with_progress_artifact(label: str, inner=None):
    """``inner`` (a ``(done, total)`` callback or None) plus a progress artifact when called
    inside a Prefect task run; ``inner`` unchanged otherwise."""
    try:
        from prefect.context import TaskRunContext

        ctx = TaskRunContext.get()
    except Exception:  # noqa: BLE001
        ctx = None
    if ctx is None:
        return inner
    art = ProgressArtifact(label, ctx.task_run.flow_run_id, ctx.task_run.id)

    def report(done: int, total: int) -> None:
        art(done, total)
        if inner is not None:
            inner(done, total)

    return report
