# One command to run, one to test; each creates .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CPU wheel of torch; for a GPU install see README ("GPU install").
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/p2l-router demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check router tests bench
	$(BIN)/ruff format --check router tests bench

bench: $(STAMP)
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/scorer.py
	$(BIN)/python bench/ledger.py

clean:
	rm -rf $(VENV) .pytest_cache
