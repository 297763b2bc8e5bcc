# The two set-up commands of the README: `make demo` (creates the environment, runs the main job) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

$(BIN)/erasekit: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

.PHONY: env demo test bench
env: $(BIN)/erasekit

demo: env
	$(BIN)/erasekit demo --out runs/demo

test: env
	$(BIN)/python -m pytest

bench: env
	$(BIN)/erasekit bench --spec fidelity-toy --out runs/bench/fidelity --markdown runs/bench/fidelity.md
