# Two entry points: `make demo` and `make test`. Both set up .venv and node_modules
# when missing (stamp files keep them fast when already there).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP_PY := $(VENV)/.installed
STAMP_JS := node_modules/.installed
PYTEST_ARGS ?=

.PHONY: setup demo test lint format contracts devnet-up devnet-down soak bench clean

setup: $(STAMP_PY) $(STAMP_JS)

$(STAMP_PY): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# The registry here serves only the linux-amd64 build of anvil, so the lock cannot list
# the other platforms' optional packages and `npm ci` refuses it as "out of sync" on
# some npm versions. `npm install` then installs exactly the locked versions (the lock
# is left unchanged; CI checks that with git diff).
$(STAMP_JS): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error || npm install --no-audit --no-fund --loglevel=error
	git diff --exit-code package-lock.json 2>/dev/null || test ! -d .git
	touch $@

demo: setup
	$(BIN)/aggregator demo

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check aggregator chains oracles tests bench scripts
	$(BIN)/ruff format --check aggregator chains oracles tests bench scripts
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format aggregator chains oracles tests bench scripts
	$(BIN)/ruff check --fix aggregator chains oracles tests bench scripts

contracts: $(STAMP_JS)
	node contracts/build.js

devnet-up: setup
	$(BIN)/aggregator devnet up

devnet-down: setup
	$(BIN)/aggregator devnet down

# Chaos soak (docs/reliability.md): AGG_SOAK_S=900 make soak; prints the summary table
# (also written to data/soak/soak.txt) and fails on any invariant violation. The 75 s
# variant runs in make test.
soak: setup
	$(BIN)/python -m pytest -m soak --run-soak -s $(PYTEST_ARGS)

bench: setup
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) node_modules data/devnet
