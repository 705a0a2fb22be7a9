# Everything a user or CI needs: `make run` and `make test` set themselves up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: venv run test lint bench bench-history clean servers chromium screenshot

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[django,flask,test,demo]'
	touch $(STAMP)

venv: $(STAMP)

$(BIN)/promtool: | $(STAMP)
	.ci/get-promtool $(BIN)

# The demo (demo_site/): broker, dashboard, prometheus, console, a Django and a Flask site
# under gunicorn, and their traffic, until Ctrl-C (ZIBRATO_DEMO_SECONDS=N: N seconds).
run: venv
	$(BIN)/python -m demo_site.run

lint: venv
	$(BIN)/ruff check zibrato zibrato_django zibrato_flask tests bench demo_site
	$(BIN)/ruff format --check zibrato zibrato_django zibrato_flask tests bench demo_site
	$(BIN)/mypy

# The real servers the backends are tested against (tests/realservers/): Prometheus,
# carbon-cache, Etsy statsd, put inside the venv; quick when they are already there.
servers: venv
	.ci/get-servers $(VENV)

# The dashboard's browser tests drive Debian's chromium, never a browser Playwright downloads.
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# Two workers, each test file on one of them (its module fixtures and servers stay put).
test: lint $(BIN)/promtool servers chromium
	$(BIN)/python -m pytest -n 2 --dist loadfile

# README's picture: the dashboard of a running demo, taken by its browser test.
screenshot: venv chromium
	ZIBRATO_SCREENSHOT=$(CURDIR)/docs/img/dashboard.png $(BIN)/python -m pytest -q \
	  tests/demo/test_demo_run.py -k in_a_browser

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
	$(BIN)/python bench/django_paired.py 40 200
	$(BIN)/python bench/django_compare.py 3 1000 3
	$(BIN)/python bench/django_profile.py 1500 3
	$(BIN)/python bench/flask_request_overhead.py
	$(BIN)/python bench/web_bytecodes.py flask django
	$(BIN)/python bench/celery_task_overhead.py 40 2000
	$(BIN)/python bench/http_client_overhead.py
	$(BIN)/python bench/deployment_capacity.py capacity 200 500 10
	$(BIN)/python bench/deployment_capacity.py cpu 1000000
	@if command -v valgrind >/dev/null 2>&1; then \
	  $(BIN)/python bench/call_instructions.py; \
	  $(BIN)/python bench/request_instructions.py flask django; \
	else echo "valgrind not found: skipping the instructions per call and per request"; fi
	$(BIN)/python bench/http_burst.py 300 5
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

# A week of dashboard history replayed into SQLite (about 30 minutes; figures in docs/performance.md).
bench-history: $(VENV)/.bench-stamp
	$(BIN)/python bench/dashboard_history.py --days 7
