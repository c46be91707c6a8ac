"""Run one benchmark script from two checkouts in alternation and print each figure's ratio, as JSON lines.

    python bench/side_by_side.py --base /work/main --base-python python3 --rounds 4 -- bench/engine_bench.py --quick

The script (a path relative to each checkout) runs ``--rounds`` times per checkout, in ABBA order (base, head,
head, base, ...) so that drift of a shared machine's load falls on both sides alike. Lines are matched by
their non-numeric fields (``bench``, ``store``...); for every numeric field the medians of both sides and
``ratio`` = head / base are printed (for a time, below 1 is faster; for a rate, above 1 is faster).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any


def run(checkout: Path, python: str, script: list[str]) -> list[dict[str, Any]]:
    done = subprocess.run(
        [python, *script], cwd=checkout, capture_output=True, text=True, check=True, timeout=3600
    )
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def key_of(line: dict[str, Any]) -> str:
    """What names a figure: its text fields (a verdict like ``ok`` may differ between runs of one figure)."""
    return json.dumps({k: v for k, v in line.items() if isinstance(v, str)}, sort_keys=True)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the checkout to compare against")
    parser.add_argument("--base-python", default=sys.executable)
    parser.add_argument("--head", default=".", help="this checkout (default: the current directory)")
    parser.add_argument("--head-python", default=sys.executable)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("script", nargs=argparse.REMAINDER, help="-- SCRIPT [ARGS...]")
    args = parser.parse_args()
    script = args.script[1:] if args.script[:1] == ["--"] else args.script
    sides = {"base": (Path(args.base), args.base_python), "head": (Path(args.head), args.head_python)}
    figures: dict[str, dict[str, dict[str, list[float]]]] = {}
    for round_ in range(args.rounds):
        order = ("base", "head") if round_ % 2 == 0 else ("head", "base")
        for side in order:
            checkout, python = sides[side]
            for line in run(checkout, python, script):
                fields = figures.setdefault(key_of(line), {})
                for name, value in line.items():
                    if _number(value):
                        fields.setdefault(name, {"base": [], "head": []})[side].append(float(value))
    for key, fields in figures.items():
        out: dict[str, Any] = json.loads(key)
        for name, values in fields.items():
            if not values["base"] or not values["head"]:
                continue
            base, head = statistics.median(values["base"]), statistics.median(values["head"])
            out[name] = {"base": base, "head": head, "ratio": round(head / base, 3) if base else None}
        out["rounds"] = args.rounds
        print(json.dumps(out))


if __name__ == "__main__":
    main()
