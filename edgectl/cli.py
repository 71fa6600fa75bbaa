"""`python -m edgectl COMMAND`: the operator CLI. Each command module registers itself.

A command module has `register(subparsers)` adding its parsers, each with
`set_defaults(run=callable)`; the callable takes the parsed args and returns
an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = [
    # one line per module; keep sorted
    "edgectl.cmd_cost",
    "edgectl.cmd_dev",
    "edgectl.cmd_dlq",
    "edgectl.cmd_keys",
    "edgectl.cmd_local",
    "edgectl.cmd_package",
    "edgectl.cmd_readme",
    "edgectl.cmd_render_policies",
    "edgectl.cmd_status",
    "edgectl.cmd_verify",
    "edgectl.receiver",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lookout-edge", description="Lookout Edge for AWS: operator commands")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help(sys.stderr)
        return 2
    return int(args.run(args) or 0)
