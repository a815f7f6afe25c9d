"""Recipe YAML loading (flows/yamlsafe.py): the limits and the duplicate-key check on PyYAML's
pure-Python scanner and parser, against the same composer on libyaml's events, side by side in
one run. Prints a table; run: python bench/bench_yaml.py"""

from __future__ import annotations

import os
import time

os.environ.setdefault("DEPTHCRAFT_YAML_MAX_NODES", "1000000")  # (10^5 keys are 2x10^5 values: over the default)

from depthcraft.flows import yamlsafe  # noqa: E402


def _best(loader, text: str, n: int = 3) -> float:
    best = float("inf")
    for _ in range(n):
        t = time.perf_counter()
        yamlsafe._load(loader, text)
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    cases = {
        "10^4 keys": "\n".join(f"k{i}: {i}" for i in range(10_000)),
        "10^5 keys": "\n".join(f"k{i}: {i}" for i in range(100_000)),
        "10^5 int keys (flow)": "{" + ", ".join(f"{i}: {i}" for i in range(100_000)) + "}",
        "a recipe x 200 steps": "name: r\ninputs: {images: [a.png]}\nsteps:\n" + "".join(
            f"  - {{id: s{i}, uses: stereo, from: d, with: {{divergence: 2, layout: sbs}}}}\n" for i in range(200)),
    }
    print(f"{'document':<24}{'pure Python (s)':>18}{'libyaml events (s)':>20}{'ratio':>8}")
    for name, text in cases.items():
        slow = _best(yamlsafe.LimitedSafeLoader, text)
        fast = _best(yamlsafe._FastLimitedSafeLoader, text)
        print(f"{name:<24}{slow:>18.3f}{fast:>20.3f}{slow / fast:>8.1f}")


if __name__ == "__main__":
    main()
