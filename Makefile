# Two commands: `make demo` (the main job on the embedded default) and `make test` (the suite).
# Each creates .venv and installs the package with its extras on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch from the local wheel cache first, so pip does not fetch a newer CUDA build
	$(BIN)/pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mmreward demo --task t2i --output demo

# the suite: one pytest worker per core with one torch thread each (the seed sweeps' setting,
# docs/learning-figures.md); a file's tests stay on one worker, so each quick-start demo trains once
test: $(STAMP)
	$(BIN)/ruff check .
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n auto --dist loadfile --timeout=1800 --durations=40

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) demo .pytest_cache
