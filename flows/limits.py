"""Prefect tag concurrency limits: the recipe's ``concurrency:`` mapping, and which tags are limited.

Each task run may be tagged ``depthcraft``, ``step:<kind>`` and its provider's name
(``classic``, ``onnx``, ``eachsense``), so a recipe's ``concurrency: {eachsense: 4}`` caps the
remote API and ``{onnx: 1}`` a single GPU.
"""

from __future__ import annotations

from typing import Any

from depthcraft.tasks.lib.errors import RecipeError


def concurrency_limits(recipe: Any) -> dict[str, int]:
    """The recipe's ``concurrency:`` mapping, checked (a limit must be at least 1)."""
    limits = dict(getattr(recipe, "concurrency", None) or {})
    for tag, n in limits.items():
        if not isinstance(n, int) or n < 1:
            raise RecipeError(f"concurrency limit for tag {tag!r} must be a whole number >= 1 (got {n!r})",
                              key=f"concurrency.{tag}")
    return limits


def apply_concurrency_limits(recipe: Any) -> dict[str, int]:
    """Create or update one Prefect tag concurrency limit per entry of ``recipe.concurrency``.

    Prefect's ``POST /concurrency_limits/`` is an upsert, so this is idempotent; limits not in
    the recipe are left alone (other recipes or users may rely on them). Needs the Prefect API
    (call after :func:`depthcraft.flows.server.ensure_api`). Returns the limits applied.
    """
    limits = concurrency_limits(recipe)
    if not limits:
        return {}
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for tag, n in limits.items():
            client.create_concurrency_limit(tag=tag, concurrency_limit=n)
    return limits


def read_concurrency_limits(tags: list[str]) -> dict[str, int | None]:
    """The current limit of each tag on the Prefect API (None where none is set)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    out: dict[str, int | None] = {}
    with get_client(sync_client=True) as client:
        for tag in tags:
            try:
                out[tag] = client.read_concurrency_limit_by_tag(tag).concurrency_limit
            except ObjectNotFound:
                out[tag] = None
    return out


def limited_tags() -> set[str]:
    """The tags that have a concurrency limit on the Prefect API now (one request per page).

    Every tag on a task run costs it a lease acquire and release on the API before and after it
    runs, limit or not; on a busy 2-core machine that was about 0.45 s per task run
    (bench/bench_scale.py). The runner can tag a task only with the tags that are limited.
    """
    from prefect.client.orchestration import get_client

    out: set[str] = set()
    with get_client(sync_client=True) as client:
        offset = 0
        while True:
            page = client.read_global_concurrency_limits(limit=200, offset=offset)
            out |= {g.name[4:] for g in page if g.name.startswith("tag:") and g.active}
            if len(page) < 200:
                return out
            offset += len(page)
