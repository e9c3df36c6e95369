# The README's commands. Each target bootstraps .venv when it is missing, or when pyproject.toml or the compiled scanner changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The FinOps Foundation's FOCUS validator, in a venv of its own (Python 3.12): tests/focus_validator_env.py
FOCUS_STAMP := .venv-focus/.installed-stamp
export COMET_LEDGER_HOME ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(COMET_LEDGER_HOME)/dagster
# Three workers on two cores: part of the suite's time is spent waiting (on Dagster daemons, servers,
# subprocesses), which a third worker fills (CPU 175 % with -n 3; 10 min 13 s against 10 min 28 s with -n 2).
TEST_WORKERS ?= 3

.PHONY: demo test test-clocks dev bench clean-data

$(STAMP): pyproject.toml hatch_build.py pipelines/lib/request_logs/_scan.c
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "comet-ledger needs Python 3.11 or newer; set PYTHON=python3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,sdk,postgres]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/comet-ledger demo

# Builds .venv-focus when missing or when its pins changed; if it cannot, it says why and the FOCUS
# validator's test fails with that reason while the rest of the suite runs.
$(FOCUS_STAMP): tests/requirements-focus-validator.txt tests/focus_validator_env.py
	@$(PYTHON) tests/focus_validator_env.py

test: $(STAMP) $(FOCUS_STAMP)
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist worksteal

# The same suite at shifted clocks (Debian's faketime), each "instant,zone": the last minutes of a year,
# the night a zone with DST falls back (the process's own TZ), a leap day. No test may read the wall
# clock (conftest.py pins the product's, pipelines/lib/clock.py), so each run passes as `make test` does.
CLOCKS ?= 2027-12-31T23:58:00Z,UTC 2027-11-07T05:50:00Z,America/New_York 2028-02-29T00:30:00Z,Asia/Shanghai

test-clocks: $(STAMP) $(FOCUS_STAMP)
	@command -v faketime >/dev/null || { echo "make test-clocks needs faketime (Debian: apt-get install faketime)"; exit 1; }
	@set -e; for clock in $(CLOCKS); do \
	  at=$${clock%%,*}; zone=$${clock##*,}; local=$$(TZ=$$zone date -d "$$at" '+%Y-%m-%d %H:%M:%S'); \
	  echo "== the suite at $$at (TZ=$$zone, $$local there)"; \
	  TZ=$$zone faketime "$$local" $(BIN)/pytest -q -n $(TEST_WORKERS) --dist worksteal -p no:cacheprovider; \
	done

dev: $(STAMP)
	$(BIN)/comet-ledger dev

clean-data:
	rm -rf $(COMET_LEDGER_HOME)
