# The two commands of the README: `make run` and `make test`. Both create .venv if needed.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# pip's notes about absent local mirrors are noise, not errors.
QUIET_PIP := { grep -v '^WARNING: Location' || true; }

.PHONY: install run test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "hotfolder needs Python >= 3.11"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip 2>&1 | $(QUIET_PIP)
	$(BIN)/python -m pip install --quiet -e '.[test]' 2>&1 | $(QUIET_PIP)
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/hotfolder --config config.toml run

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python tests/bench/bench_cli.py

clean:
	rm -rf $(VENV) *.egg-info
