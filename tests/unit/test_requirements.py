"""The pinned sets (`make lock`): current with their sources, consistent with each other, installed
as pinned, and the deployed package refuses a virtualenv that differs from the runtime lock."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest

from edgectl.cmd_package import (
    REQUIREMENTS,
    RUNTIME_LOCK,
    RUNTIME_PROVIDED,
    TRACING_REQUIREMENTS,
    PackageError,
    check_locked,
    closure,
    locked_versions,
    requirement_names,
)

ROOT = Path(__file__).resolve().parents[2]
STACK_LOCK = ROOT / "requirements-stack.lock"
DEV_LOCK = ROOT / "requirements-dev.lock"
# Each source and the lock `make lock` writes from it.
SOURCES = {
    RUNTIME_LOCK: [REQUIREMENTS, TRACING_REQUIREMENTS],
    STACK_LOCK: [ROOT / "requirements-stack.txt"],
    DEV_LOCK: [ROOT / "requirements-dev.txt"],
}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.parametrize("lock", list(SOURCES), ids=lambda path: path.name)
def test_every_requirement_is_pinned_in_its_lock(lock: Path) -> None:
    pins = locked_versions(lock)
    names = {_canonical(name) for source in SOURCES[lock] for name in requirement_names(source)}
    assert names - set(pins) == set(), f"run `make lock`: {lock.name} is older than its sources"


def test_the_locks_agree_and_nest() -> None:
    """What is deployed and what `make dev` runs are both part of what `make test` runs, at one version each."""
    runtime, stack, dev = (locked_versions(path) for path in (RUNTIME_LOCK, STACK_LOCK, DEV_LOCK))
    assert runtime.items() <= dev.items()
    assert stack.items() <= dev.items()


def test_the_virtualenv_holds_the_dev_lock() -> None:
    """`make install` / `make test` install exactly the pins (run `make install` after `make lock`)."""
    wrong = {}
    for name, version in locked_versions(DEV_LOCK).items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            wrong[name] = (installed, version)
    assert wrong == {}


def test_the_package_refuses_versions_the_runtime_lock_does_not_pin() -> None:
    dists = closure(requirement_names(REQUIREMENTS), exclude=RUNTIME_PROVIDED)
    pins = locked_versions(RUNTIME_LOCK)
    check_locked(dists, pins)  # the virtualenv as installed: fine
    with pytest.raises(PackageError, match=r"(?i)pymysql 1\..* \(lock: 0\.1\).*make install"):
        check_locked(dists, {**pins, "pymysql": "0.1"})
    with pytest.raises(PackageError, match=r"not pinned"):
        check_locked(dists, {name: version for name, version in pins.items() if name != "urllib3"})


def test_markers_that_do_not_apply_are_not_pins(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text(
        "# header\nsix==1.17.0\n    # via x\npywin32==312 ; sys_platform == 'win32'\n"
        "networkx==3.6.1 ; python_full_version < '3.0'\nnetworkx==3.7 ; python_full_version >= '3.0'\n"
    )
    assert locked_versions(lock) == {"six": "1.17.0", "networkx": "3.7"}
