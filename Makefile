# Two entry points for a fresh machine; each creates .venv and installs what is missing.
#   make demo   synthetic benchmark -> demo sweep (Ray Tune + Optuna + MLflow) -> tables
#   make test   the test suite (what CI runs)
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp-install

.PHONY: demo test lint bench venv clean-demo readme-excerpts paper-smoke

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned, so that nothing pulls a CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/atf-sweep sweeps/demo.yaml   # makes data/synth first when absent (atf-data synth, scale 0.02)
	$(BIN)/atf-report --out report
	@echo "tables: report/index.md   MLflow UI: $(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db"

# Every cell of Tables I-X, shrunk (sweeps/profiles/smoke.yaml: SynthFace at scale 0.01, tiny
# OCN and HRNet, 2 epochs), in its own store and report folder; then the report shows every cell.
SMOKE := smoke
TABLES := i ii iii iv v vi vii viii ix x
paper-smoke: $(STAMP)
	@mkdir -p $(SMOKE)
	@for t in $(TABLES); do \
	  $(BIN)/atf-sweep sweeps/table_$$t.yaml --profile smoke --quiet \
	    --mlflow-uri sqlite:///$(CURDIR)/$(SMOKE)/mlflow.db --storage $(SMOKE)/ray_results || exit 1; \
	done
	$(BIN)/atf-report --mlflow-uri sqlite:///$(CURDIR)/$(SMOKE)/mlflow.db --out $(SMOKE)/report
	@echo "tables: $(SMOKE)/report/index.md"

test: $(STAMP)
	@bash tools/ensure_texlive.sh
	$(BIN)/ruff check atf orchestration reports tests bench
	$(BIN)/python -m pytest -q -m "not slow" tests

readme-excerpts: $(STAMP)   # after `make demo`: README's Table X excerpt and its LaTeX picture
	$(BIN)/python tools/readme_excerpts.py --png

bench: $(STAMP)
	$(BIN)/python bench/run_all.py
