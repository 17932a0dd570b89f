# Two commands on a fresh machine: `make serve` and `make test`. Both set up what is missing.
# Another Python: `make test PYTHON=python3.13` (3.11, 3.12 and 3.13 are supported).
SHELL := /bin/bash
PYTHON ?= $(if $(shell command -v python3.11 2>/dev/null),python3.11,python3)
# A pyenv shim answers "command not found" for a version that is installed but not selected:
# ask the interpreter where it is, else look among pyenv's versions.
find_python = $(or $(shell $(1) -c 'import sys; print(sys.executable)' 2>/dev/null),$(firstword \
  $(wildcard $(HOME)/.pyenv/versions/$(subst python,,$(notdir $(1)))*/bin/$(notdir $(1)))))
PY_EXE := $(call find_python,$(PYTHON))
ifeq ($(PY_EXE),)
$(error $(PYTHON) not found: install it (pyenv install 3.13, say) or pass PYTHON=/path/to/python)
endif
PYVER := $(shell $(PY_EXE) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
VENV := $(if $(filter 3.11,$(PYVER)),.venv,.venv-$(PYVER))
PY := $(VENV)/bin/python
MLFN := $(VENV)/bin/mlfn
PORT ?= 7071
MODELS := build/models/iris.onnx build/models/diabetes.onnx
PYTEST_ARGS ?=
# The Functions worker's own code (azure-functions-runtime) runs on Python 3.13 only, as on
# Azure: tests/worker and the indexer oracle of tests/deploy use this venv.
PY313 := $(call find_python,python3.13)
WORKER_VENV := .venv-3.13

.PHONY: setup serve-setup serve test test-worker lint bench clean

setup: serve-setup worker-venv

# What `make serve` needs; the Functions worker's venv (tests only) is left to `make test`.
serve-setup: $(VENV)/.installed node_modules/.bin/azurite $(MODELS) local.settings.json

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PY_EXE) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

.PHONY: worker-venv
worker-venv:
	@if [ -z "$(PY313)" ]; then \
	  echo "python3.13 not found: the tests that need the Functions worker's code will be skipped"; \
	elif [ "$(VENV)" != "$(WORKER_VENV)" ]; then \
	  $(MAKE) --no-print-directory PYTHON=$(PY313) $(WORKER_VENV)/.installed; \
	fi

node_modules/.bin/azurite: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(MODELS) &: scripts/build_models.py $(VENV)/.installed
	$(PY) -m scripts.build_models build/models

local.settings.json:
	cp local.settings.example.json $@

serve: serve-setup
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
	@if [ "$(PYVER)" != "3.13" ]; then $(MAKE) --no-print-directory test-worker; fi

# The worker harness (tests/worker) on Python 3.13; the run above reported them skipped.
test-worker: worker-venv
	@if [ -z "$(PY313)" ]; then \
	  echo "SKIPPED tests/worker: no python3.13 on this machine (they are not counted as passed)"; \
	else \
	  $(WORKER_VENV)/bin/python -m scripts.azurite run -- \
	    $(WORKER_VENV)/bin/python -m pytest tests/worker $(PYTEST_ARGS); \
	fi

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
	rm -rf .venv .venv-3.* node_modules build .azurite .pytest_cache .mypy_cache .ruff_cache
