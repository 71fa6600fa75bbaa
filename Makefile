# Lookout Edge for AWS. `make dev` runs the whole stack locally, `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install dev dev-seed test lint package bench soak clean

$(STAMP): requirements.txt requirements-tracing.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "pip>=23,<26.3"  # chalice packages with pip and needs <26.3
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

dev: $(STAMP)
	$(PY) -m edgectl dev

dev-seed: $(STAMP)
	$(PY) -m edgectl dev-seed

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest

# The deployable artifact (docs/deploy.md): dist/$(STAGE)/sam.json and a byte-compiled arm64
# deployment.zip without boto3/botocore; prints its size (fails over 3 MB).
STAGE ?= prod
package: $(STAMP)
	$(PY) -m edgectl package --stage $(STAGE)

# Hot paths as ratios against the bare minimum, on moto server and MariaDB (docs/performance.md).
# ~10 minutes; sizes from BENCH_KEYS, BENCH_EDGE_N, BENCH_LOAD_SECONDS, ... Needs wrk (apt).
bench: $(STAMP)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(PY) -m bench

# Full-size reliability run (docs/reliability.md): 50,000 events (NDJSON batches, idempotent retries)
# through a faulty network, then 10,000 fuzzed requests. Loopback only; stops by itself (the soak
# gives up after 45 minutes).
soak: $(STAMP)
	$(PY) -m tests.soak --events 50000
	FUZZ_EXAMPLES=10000 $(PY) -m pytest tests/test_fuzz.py -q --timeout 1800

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache bench/results/*.json
