# Every target builds the local .venv on demand, so a fresh clone needs nothing but python3 (>= 3.11).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-openclaw lint run simulate check-config bench clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)  ## the main job without Discord: simulated fleet + status
	$(BIN)/atomizer-hq demo

test: $(STAMP)  ## ruff + the whole suite
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

# Opt-in, not part of `make test`: Node 24 and both OpenClaw releases from npm into a cache outside the repo
# (about 2 GB; ATOMIZER_OPENCLAW_CACHE moves it), then the client's contract tests against real gateways.
test-openclaw: $(STAMP)  ## the gateway client and a delegation against real OpenClaw 2026.9.6 and 2026.2.12
	export ATOMIZER_OPENCLAW_CACHE="$${ATOMIZER_OPENCLAW_CACHE:-$$HOME/.cache/atomizer-hq/openclaw}" && \
	bash scripts/openclaw-install.sh && \
	$(BIN)/python -m pytest tests/conformance -p no:cacheprovider -o addopts= -v -rs

lint: $(STAMP)
	$(BIN)/ruff check .

run: $(STAMP)  ## the real bot, configured from .env
	@test -f .env || { echo "no .env here: cp config/atomizer.env.example .env, fill it in, then make run" >&2; exit 2; }
	$(BIN)/atomizer-hq --env-file .env check-config --for run
	$(BIN)/atomizer-hq --env-file .env run

simulate: $(STAMP)
	$(BIN)/atomizer-hq simulate

check-config: $(STAMP)
	$(BIN)/atomizer-hq check-config

# Not part of `make test`: figures live in bench/, never in timed unit tests (bench/README.md; about 2.5 minutes).
bench: $(STAMP)  ## the benchmarks: one table on stdout, the figures in bench/results.json
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) build *.egg-info
