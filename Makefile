# Quick start: `make run` (the default study) and `make test` (the test suite); each sets itself up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2

.PHONY: run test lint clean

# `make run` installs the package alone; `make test` adds the dev tools and the numerical references
# (transformers, fla, triton: minutes of a cold install that the default study does not need).
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

export PATH := $(abspath $(BIN)):$(PATH)

run: $(VENV)/.installed
	$(BIN)/snakemake --cores $(CORES)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile workflow/
	$(BIN)/snakemake --lint

# pytest-xdist: a test file stays on one worker (module fixtures, the SLURM cluster). One worker per core,
# plus one: the SLURM tests' worker spends most of its ~8 minutes waiting for the cluster's jobs.
WORKERS ?= $(shell echo $$(($(CORES) + 1)))
test: lint
	$(BIN)/pytest -n $(WORKERS) --dist loadfile --durations=15

clean:
	rm -rf results .snakemake
