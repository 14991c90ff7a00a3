# The two commands the README promises: `make demo` and `make test`. Both set up .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint clean

$(BIN)/ditic: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "torch==2.13.0" || $(BIN)/pip install -q "torch>=2.4"
	$(BIN)/pip install -q -e ".[test,dev,eval]"
	touch $(BIN)/ditic

setup: $(BIN)/ditic

demo: setup
	$(BIN)/ditic compress-images examples/photos out/demo-archive --overwrite --metrics
	$(BIN)/ditic verify out/demo-archive

test: setup
	$(BIN)/python -m pytest -q --durations=15 tests

lint: setup
	$(BIN)/ruff check codec pipeline jobs tests tools

clean:
	rm -rf out .pytest_cache
