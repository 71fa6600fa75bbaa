"""`python -m edgectl readme [--check]`: the README's generated blocks, from committed files only.

A block sits between `<!-- generated: NAME (python -m edgectl readme) -->` and `<!-- end: NAME -->`;
BLOCKS maps each NAME to the function that writes its text. Figures come from the reference bench
results in bench/reference/ (never a local run, so every clone regenerates the same README) and
from edgectl/prices.json. A new row of the cost table is one COST_ROWS entry; a new block is one
BLOCKS entry and its two markers in README.md. `tests/unit/test_readme.py` fails when the README
differs from what this writes.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from edgectl.cmd_cost import (
    FRONT_DOORS,
    REFERENCE_RESULTS,
    ROOT,
    VOLUMES,
    CostInputs,
    Mix,
    estimate,
    fixed_monthly,
    load_prices,
    measured_with_sources,
    mix_cost,
)

README = ROOT / "README.md"
BLOCK = re.compile(
    r"(<!-- generated: (?P<name>[\w-]+) \(python -m edgectl readme\) -->\n)(?P<body>.*?)(<!-- end: (?P=name) -->)", re.S
)

# The cost table's rows: a label and what differs from CostInputs' defaults (1 KB events, one per request).
COST_ROWS: list[tuple[str, dict[str, Any]]] = [
    ("REST API, as `chalice deploy` creates it", {"front_door": "rest"}),
    ("HTTP API (`FrontDoor=http`)", {"front_door": "http"}),
    ("Lambda function URL (`FrontDoor=url`)", {"front_door": "url"}),
    ("REST API, every project rate-limited", {"front_door": "rest", "rate_limited_share": 1.0}),
    ("HTTP API, every project rate-limited", {"front_door": "http", "rate_limited_share": 1.0}),
    ("function URL, every project rate-limited", {"front_door": "url", "rate_limited_share": 1.0}),
    (
        "function URL, rate-limited, 20 % with `Idempotency-Key`",
        {"front_door": "url", "rate_limited_share": 1.0, "idempotency_share": 0.2},
    ),
]
DOOR_NAMES = {"rest": "REST API", "http": "HTTP API", "url": "function URL"}


def _relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def reference_section(name: str) -> tuple[Path, dict[str, Any]]:
    """The newest reference result with section `name`, and that section (with the run's machine)."""
    for path in sorted(REFERENCE_RESULTS.glob("bench-*.json"), key=lambda path: path.name, reverse=True):
        result = json.loads(path.read_text())
        section = result.get("sections", {}).get(name)
        if section and "error" not in section:
            return path, {**section, "machine": result["machine"]}
    raise LookupError(f"no reference bench result in {_relative(REFERENCE_RESULTS)} has the {name!r} section")


def cost_block() -> str:
    measured, sources = measured_with_sources(REFERENCE_RESULTS)
    prices = load_prices()
    lines = [
        "| 1 KB events, one per request | AWS $ / 1M events, before egress | egress to Lookout "
        "| Cloudflare $ / 1M events |",
        "|---|---|---|---|",
    ]
    for label, changes in COST_ROWS:
        result = estimate(replace(CostInputs(**measured), **changes), prices)
        lines.append(f"| {label} | {result.aws_total:.3f} | {result.aws_egress:.3f} | {result.cloudflare_total:.3f} |")
    fixed = fixed_monthly(prices)
    aws_fixed = "; ".join(f"{name} {dollars:.2f}" for name, dollars in fixed.aws.items())
    cf_fixed = "; ".join(f"{name} {dollars:.2f}" for name, dollars in fixed.cloudflare.items())
    lines += [
        "",
        f"Fixed, a month whatever the traffic: AWS **${sum(fixed.aws.values()):.2f}** ({aws_fixed}); "
        f"Cloudflare **${sum(fixed.cloudflare.values()):.2f}** ({cf_fixed}).",
        "",
    ]
    mix = Mix()
    volumes = " | ".join(f"{volume // 1_000_000} M events a month" for volume in VOLUMES)
    lines += [
        f"A mix ({mix.rate_limited_share:.0%} of requests rate-limited, {mix.idempotency_share:.0%} keyed, "
        f"{mix.ndjson_share:.0%} of events in NDJSON requests of {mix.ndjson_lines}), $ per 1M events all in "
        "(egress and the fixed costs included): `python -m edgectl cost --mix`",
        "",
        f"| | {volumes} |",
        "|---|" + "---|" * len(VOLUMES),
    ]
    rows = {
        door: [mix_cost(replace(CostInputs(**measured), front_door=door), mix, v, prices, fixed) for v in VOLUMES]
        for door in FRONT_DOORS
    }
    for door, costs in rows.items():
        lines.append(f"| AWS, {DOOR_NAMES[door]} | " + " | ".join(f"{c.aws_all_in:.2f}" for c in costs) + " |")
    any_door = next(iter(rows.values()))
    lines.append("| Cloudflare | " + " | ".join(f"{c.cloudflare_all_in:.2f}" for c in any_door) + " |")
    dates = sorted({json.loads(path.read_text())["machine"]["date"][:10] for path in sources})
    lines += [
        "",
        f"`python -m edgectl cost` on a fresh clone prints these, from the reference bench of {', '.join(dates)} "
        f"({', '.join(_relative(path) for path in sources)}) and the list prices of `edgectl/prices.json` "
        f"({prices['as_of']}; each price's source and date are in the file).",
    ]
    return "\n".join(lines)


def first_202_block() -> str:
    path, section = reference_section("first_202")
    machine = section["machine"]
    load = machine.get("load_average", ["?"])[0]
    cache = "warm" if section.get("uv_cache_warm") else "empty"
    return (
        f"From `git clone` to the first 202: **{section['seconds']:.1f} s**, of which "
        f"{section['install_seconds']:.1f} s installing (uv's wheel cache {cache}), on "
        f"{machine['date'][:10]}'s reference machine ({machine['nproc']} CPUs {machine['cpu']} shared, "
        f"load {load}, Python {section.get('python', machine['python'])}). `make bench` measures it: "
        f"{_relative(path)}."
    )


BLOCKS: dict[str, Callable[[], str]] = {"cost": cost_block, "first-202": first_202_block}


def render(text: str) -> str:
    """`text` with every generated block rewritten; an unknown block name is an error."""

    def fill(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in BLOCKS:
            raise KeyError(f"README block {name!r} has no generator in edgectl/cmd_readme.py BLOCKS")
        return f"{match.group(1)}{BLOCKS[name]().rstrip()}\n{match.group(4)}"

    return BLOCK.sub(fill, text)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("readme", help="rewrite the README's generated blocks (cost table, first 202)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if the README is not current")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    current = README.read_text()
    fresh = render(current)
    if args.check:
        if fresh != current:
            print("README.md: generated blocks are stale; run `python -m edgectl readme`", file=sys.stderr)
            return 1
        return 0
    README.write_text(fresh)
    print("README.md: generated blocks " + ("rewritten" if fresh != current else "already current"))
    return 0
