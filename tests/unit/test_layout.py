"""The layout's import boundaries: each Lambda's package stands alone on runtime/ and contract/.

Every import is read from the source with `ast` (function-level and relative ones too), so a
lazy import inside a function cannot slip one Lambda's code into another's.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHALICELIB = ROOT / "chalicelib"
LAMBDA_PACKAGES = ("edge", "forward", "keysync", "ship_logs")
SHARED_PACKAGES = ("runtime", "contract")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(path: Path) -> str:
    return module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]


def imported_modules(source: str, package: str) -> set[str]:
    """Every module the source imports, anywhere in it, as absolute dotted names."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.add(prefix)
            found.update(f"{prefix}.{alias.name}" for alias in node.names)
    return found


def chalicelib_package(module: str) -> str | None:
    """`edge` for chalicelib.edge.keys; None outside chalicelib."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "chalicelib" else None


def modules() -> list[Path]:
    return sorted(CHALICELIB.rglob("*.py"))


def test_every_lambda_package_and_shared_package_exists():
    for name in LAMBDA_PACKAGES + SHARED_PACKAGES:
        assert (CHALICELIB / name / "__init__.py").is_file(), name


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_stay_within_the_module_s_own_lambda_and_the_shared_packages(path: Path):
    own = chalicelib_package(module_name(path))
    allowed = set(SHARED_PACKAGES) | ({own} if own in LAMBDA_PACKAGES else set())
    crossings = sorted(
        module
        for module in imported_modules(path.read_text(), package_of(path))
        if chalicelib_package(module) in LAMBDA_PACKAGES and chalicelib_package(module) not in allowed
    )
    assert crossings == [], f"{path.relative_to(ROOT)} imports another Lambda's code: {crossings}"


def test_the_boundary_check_sees_lazy_and_relative_imports():
    """The check itself: function-level, relative and plain imports are all found."""
    source = (
        "def f():\n"
        "    from chalicelib.edge import keys\n"
        "    from ..edge import pipeline\n"
        "    import chalicelib.keysync.job\n"
    )
    found = imported_modules(source, "chalicelib.forward")
    assert {"chalicelib.edge.keys", "chalicelib.edge.pipeline", "chalicelib.keysync.job"} <= found


def test_no_module_is_named_like_a_standard_library_module():
    clashes = sorted(
        str(path.relative_to(ROOT))
        for path in modules()
        for part in [*path.relative_to(CHALICELIB).parent.parts, path.stem]
        if part in sys.stdlib_module_names
    )
    assert clashes == []


def test_only_runtime_builds_clients_and_pools_or_reads_ssm():
    """One client per service, one HTTP pool and one SSM provider per container: built in runtime/ alone."""
    builders = ("PoolManager", "SSMProvider", "create_client", "get_session", "boto3.client", "get_parameter")
    outside = sorted(
        f"{path.relative_to(ROOT)}: {name}"
        for path in modules()
        if chalicelib_package(module_name(path)) != "runtime"
        for name in builders
        if name in path.read_text()
    )
    assert outside == []


TESTS = ROOT / "tests"
TEST_GROUPS = ("unit", "functional", "integration")


def test_every_test_file_sits_in_its_group_and_is_named_once():
    """docs/testing.md: tests/unit, tests/functional (both in `make test-fast`) and tests/integration."""
    files = sorted(TESTS.rglob("test_*.py"))
    misplaced = sorted(str(path.relative_to(ROOT)) for path in files if path.parent.name not in TEST_GROUPS)
    assert misplaced == [], f"put these in tests/unit, tests/functional or tests/integration: {misplaced}"
    names = [path.name for path in files]
    assert sorted({name for name in names if names.count(name) > 1}) == []
    for group in TEST_GROUPS:
        assert (TESTS / group / "__init__.py").is_file(), group


def test_shared_helpers_are_imported_one_way():
    """`from tests.conftest import ...`, never `from conftest import ...` (a second copy of the module)."""
    helpers = {path.stem for path in TESTS.glob("*.py")} - {"__init__"}
    bare = sorted(
        f"{path.relative_to(ROOT)}: {module}"
        for path in [*TESTS.rglob("*.py"), *(ROOT / "bench").rglob("*.py")]
        for module in imported_modules(path.read_text(), "tests")
        if module.split(".")[0] in helpers or module.split(".")[0].startswith("test_")
    )
    assert bare == []
