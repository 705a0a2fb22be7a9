# Everything a user or CI needs: `make run` and `make test` set themselves up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: venv run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[django,flask,test]'
	touch $(STAMP)

venv: $(STAMP)

$(BIN)/promtool: | $(STAMP)
	.ci/get-promtool $(BIN)

run: venv
	$(BIN)/python examples/run_demo.py

lint: venv
	$(BIN)/ruff check zibrato tests bench examples
	$(BIN)/ruff format --check zibrato tests bench examples
	$(BIN)/mypy

test: lint $(BIN)/promtool
	$(BIN)/python -m pytest

bench: venv
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/anchors_overhead.py

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache
