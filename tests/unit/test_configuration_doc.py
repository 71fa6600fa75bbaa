"""docs/configuration.md against the code: every LOOKOUT_EDGE_* name the deployed code reads has a
row with the code's default, and no row names a variable the code does not read."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from chalicelib.runtime.config import ENV_NAMES, Settings

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"
ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]+)` \|.*\| ([^|]+) \|$")
# os.environ.get("LOOKOUT_EDGE_X", "default") outside the settings module (app.py's deploy-time names).
ENV_GET = re.compile(r'os\.environ\.get\(\s*"(LOOKOUT_EDGE_\w+)"\s*,\s*"([^"]*)"\s*\)')


def documented() -> dict[str, str]:
    rows = [ROW.match(line) for line in DOC.read_text().splitlines()]
    table = {match.group(1): match.group(2).strip() for match in rows if match}
    assert len(table) == sum(1 for match in rows if match), "a variable has two rows"
    return table


def deployed_sources() -> list[Path]:
    return [ROOT / "app.py", *sorted((ROOT / "chalicelib").rglob("*.py"))]


def names_in_code() -> set[str]:
    return {
        name for path in deployed_sources() for name in re.findall(r"LOOKOUT_EDGE_[A-Z0-9_]*[A-Z0-9]", path.read_text())
    }


def code_defaults() -> dict[str, object]:
    """Each variable's default as the code has it: Settings' field default, or the os.environ.get fallback."""
    defaults: dict[str, object] = {ENV_NAMES[f.name]: f.default for f in fields(Settings) if f.name in ENV_NAMES}
    for path in deployed_sources():
        defaults.update(ENV_GET.findall(path.read_text()))
    return defaults


def test_every_lookout_edge_name_the_code_reads_is_documented_and_nothing_else() -> None:
    table = {name for name in documented() if name.startswith("LOOKOUT_EDGE_")}
    assert names_in_code() - table == set(), "read by the code, missing from docs/configuration.md"
    assert table - names_in_code() == set(), "in docs/configuration.md, read by no code"


def test_every_settings_variable_is_documented() -> None:
    assert set(ENV_NAMES.values()) - set(documented()) == set()


def test_documented_defaults_are_the_code_defaults() -> None:
    table = documented()
    wrong = {}
    for name, default in code_defaults().items():
        cell = table[name]
        literal = re.fullmatch(r"`([^`]*)`", cell)
        if default is None:
            ok = literal is None  # "required", "—", "unset: ..." and the like: no value of its own
        elif isinstance(default, (int, float)):
            ok = literal is not None and float(literal.group(1)) == float(default)
        else:
            ok = literal is not None and literal.group(1) == default
        if not ok:
            wrong[name] = (cell, default)
    assert wrong == {}
