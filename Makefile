# The README's commands. Each target bootstraps .venv when it is missing, or when pyproject.toml or the compiled scanner changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export COMET_LEDGER_HOME ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(COMET_LEDGER_HOME)/dagster

.PHONY: demo test dev bench clean-data

$(STAMP): pyproject.toml hatch_build.py pipelines/lib/request_logs/_scan.c
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "comet-ledger needs Python 3.11 or newer; set PYTHON=python3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/comet-ledger demo

test: $(STAMP)
	$(BIN)/pytest -q -n 2

dev: $(STAMP)
	$(BIN)/comet-ledger dev

clean-data:
	rm -rf $(COMET_LEDGER_HOME)
