"""Per-container state (runtime/container.py): built on first use, kept, and dropped by one reset()."""

import subprocess
import sys

from chalicelib.runtime import container
from chalicelib.runtime.container import per_container
from edgectl.devstack import ROOT

built: list[tuple] = []


@per_container
def thing(*args):
    built.append(args)
    return object()


def test_built_once_per_arguments_until_reset():
    built.clear()
    first = thing("a")
    assert thing("a") is first and thing("b") is not first
    assert built == [("a",), ("b",)]
    container.reset()
    assert thing("a") is not first and built[-1] == ("a",)


def test_peek_never_builds_and_cache_clear_forgets_one_function_only():
    built.clear()
    assert thing.peek("p") is None and built == []
    value = thing("p")
    assert thing.peek("p") is value

    @per_container
    def other():
        return object()

    kept = other()
    thing.cache_clear()
    assert thing.peek("p") is None and other() is kept


def test_the_forwarder_token_flag_and_the_caches_are_container_state(aws):
    from chalicelib.edge.keys import key_cache
    from chalicelib.edge.remote_config import config_cache
    from chalicelib.forward.sinks.lookout import token_state

    token_state().refresh = True
    cache, configs = key_cache(), config_cache()
    container.reset()
    assert token_state().refresh is False
    assert key_cache() is not cache and config_cache() is not configs


def test_importing_the_app_builds_nothing():
    """Cold start: settings, clients, pools and caches wait for the first request that needs them."""
    code = "import app; from chalicelib.runtime.container import CONTAINER; print(len(CONTAINER._values))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "0"
