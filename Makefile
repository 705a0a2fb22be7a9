# Everything a user or CI needs: `make run` and `make test` set themselves up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: venv run test lint bench clean servers

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

# The real servers the backends are tested against (tests/realservers/): Prometheus,
# carbon-cache, Etsy statsd, put inside the venv; quick when they are already there.
servers: venv
	.ci/get-servers $(VENV)

test: lint $(BIN)/promtool servers
	$(BIN)/python -m pytest

# Zibrato beside the alternatives, in one run each (figures: docs/performance.md).
$(VENV)/.bench-stamp: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $@

bench: $(VENV)/.bench-stamp
	$(BIN)/python bench/anchors_overhead.py
	$(BIN)/python bench/pipeline_throughput.py 1000000 1 1000000
	$(BIN)/python bench/pipeline_throughput.py 1000000 1
	$(BIN)/python bench/pipeline_throughput.py 500000 2
	$(BIN)/python bench/pipeline_throughput.py 1000000 1 1000000 --curve
	$(BIN)/python bench/pipeline_throughput.py 1000000 1 --curve
	@if command -v npm >/dev/null 2>&1; then \
	  [ -d bench/.statsd/node_modules/statsd ] || npm install --silent --prefix bench/.statsd statsd >/dev/null; \
	  $(BIN)/python bench/statsd_server_throughput.py bench/.statsd/node_modules/statsd 1000000 20 200000; \
	  $(BIN)/python bench/statsd_server_throughput.py bench/.statsd/node_modules/statsd 1000000 20; \
	else echo "npm not found: skipping the Etsy statsd server reference"; fi

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache

# The fault suite at full size (docs/reliability.md): R1 20 restarts, R2 a 10 s freeze,
# 100 forks and exits, 1 000 000 series, a 60 s soak. `make test` runs it CI-sized.
.PHONY: soak
soak: venv
	ZIBRATO_SOAK=1 $(BIN)/python -m pytest tests/reliability -o timeout=1800 -p no:cacheprovider
