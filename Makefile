PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test test-fast lint bench mutants clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.requirements: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.requirements-dev: requirements.txt requirements-dev.txt $(VENV)/.requirements
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

VENV_MCP2 := .venv-mcp2

$(VENV_MCP2)/.requirements: requirements-mcp2.txt
	$(PYTHON) -m venv $(VENV_MCP2)
	$(VENV_MCP2)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_MCP2)/bin/python -m pip install --quiet -r requirements-mcp2.txt
	touch $@

## Serve on http://127.0.0.1:8000 (waitress, foreground)
run: $(VENV)/.requirements
	$(BIN)/python wsgi.py

## Install the dev requirements and run the whole suite
test: lint $(VENV_MCP2)/.requirements
	$(BIN)/python -m pytest -q -n 2

## The tiers without processes (tests/unit, app, http): under a minute, no lint
test-fast: $(VENV)/.requirements-dev
	$(BIN)/python -m pytest -q -n 2 tests/unit tests/app tests/http

## Our endpoints beside a bare Flask route on waitress, at 100 and 10,000 clients + grants
bench: $(VENV)/.requirements-dev
	$(BIN)/python scripts/bench.py

## Break each security rule in tests/mutants.toml in turn; fails naming any mutant no test notices
mutants: $(VENV)/.requirements-dev
	$(BIN)/python scripts/mutants.py

## ruff, and mypy over app/, wsgi.py and scripts/
lint: $(VENV)/.requirements-dev
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(VENV_MCP2) .pytest_cache .ruff_cache
