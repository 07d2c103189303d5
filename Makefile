# Two entry points: `make demo` and `make test`. Both set up .venv and node_modules
# when missing (stamp files keep them fast when already there).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP_PY := $(VENV)/.installed
STAMP_JS := node_modules/.installed
PYTEST_ARGS ?=
LOGS    := data/setup

.PHONY: setup browser bench-tools screenshots doctor lock replay demo test lint format contracts devnet-up devnet-down soak bench clean

setup: $(STAMP_PY) $(STAMP_JS)

# Each step prints one line when it works; when it fails, the cause (scripts/step.sh).
# Full logs: data/setup/*.log.
$(STAMP_PY): pyproject.toml requirements.lock
	@test -x $(BIN)/python || scripts/step.sh "python venv ($(PY))" $(LOGS)/venv.log $(PY) -m venv $(VENV)
	@scripts/step.sh "python packages (pinned by requirements.lock)" $(LOGS)/pip.log \
	  $(BIN)/python -m pip install --disable-pip-version-check -c requirements.lock -e '.[dev]'
	@touch $@

# package-lock.json lists every platform's optional anvil package, so plain `npm ci`
# installs exactly the lock on any machine and never rewrites it. If the registry and
# the lock drift apart, step.sh says so in one line with the command that fixes it.
$(STAMP_JS): package.json package-lock.json
	@scripts/step.sh "node packages (npm ci: anvil, solc, contract libraries)" $(LOGS)/npm.log \
	  npm ci --no-audit --no-fund
	@touch $@

# The browser tests (tests/integration/ui/) drive Debian's chromium with Playwright; only
# `make test` needs it, so `make demo` does not install it. Needs root or passwordless sudo
# when /usr/bin/chromium is missing (scripts/install-chromium.sh says so otherwise).
browser:
	@test -x /usr/bin/chromium || scripts/step.sh "chromium (Debian package, for the browser tests)" \
	  $(LOGS)/chromium.log scripts/install-chromium.sh

# Regenerate requirements.lock from a fresh venv after changing pyproject.toml.
lock:
	rm -rf $(LOGS)/lockvenv
	$(PY) -m venv $(LOGS)/lockvenv
	$(LOGS)/lockvenv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	{ sed -n '1,4p' requirements.lock; $(LOGS)/lockvenv/bin/python -m pip freeze --exclude-editable; } > requirements.lock.new
	mv requirements.lock.new requirements.lock
	rm -rf $(LOGS)/lockvenv

# What the project needs from the machine (Python, Node, npm, ports, PostgreSQL).
doctor:
	@$(PY) scripts/doctor.py --for all

demo:
	@$(PY) scripts/doctor.py --for demo --quiet
	@$(MAKE) --no-print-directory setup
	$(BIN)/aggregator demo

test:
	@$(PY) scripts/doctor.py --for test --quiet
	@$(MAKE) --no-print-directory setup browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Re-take the dashboard screenshots in docs/ (docs/dashboard.md) from the browser tests.
screenshots:
	@$(MAKE) --no-print-directory setup browser
	AGG_UI_SCREENSHOTS=docs $(BIN)/python -m pytest -q tests/integration/ui

lint: setup
	$(BIN)/ruff check aggregator chains oracles devkit tests bench scripts
	$(BIN)/ruff format --check aggregator chains oracles devkit tests bench scripts
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format aggregator chains oracles devkit tests bench scripts
	$(BIN)/ruff check --fix aggregator chains oracles devkit tests bench scripts

contracts: $(STAMP_JS)
	node contracts/build.js

devnet-up: setup
	$(BIN)/aggregator devnet up

devnet-down: setup
	$(BIN)/aggregator devnet down

# Chaos soak (docs/reliability.md): AGG_SOAK_S=900 make soak; prints the summary table
# (also written to data/soak/soak.txt) and fails on any invariant violation. With
# AGG_TEST_PG_URL set: two instances on PostgreSQL (AGG_SOAK_INSTANCES, AGG_SOAK_STORE),
# lease holders killed and paused. The 75 s one-instance variant runs in make test.
soak: setup
	$(BIN)/python -m pytest -m soak --run-soak -s $(PYTEST_ARGS)

# Replay the four shipped crash episodes through the devnet and the daemon, once per
# margin model (docs/replay.md; each episode's default hours per step), then the
# per-episode comparison tables and charts into docs/replay.md and docs/replay/.
REPLAY_MODELS ?= standard predictive portfolio var
REPLAY_EPISODES ?= 2023-03 2022-11 2020-03 2022-06
REPLAY_ACCOUNTS ?= 500
# e.g. REPLAY_FLAGS=--reputation: the same runs with [reputation] on (their own reports).
REPLAY_FLAGS ?=
replay: setup
	@for m in $(REPLAY_MODELS); do for e in $(REPLAY_EPISODES); do \
	  $(BIN)/aggregator replay --episode $$e --mode $$m --accounts $(REPLAY_ACCOUNTS) \
	    $(REPLAY_FLAGS) || exit 1; \
	done; done
	$(BIN)/python -m devkit.replay.compare docs/replay --doc docs/replay.md

# The API load benchmark (bench/api_load.py) measures with wrk, so its ratio means the
# same on every machine: installed here when missing (Debian package; needs root or
# passwordless sudo, scripts/install-wrk.sh says so otherwise), and `make bench` fails
# rather than measure with the Python client.
bench-tools:
	@command -v wrk >/dev/null 2>&1 || scripts/step.sh "wrk (Debian package, for the API load benchmark)" \
	  $(LOGS)/wrk.log scripts/install-wrk.sh

bench: setup bench-tools
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) node_modules data/devnet
