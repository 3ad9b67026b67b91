# Quick start: `make run` (the default study) and `make test` (the test suite); each sets itself up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2

.PHONY: run test lint clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

export PATH := $(abspath $(BIN)):$(PATH)

run: $(VENV)/.installed
	$(BIN)/snakemake --cores $(CORES)

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile workflow/
	$(BIN)/snakemake --lint

test: lint
	$(BIN)/pytest

clean:
	rm -rf results .snakemake
