# Lookout Edge for AWS. `make dev` runs the whole stack locally, `make test` runs every test.
# The Lambda runtime's Python, 3.13 (on PATH or in pyenv), so tests, CI and `make package` run
# what Lambda runs; else python3 (`make dev` works on 3.11+, `make package` refuses anything but 3.13).
ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell for p in python3.13 $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.13*/bin/python3.13 2>/dev/null | sort -rV); \
	do "$$p" -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null && echo "$$p" && exit; done; echo python3)
endif
VENV ?= .venv
PY := $(VENV)/bin/python
# A venv of another Python is made anew: its bytecode and native wheels are that Python's.
VERSION_OF = $(shell $(1) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
ifneq ($(wildcard $(PY)),)
ifneq ($(call VERSION_OF,$(PY)),$(call VERSION_OF,$(PYTHON)))
ifeq ($(findstring n,$(firstword -$(MAKEFLAGS))),)
$(info make: $(VENV) is Python $(call VERSION_OF,$(PY)), not $(call VERSION_OF,$(PYTHON)) ($(PYTHON)): making it anew)
$(shell rm -rf $(VENV))
endif
endif
endif
# What `make dev` needs (requirements-stack.lock), and everything `make test` needs (requirements-dev.lock).
STACK_STAMP := $(VENV)/.stack-installed
DEV_STAMP := $(VENV)/.dev-installed
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

.PHONY: install dev dev-seed test test-fast lint package bench soak lock clean

# Installs go through uv, pinned: it downloads in parallel and keeps a wheel cache (a few seconds
# for the stack's packages where pip took a minute and more on this kind of machine), and prints
# what it resolves, fetches and installs. Taken from PATH, else fetched once per machine with pip
# into ~/.cache/lookout-edge (a cache like pip's and uv's own; delete it at will).
UV_VERSION := 0.13.9
UV_HOME := $(HOME)/.cache/lookout-edge/uv-$(UV_VERSION)
UV := $(or $(shell command -v uv 2>/dev/null),$(UV_HOME)/bin/uv)

$(UV_HOME)/bin/uv:
	@echo "make: fetching the installer, uv $(UV_VERSION), into $(UV_HOME) (pip, once per machine)"
	@$(PYTHON) -m venv $(UV_HOME) && $(UV_HOME)/bin/pip install -q --disable-pip-version-check uv==$(UV_VERSION)

$(PY): | $(UV)
	@echo "make: creating $(VENV) with $$($(PYTHON) --version)"
	@$(UV) venv -q --clear --python $(PYTHON) $(VENV)

$(STACK_STAMP): requirements-stack.lock | $(PY)
	@echo "make: installing what the local stack runs into $(VENV) (requirements-stack.lock; test tools come with make test)"
	@$(UV) pip install --python $(PY) -r requirements-stack.lock
	@touch $@

$(DEV_STAMP): requirements-dev.lock | $(PY)
	@echo "make: installing the stack, tests and tools into $(VENV) (requirements-dev.lock)"
	@$(UV) pip install --python $(PY) -r requirements-dev.lock
	@touch $@ $(STACK_STAMP)

install: $(DEV_STAMP)

dev: $(STACK_STAMP)
	$(PY) -m edgectl dev

dev-seed: $(STACK_STAMP)
	$(PY) -m edgectl dev-seed

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy  # chalicelib/, edgectl/ and app.py; contract/ and runtime/ strict (pyproject.toml [tool.mypy])
	$(VENV)/bin/cfn-lint  # the templates .cfnlintrc lists (the packaged stack: tests/integration/test_deploy.py)

# The edit-test loop (docs/testing.md): tests/unit and tests/functional, everything that runs in
# this process (moto, the app, loopback fakes); no lint, no real servers, no package. About 40 s on
# 2 cores: two pytest-xdist workers per core, as a worker waits on sockets and timers a third of its
# time (FAST_WORKERS=0 for one process). Bytecode is kept (in the venv, whatever
# PYTHONDONTWRITEBYTECODE says): compiling the ~800 modules a worker imports took 5 s of CPU.
FAST_WORKERS ?= $(shell echo $$(( 2 * $$(nproc 2>/dev/null || echo 1) )))
test-fast: export PYTHONDONTWRITEBYTECODE :=
test-fast: export PYTHONPYCACHEPREFIX := $(abspath $(VENV))/pycache
test-fast: $(DEV_STAMP)
	$(PY) -m pytest -n $(FAST_WORKERS) tests/unit tests/functional

# Everything, what CI runs: lint, then tests/unit, tests/functional and tests/integration.
# tests/integration/test_lambda_arm64.py runs the real artifact on an emulated arm64 python3.13 (its root is
# built once into ~/.cache/lookout-edge/lambda-arm64, ~2 minutes; apt, Debian and PyPI needed then).
test: lint
	$(PY) -m edgectl package --stage prod
	$(PY) -m tests.lambda_arm64 prepare
	$(PY) -m pytest

# The deployable artifact (docs/deploy.md): dist/$(STAGE)/sam.json and a byte-compiled arm64
# deployment.zip without boto3/botocore, from the versions pinned in requirements.lock; prints
# its size (fails over 3 MB).
STAGE ?= prod
package: $(DEV_STAMP)
	$(PY) -m edgectl package --stage $(STAGE)

# Hot paths as ratios against the bare minimum, on moto server and MariaDB (docs/performance.md).
# ~10 minutes; sizes from BENCH_KEYS, BENCH_EDGE_N, BENCH_LOAD_SECONDS, ... Needs wrk (apt).
bench: $(DEV_STAMP)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(PY) -m bench

# Full-size reliability run (docs/reliability.md): 50,000 events (NDJSON batches, idempotent retries)
# through a faulty network; the regional outage run (bench/outages.py: the edge region's SQS, keys and
# idempotency tables failing, then stalling, 60 s each); then the fuzz at 10,000 events per door.
# Loopback only; stops by itself (the soak gives up after 45 minutes).
soak: $(DEV_STAMP)
	$(PY) -m bench.soak --events 50000
	$(PY) -m bench.outages --phase-seconds 60
	FUZZ_EVENTS_PER_DOOR=10000 $(PY) -m pytest tests/functional/test_fuzz.py -q --timeout 3600

# Regenerate the three pinned sets after editing a requirements*.txt (needs PyPI): one resolution
# valid on Python 3.11 to 3.13 (--universal), wheels only; the stack and runtime locks are cut from
# the dev lock so all three agree; then each is checked to have wheels for x86_64 and arm64 on 3.11
# and 3.13 (the runtime lock for Lambda's manylinux2014 arm64). `make lock UPGRADE=--upgrade`
# moves every pin to the newest release.
COMPILE = $(UV) pip compile -q --universal --python-version 3.11 --only-binary :all: --custom-compile-command "make lock" $(UPGRADE)
CHECK = $(UV) pip compile -q --only-binary :all: --no-deps -o /dev/null
lock: | $(UV)
	$(COMPILE) requirements-dev.txt -o requirements-dev.lock
	$(COMPILE) -c requirements-dev.lock requirements-stack.txt -o requirements-stack.lock
	$(COMPILE) -c requirements-dev.lock requirements.txt requirements-tracing.txt -o requirements.lock
	for py in 3.11 3.13; do \
		for arch in x86_64 aarch64; do $(CHECK) --python-version $$py --python-platform $$arch-manylinux_2_28 requirements-dev.lock; done; \
		$(CHECK) --python-version $$py --python-platform aarch64-manylinux_2_17 requirements.lock; \
	done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache bench/results/*.json
