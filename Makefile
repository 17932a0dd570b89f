# Two commands on a fresh machine: `make serve` and `make test`. Both set up what is missing.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
MLFN := $(VENV)/bin/mlfn
PORT ?= 7071
MODELS := build/models/iris.onnx build/models/diabetes.onnx
PYTEST_ARGS ?=

.PHONY: setup serve test lint bench clean

WORKER_INDEX := build/worker313/.installed

setup: $(VENV)/.installed node_modules/.bin/azurite $(MODELS) local.settings.json $(WORKER_INDEX)

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

node_modules/.bin/azurite: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(MODELS) &: scripts/build_models.py $(VENV)/.installed
	$(PY) -m scripts.build_models build/models

local.settings.json:
	cp local.settings.example.json $@

# The Functions worker's own indexing code (azure-functions-runtime) needs Python 3.13, as on
# Azure; pyenv provides it here. Without one, the tests that use it report a skip.
PYTHON313 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3.13) \
  $(shell command -v python3.13 2>/dev/null))
$(WORKER_INDEX):
	@if [ -z "$(PYTHON313)" ] || ! $(PYTHON313) -c 'import sys' 2>/dev/null; then \
	  echo "python3.13 not found: the worker-indexer tests will be skipped"; \
	else \
	  set -e; $(PYTHON313) -m venv build/worker313; \
	  build/worker313/bin/python -m pip install --quiet --disable-pip-version-check \
	    azure-functions-runtime==1.3.0 'azure-functions>=2,<3' 'pydantic>=2.6,<3' 'filelock>=3.12'; \
	  touch $@; \
	fi

serve: setup
	$(PY) -m scripts.azurite run --default-ports --location .azurite -- bash -c '\
	  set -e; \
	  $(MLFN) upload build/models/iris.onnx az://models/iris.onnx; \
	  $(MLFN) upload build/models/diabetes.onnx az://models/diabetes.onnx; \
	  echo; echo "Try it:"; \
	  echo "  curl -s -X POST http://127.0.0.1:$(PORT)/api/iris/predict -H \"Content-Type: application/json\" \\"; \
	  echo "    -d '"'"'{\"instances\": [{\"sepal_length\": 5.1, \"sepal_width\": 3.5, \"petal_length\": 1.4, \"petal_width\": 0.2}]}'"'"'"; \
	  echo; \
	  exec $(MLFN) serve --port $(PORT)'

test: setup
	$(PY) -m scripts.azurite run -- $(PY) -m pytest $(PYTEST_ARGS)

# wrk (Debian's) drives the HTTP benchmark; without it a bounded asyncio client does, and the
# table says which.
bench: setup
	command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; } \
	  || echo "wrk could not be installed: the HTTP benchmark uses an asyncio client"
	$(PY) -m scripts.azurite run -- $(PY) -m bench.run

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) node_modules build .azurite .pytest_cache .mypy_cache .ruff_cache
