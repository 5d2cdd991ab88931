# Quick start: `make run` (digestd with demo data and the built-in mail catcher) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	# An editable install leaves digestd's own modules uncompiled: where PYTHONDONTWRITEBYTECODE
	# is set, every command would compile them again (~30 ms of each start-up).
	$(BIN)/python -m compileall -q digestd
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/digestd run --demo

test: $(STAMP)
	scripts/system-deps.sh
	$(BIN)/pytest

# The developer loop: everything but the tests marked slow (CI and `make test` run them all).
test-fast: $(STAMP)
	scripts/system-deps.sh
	$(BIN)/pytest -m "not slow"

# Every Python tree is held to the same bar; mypy reads its file list from pyproject.toml.
LINTED := digestd tests migrations bench

lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
