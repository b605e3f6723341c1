# The two commands that matter: `make run` (whole stack up) and `make test` (whole suite).
SHELL := /bin/bash
PY ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	if command -v $$p >/dev/null && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then \
	echo $$p; break; fi; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint venv lock bench clean

$(STAMP): pyproject.toml constraints.txt
	@if [ -z "$(PY)" ]; then echo "Nexus needs Python >= 3.11: Debian 'apt-get install python3 python3-venv'," \
		"Amazon Linux 2023 'dnf install python3.11'" >&2; exit 1; fi
	@$(PY) -m venv --help >/dev/null 2>&1 || { echo "python venv module missing: 'apt-get install python3-venv'" >&2; exit 1; }
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $@

venv: $(STAMP)

run: venv
	$(BIN)/nexus dev up

test: venv
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check daemons tests bench
	$(BIN)/ruff format --check daemons tests bench || true
	$(BIN)/mypy

# Refresh the lock after changing dependencies in pyproject.toml.
lock: venv
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^-e ' > constraints.txt

bench: venv
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .nexus .pytest_cache .mypy_cache .ruff_cache
