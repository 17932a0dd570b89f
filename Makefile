# Two commands on a fresh machine: `make serve` and `make test`. Both set up what is missing;
# `make test-frameworks` runs the tests that need torch, TensorFlow and pyspark; `make test-quick`
# the quick part of `make test` (no local host, no Azurite).
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

# Tests that need the heavy frameworks (torch, TensorFlow, XGBoost, LightGBM, pyspark + Java)
# or a browser (headless Chromium renders the drift report): `make test-frameworks`.
FRAMEWORK_TESTS := tests/convert/test_torch.py tests/convert/test_keras.py \
  tests/convert/test_sparkml.py tests/convert/test_boosting.py tests/spark \
  tests/drift/test_report_render.py
# torch's CPU build, from PyTorch's own index as its users install it (PyPI's Linux torch is a
# ~4 GB CUDA build). Where that index cannot be reached, torch's tests are reported skipped.
# pip runs --isolated for it: another index in a pip configuration (a mirror's, say) would
# offer a newer CUDA build, which pip prefers; a wheel folder in PIP_FIND_LINKS is still read.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
# Told by the installed version, before torch's dependencies (a CUDA build's are GBs): PyTorch's
# CPU wheels for Linux and Windows say +cpu; macOS's are CPU builds.
export TORCH_IS_CPU := import importlib.metadata as m, sys;   sys.exit(not ("+cpu" in m.version("torch") or sys.platform == "darwin"))
PIP := $(PY) -m pip --disable-pip-version-check

.PHONY: setup serve-setup frameworks-setup serve test test-quick test-frameworks test-worker lint \
  bench clean

# What `make serve` needs, and no more: mlfn with its run-time dependencies.
serve-setup: $(VENV)/.serve node_modules/.bin/azurite $(MODELS) local.settings.json

# What `make test` needs: the test extra's clients, servers and validators too.
setup: $(VENV)/.dev serve-setup worker-venv

$(VENV)/.serve: pyproject.toml
	@printf '\n==> %s\n' "$(VENV): mlfn and what serving needs ($(PYVER); pip)"
	test -x $(PY) || $(PY_EXE) -m venv $(VENV)
	$(PIP) install -e .
	touch $@

$(VENV)/.dev: $(VENV)/.serve
	@printf '\n==> %s\n' "$(VENV): the test suite's clients and validators, linters, benchmark tools (pip)"
	$(PIP) install -e '.[dev]'
	touch $@

frameworks-setup: setup $(VENV)/.frameworks

$(VENV)/.frameworks: $(VENV)/.dev | chromium
	@printf '\n==> %s\n' "$(VENV): TensorFlow, tf2onnx, onnxmltools, pyspark for the framework tests (pip)"
	$(PIP) install -e '.[dev,frameworks]'
	@printf '\n==> %s\n' "$(VENV): torch's CPU build from $(TORCH_INDEX)"
	if $(PIP) --isolated install --no-deps --retries 1 --index-url $(TORCH_INDEX) \
	     $${PIP_FIND_LINKS:+--find-links "$$PIP_FIND_LINKS"} $${PIP_CERT:+--cert "$$PIP_CERT"} \
	     'torch>=2.5' \
	   && $(PY) -c "$$TORCH_IS_CPU"; then \
	  $(PIP) install 'torch>=2.5'; \
	else \
	  $(PIP) uninstall --yes --quiet torch 2>/dev/null; \
	  echo "torch's CPU wheel could not be installed from $(TORCH_INDEX):" \
	    "the torch tests will be reported skipped"; \
	fi
	touch $@

# Headless Chromium renders the drift report (tests/drift/test_report_render.py): Debian's
# package, installed when it is missing and this runs as root (as CI does).
.PHONY: chromium
chromium:
	@if command -v chromium >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  printf '\n==> %s\n' "chromium: headless, for the drift report's screenshot (apt-get)"; \
	  apt-get update -qq && apt-get install -y -qq chromium; \
	else \
	  echo "chromium not found: the drift report's render test will be skipped;" \
	    "install it with: sudo apt-get install -y chromium"; \
	fi

.PHONY: worker-venv
worker-venv:
	@if [ -z "$(PY313)" ]; then \
	  echo "python3.13 not found: the tests that need the Functions worker's code will be skipped"; \
	elif [ "$(VENV)" != "$(WORKER_VENV)" ]; then \
	  $(MAKE) --no-print-directory PYTHON=$(PY313) $(WORKER_VENV)/.dev; \
	fi

node_modules/.bin/azurite: package.json package-lock.json
	@printf '\n==> %s\n' "node_modules: Azurite, the local Azure Storage emulator (npm)"
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The example models are built from scikit-learn's data sets. A venv with the test extra has
# scikit-learn; the serving venv does not (it would double its size), so the three build tools
# are installed into build/model-tools for this one step and removed after.
$(MODELS) &: scripts/build_models.py scripts/model-tools.txt $(VENV)/.serve
	@printf '\n==> %s\n' "build/models: the two example models (scikit-learn, skl2onnx)"
	@if $(PY) -c 'import sklearn, skl2onnx, onnx' 2>/dev/null; then \
	  $(PY) -m scripts.build_models build/models; \
	else \
	  rm -rf build/model-tools && \
	  $(PIP) install --target build/model-tools -r scripts/model-tools.txt && \
	  PYTHONPATH=build/model-tools $(PY) -m scripts.build_models build/models; \
	  status=$$?; rm -rf build/model-tools; exit $$status; \
	fi

