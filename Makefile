# Developer tasks for claudeweb. `make` alone lists them.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
VENV_PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help install run test lint format clean services-start services-stop prod prod-stop

help: ## List the targets
	@echo "claudeweb — make targets:"
	@grep -E '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "} {printf "  make %-16s %s\n", $$1, $$2}'

install: $(STAMP) ## Create .venv/ and install the app with its dev tools (skipped when up to date)
	@:

$(VENV_PY):
	@echo "Creating $(VENV)/ with $(PYTHON)"
	@$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml $(VENV_PY)
	@echo "Installing claudeweb and its dev dependencies into $(VENV)/"
	@$(VENV_PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

run: install ## Run the app on http://127.0.0.1:8000 (offline Claude and local S3 when unconfigured)
	@scripts/run.sh

test: ## Run the test suite against PostgreSQL, Redis, local S3 and headless Chromium
	@scripts/test.sh

lint: install ## Check style: ruff check + ruff format --check
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .

format: install ## Sort imports and format the code with ruff
	@$(VENV)/bin/ruff check --select I --fix --quiet .
	@$(VENV)/bin/ruff format .

prod: install ## Production topology on loopback: nginx on :8080, 2 Daphne processes, PostgreSQL, Redis
	@scripts/prod.sh start

prod-stop: ## Stop what `make prod` started (the services stay)
	@scripts/prod.sh stop

services-start: ## Start the test services and print how to use them
	@scripts/services.sh start
	@echo "Use them in this shell with: . .run/services/env"

services-stop: ## Stop the test services
	@scripts/services.sh stop

clean: ## Stop the test services; remove .run/ and test artifacts (keeps .venv/ and db.sqlite3)
	@if [ -d .run/services ]; then scripts/services.sh stop; fi
	@rm -rf .run test-artifacts .pytest_cache .ruff_cache
	@find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
