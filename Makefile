# The two commands of the README: `make run` and `make test`. Both create .venv if needed.
# `make check` is the quick loop: lint, types and the fast tier of tests.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# pip's notes about absent local mirrors are noise, not errors.
QUIET_PIP := { grep -v '^WARNING: Location' || true; }

# xdist workers for `make test`: the daemon tests spend most of their time waiting.
JOBS ?= 3
FAST := not daemon and not redis and not systemd and not slow

.PHONY: install run lint check test test-systemd bench clean

# `make run` installs hotfolder alone; the test, lint and bench targets add the test extras.
$(VENV)/.installed-run: pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "hotfolder needs Python >= 3.11"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip 2>&1 | $(QUIET_PIP)
	$(BIN)/python -m pip install --quiet -e . 2>&1 | $(QUIET_PIP)
	touch $@

$(VENV)/.installed: $(VENV)/.installed-run
	$(BIN)/python -m pip install --quiet -e '.[test]' 2>&1 | $(QUIET_PIP)
	touch $@

install: $(VENV)/.installed

run: $(VENV)/.installed-run
	$(BIN)/hotfolder --config config.toml run

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

check: lint
	$(BIN)/python -m pytest -q -m '$(FAST)'

test: install
	$(BIN)/python -m pytest -n $(JOBS) --dist loadgroup --durations=15

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