local.settings.json:
	cp local.settings.example.json $@

# Azurite on 10000-10002 when they are free, else on free ports (AZURITE_PORTS=B,Q,T to choose);
# never an emulator this did not start.
serve: serve-setup
	@$(PY) -m scripts.azurite run --prefer-default-ports --app-port $(PORT) --location .azurite \
	  -- bash -c '\
	  set -e; \
	  $(MLFN) upload build/models/iris.onnx az://models/iris.onnx; \
	  $(MLFN) upload build/models/diabetes.onnx az://models/diabetes.onnx; \
	  echo; echo "Try it:"; \
	  echo "  curl -s -X POST http://127.0.0.1:$(PORT)/api/iris/predict -H \"Content-Type: application/json\" \\"; \
	  echo "    -d '"'"'{\"instances\": [{\"sepal_length\": 5.1, \"sepal_width\": 3.5, \"petal_length\": 1.4, \"petal_width\": 0.2}]}'"'"'"; \
	  if [ "$(PORT)" != 7071 ]; then echo "  (mlfn commands: export MLFN_URL=http://127.0.0.1:$(PORT))"; fi; \
	  echo; \
	  exec $(MLFN) serve --port $(PORT)'

# The tests' temporary files (pytest's tmp_path, tempfile's, what the local hosts and Azurite
# write) go to build/tmp, not the system's /tmp: a run leaves nothing behind there. The JVMs
# the Spark tests start are told the same (tests/conftest.py).
# Made when the Makefile is read: under make -j an install the test targets need could start
# before a rule made it, and Node does not fall back to /tmp as Python does.
TEST_TMP := $(shell mkdir -p build/tmp && echo $(CURDIR)/build/tmp)
test test-quick test-frameworks test-worker mutate: export TMPDIR = $(TEST_TMP)

# Everything but the framework tests, which `make test-frameworks` runs. The suite waits more
# than it computes (run serially it keeps half of one core busy), so TEST_WORKERS pytest-xdist
# workers, one more than CI's two cores, share it; an end-to-end module's tests stay together
# (tests/conftest.py groups them: its hosts are started once). TEST_WORKERS=0 runs it in one
# process (for --pdb, say).
TEST_WORKERS ?= 3
test: setup
	$(PY) -m scripts.azurite run -- $(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup \
	  $(addprefix --ignore=,$(FRAMEWORK_TESTS)) $(PYTEST_ARGS)
	@if [ -n "$(PYTEST_ARGS)" ]; then \
	  echo "PYTEST_ARGS given: tests/worker not run (make test-worker PYTEST_ARGS=... runs it)"; \
	elif [ "$(PYVER)" != "3.13" ]; then $(MAKE) --no-print-directory test-worker; fi
	@echo "Not run here: the framework tests ($(FRAMEWORK_TESTS)): make test-frameworks"

# The quick part, under a minute: the tests that need no local host and no Azurite (the marks
# tests/conftest.py gives: e2e, azurite), in two processes (they compute, where the rest wait).
# `make test` runs these and all the others.
test-quick: $(VENV)/.dev
	$(PY) -m pytest -n 2 -m "not e2e and not azurite" $(addprefix --ignore=,$(FRAMEWORK_TESTS)) \
	  $(PYTEST_ARGS)

# mlfn convert's torch, TensorFlow and Spark ML tests, and runtime.spark in local mode.
test-frameworks: frameworks-setup
	$(PY) -m scripts.azurite run -- $(PY) -m pytest $(FRAMEWORK_TESTS) $(PYTEST_ARGS)

# The worker harness (tests/worker) on Python 3.13; the run above reported them skipped.
# Without a python3.13 CI fails (a green run must include them); elsewhere they are skipped.
test-worker: worker-venv
	@if [ -z "$(PY313)" ] && [ "$$CI" = true ]; then \
	  echo "FAILED tests/worker: no python3.13 on this CI machine; install it" \
	    "(pyenv install 3.13) so the Functions worker's tests run" >&2; \
	  exit 1; \
	elif [ -z "$(PY313)" ]; then \
	  echo; \
	  echo "*** SKIPPED tests/worker: no python3.13 on this machine (pyenv install 3.13)."; \
	  echo "*** The Functions worker's tests did not run and are not counted as passed."; \
	  echo; \
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

# Mutation testing (mutmut) of the modules whose mistakes cost most, each group against its
# own focused tests (scripts/mutate.py): a score per group and every mutant no test kills
# (docs/mutation.md says which are equivalent). One group: make mutate MUTATE=redact
.PHONY: mutate
mutate: $(VENV)/.dev
	$(PY) -m scripts.azurite run -- $(PY) -m scripts.mutate $(MUTATE)

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

clean:
	rm -rf .venv .venv-3.* node_modules build .azurite .pytest_cache .mypy_cache .ruff_cache
