# The two commands of the README are `make run` and `make test`; the rest are their parts.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin

.PHONY: help setup run test lint typecheck pytest es-start es-stop clean bench bench-scale docs

help:
	@echo "make run        set up, start a local Elasticsearch unless one is configured (then with a"
	@echo "                demo storage and an admin token, printed), serve on :8080 (or \$$PORT)"
	@echo "make test       set up and run lint, type checks and the whole test suite"
	@echo "make bench      benchmarks against plain Elasticsearch: writes docs/benchmarks-latest.md"
	@echo "                (and .json) and docs/benchmarks.png; docs/benchmarks.md explains them"
	@echo "make bench-scale the layouts at scale (100,000 storages; about 10 minutes): writes"
	@echo "                docs/benchmarks-scale.md (and .json)"
	@echo "make docs       rewrite the property table of docs/configuration.md from the code"
	@echo "make es-start   start the local development Elasticsearch (prints its URL)"
	@echo "make es-stop    stop every local Elasticsearch node this project started"

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	scripts/setup.sh
	@touch $@

run: setup
	scripts/run.sh

test: setup
	scripts/setup.sh --test-tools
	$(MAKE) lint typecheck pytest

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy

pytest:
	$(BIN)/pytest

es-start:
	scripts/local-es.sh start

es-stop:
	scripts/local-es.sh stop --all

clean:
	-scripts/local-es.sh stop --all
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache

bench: setup
	scripts/setup.sh --bench-tools
	$(BIN)/python bench/run.py

bench-scale: setup
	scripts/setup.sh --bench-tools
	$(BIN)/python bench/scale.py

docs: setup
	$(BIN)/python -m kv_storage.config.reference
