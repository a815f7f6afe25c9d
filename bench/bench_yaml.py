"""Recipe YAML loading (flows/yamlsafe.py): the limits and the duplicate-key check on PyYAML's
pure-Python scanner and parser, against the same composer on libyaml's events, side by side in
one run; then refusing a document over the node limit: composed whole and refused complete (as
before), refused by the composer at its first value over, and by the walk over libyaml's events
that builds no node (flows/yamlcount.py, what yamlsafe.load does). Prints two tables; run:
python bench/bench_yaml.py"""

from __future__ import annotations

import os
import time

os.environ["DEPTHCRAFT_YAML_MAX_NODES"] = "1000000"  # (10^5 keys are 2x10^5 values: over the default)

from depthcraft.flows import yamlsafe  # noqa: E402


def _best(loader, text: str, n: int = 3) -> float:
    return _best_of(lambda: yamlsafe._load(loader, text), n)


def _best_of(fn, n: int = 3) -> float:
    best = float("inf")
    for _ in range(n):
        t = time.perf_counter()
        try:
            fn()
        except yamlsafe.YamlLimitError:
            pass
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
    refused = {k: cases[k] for k in ("10^5 keys", "10^5 int keys (flow)")}
    print(f"\n{'refused (100,000 values)':<24}{'composed whole (s)':>20}{'composer (s)':>14}{'load (s)':>10}{'ratio':>8}")
    for name, text in refused.items():
        whole = _best(yamlsafe._FastLimitedSafeLoader, text)  # (limit still raised: composed complete)
        os.environ["DEPTHCRAFT_YAML_MAX_NODES"] = str(yamlsafe.MAX_NODES)
        early = _best_of(lambda: yamlsafe._load(yamlsafe._FastLimitedSafeLoader, text))
        walk = _best_of(lambda: yamlsafe.load(text))
        os.environ["DEPTHCRAFT_YAML_MAX_NODES"] = "1000000"
        print(f"{name:<24}{whole:>20.3f}{early:>14.3f}{walk:>10.3f}{whole / walk:>8.1f}")


if __name__ == "__main__":
    main()
