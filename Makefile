# Every target builds the local .venv on demand, so a fresh clone needs nothing but python3 (>= 3.11).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint run simulate check-config bench clean

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

clean:
	rm -rf $(VENV) build *.egg-info
