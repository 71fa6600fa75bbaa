"""Everything one Lambda container keeps between invocations, in one place, with one `reset()`.

A warm container reuses its settings, AWS clients, HTTP pools, SSM provider and caches;
a new container starts from nothing. Each of those is a `@per_container` function: built
on first use (nothing at import, which keeps cold starts short) and held here, so
`reset()` (tests) is exactly "a new container".
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar, cast

T = TypeVar("T")


class Container:
    """Lazily built per-container values, keyed by who built them and with which arguments."""

    def __init__(self) -> None:
        self._values: dict[Hashable, Any] = {}
        # Re-entrant: building one value may build another (a client needs the session).
        self._lock = threading.RLock()

    def get(self, key: Hashable, build: Callable[[], T]) -> T:
        """The value held under `key`, built once (also when threads ask at the same time)."""
        # One dict holds values of every type; `build` fixed this key's type when it ran.
        try:
            return cast(T, self._values[key])
        except KeyError:
            pass
        with self._lock:
            if key not in self._values:
                self._values[key] = build()
            return cast(T, self._values[key])

    def peek(self, key: Hashable) -> Any | None:
        """The value under `key` if it was built, else None; never builds."""
        return self._values.get(key)

    def forget(self, matches: Callable[[Hashable], bool]) -> None:
        """Drop the values whose key matches."""
        with self._lock:
            for key in [key for key in self._values if matches(key)]:
                del self._values[key]

    def reset(self) -> None:
        """Drop everything: the next use builds afresh, as in a new container."""
        with self._lock:
            self._values.clear()


CONTAINER = Container()


class PerContainer(Generic[T]):
    """A function whose results live in the container, one per argument tuple (like functools.cache)."""

    def __init__(self, build: Callable[..., T]) -> None:
        functools.update_wrapper(self, build)
        self._build = build
        self._name = f"{build.__module__}.{build.__qualname__}"

    def __call__(self, *args: Hashable) -> T:
        return CONTAINER.get((self._name, args), lambda: self._build(*args))

    def peek(self, *args: Hashable) -> T | None:
        """The value for these arguments if it exists; never builds it."""
        return CONTAINER.peek((self._name, args))

    def cache_clear(self) -> None:
        """Forget this function's values only (a test that changed the environment re-reads settings)."""
        CONTAINER.forget(lambda key: isinstance(key, tuple) and key[0] == self._name)


def per_container(build: Callable[..., T]) -> PerContainer[T]:
    """Decorator: build on first call, keep for the container's life, drop on `reset()`.

    Positional arguments only; they must be hashable.
    """
    return PerContainer(build)


def reset() -> None:
    """What a new Lambda container starts from (tests call this between tests)."""
    CONTAINER.reset()
