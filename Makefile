# Two entry points for a fresh machine; each creates .venv and installs what is missing.
#   make demo   synthetic benchmark -> demo sweep (Ray Tune + Optuna + MLflow) -> tables
#   make test   the test suite (what CI runs)
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp-install

.PHONY: demo test lint bench venv clean-demo

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned, so that nothing pulls a CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/atf-data synth --out data/synth --scale 0.02 --seed 0 --skip-existing
	$(BIN)/atf-sweep sweeps/demo.yaml
	$(BIN)/atf-report --out report
	@echo "tables: report/index.md   MLflow UI: $(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db"

test: $(STAMP)
	$(BIN)/ruff check atf orchestration reports tests bench
	$(BIN)/python -m pytest -q -m "not slow" tests

bench: $(STAMP)
	$(BIN)/python bench/run_all.py
