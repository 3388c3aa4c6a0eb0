# Developer tasks for claudeweb. `make` alone lists them.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
VENV_PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCK := requirements/dev.txt
PIP := $(VENV_PY) -m pip --disable-pip-version-check --quiet
COMPILE := $(VENV)/bin/uv pip compile pyproject.toml --universal --python-version 3.11 \
	--generate-hashes --no-header --quiet

.PHONY: help install run test test-latest lock lock-upgrade lint format clean services-start \
	services-stop prod prod-stop

help: ## List the targets
	@echo "claudeweb — make targets:"
	@grep -E '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "} {printf "  make %-16s %s\n", $$1, $$2}'

install: $(STAMP) ## Create .venv/ and install the app with its dev tools from the lock (skipped when up to date)
	@:

$(VENV_PY):
	@echo "Creating $(VENV)/ with $(PYTHON)"
	@$(PYTHON) -m venv $(VENV)

# Exactly the versions in the lock, each checked against its hash; then the app itself, editable.
# pip-sync semantics without the tool: packages the lock no longer lists are left alone.
$(STAMP): $(LOCK) pyproject.toml $(VENV_PY)
	@echo "Installing claudeweb's locked dependencies ($(LOCK)) into $(VENV)/"
	@$(PIP) install --require-hashes --no-deps -r $(LOCK)
	@$(PIP) install --no-deps --no-build-isolation -e . 2>/dev/null || $(PIP) install --no-deps -e .
	@touch $@

lock: install ## Recompute the lock files from pyproject.toml, keeping the pinned versions that still fit
	@$(COMPILE) -o requirements/prod.txt
	@$(COMPILE) --extra dev -o requirements/dev.txt
	@echo "requirements/prod.txt and requirements/dev.txt written; review with git diff"

lock-upgrade: install ## Move every pin in the lock files to the newest release pyproject.toml allows
	@$(COMPILE) --upgrade -o requirements/prod.txt
	@$(COMPILE) --upgrade --extra dev -o requirements/dev.txt
	@echo "requirements/*.txt upgraded; run make test, then commit them with what the upgrade needed"

run: install ## Run the app on http://127.0.0.1:8000 (offline Claude and local S3 when unconfigured)
	@scripts/run.sh

test: ## Run the test suite against PostgreSQL, Redis, local S3 and headless Chromium
	@scripts/test.sh

test-latest: ## The suite on the newest releases pyproject.toml allows (in .venv-latest/, lock ignored)
	@$(PYTHON) -m venv .venv-latest
	@.venv-latest/bin/python -m pip --disable-pip-version-check --quiet install --upgrade -e '.[dev]'
	@touch .venv-latest/.installed
	@VENV=.venv-latest scripts/test.sh

lint: install ## Check style: ruff check + ruff format --check
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .

format: install ## Sort imports and format the code with ruff
	@$(VENV)/bin/ruff check --select I --fix --quiet .
	@$(VENV)/bin/ruff format .

prod: install ## Production topology on loopback under supervisord: nginx on :8080, 2 Daphne processes, maintenance loop
	@scripts/prod.sh start

prod-stop: ## Stop what `make prod` started, supervisord and all it runs (the services stay)
	@scripts/prod.sh stop

services-start: ## Start the test services and print how to use them
	@scripts/services.sh start
	@echo "Use them in this shell with: . .run/services/env"

services-stop: ## Stop the test services
	@scripts/services.sh stop

clean: ## Stop the test services; remove .run/ and test artifacts (keeps .venv/, db.sqlite3 and stored uploads)
	@if [ -d .run/services ]; then scripts/services.sh clean; fi
	@rm -rf .run test-artifacts .pytest_cache .ruff_cache
	@find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
