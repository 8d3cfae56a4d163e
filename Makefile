# The two commands a newcomer runs: `make demo` and `make test`. Each does its own set-up.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup images demo test lint unit integration e2e bench clean

setup:
	@bash scripts/setup.sh

images:
	@bash scripts/setup.sh

demo: setup
	@$(PY) -m devcloud.demo

lint: setup-python
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

unit: setup-python
	$(VENV)/bin/pytest -q tests/unit

integration: setup
	$(VENV)/bin/pytest -q tests/integration

e2e: setup
	$(VENV)/bin/pytest -q tests/e2e

# Independent test files run side by side (pytest-xdist, 3 workers, a file per worker at a
# time); a test that changes what they all share on the engine (restarting it stops every
# container; removing the job network needs no job on it) runs last, alone.
PYTEST := $(VENV)/bin/pytest -q -p no:cacheprovider
test: setup
	$(MAKE) --no-print-directory lint
	$(PYTEST) -n 3 --dist loadfile -m "not alone" tests
	$(PYTEST) -m alone tests

bench: setup
	$(PY) -m bench

# Bigeye's side of a fleet: N simulated orchestrators against a dev server (bench/fleet.py).
.PHONY: bench-fleet
bench-fleet: setup
	$(PY) -m bench.fleet

# docs/screenshots/ui-*.png: the web UI's browser test takes them and copies them there.
.PHONY: ui-screenshots
ui-screenshots: setup
	BIGEYE_UI_SCREENSHOTS_DIR=$(CURDIR)/docs/screenshots $(PYTEST) tests/integration/test_devcloud_ui.py

.PHONY: setup-python
setup-python:
	@test -x $(PY) || bash scripts/setup.sh

clean:
	rm -rf .devcloud-demo .demo
