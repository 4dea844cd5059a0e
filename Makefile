# The two commands of the README: `make run` and `make test`. Both create .venv if needed.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# pip's notes about absent local mirrors are noise, not errors.
QUIET_PIP := { grep -v '^WARNING: Location' || true; }

.PHONY: install run test test-systemd bench clean

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

# hotfolder installed and run under a real systemd, in a Debian root booted with
# systemd-nspawn (needs root; installs debootstrap and systemd-container if missing).
test-systemd: install
	command -v systemd-nspawn >/dev/null && command -v debootstrap >/dev/null || \
		apt-get install -y -q systemd-container debootstrap >/dev/null
	$(BIN)/python -m pytest -m systemd --timeout 3600 -s tests/systemd

# The benchmark harness (not part of `make test`): `make bench`, or `make bench ARGS=--quick`
# for a short run. Results go to tests/bench/results/.
bench: install
	$(BIN)/python tests/bench/harness.py $(ARGS)

clean:
	rm -rf $(VENV) *.egg-info
