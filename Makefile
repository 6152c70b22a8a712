# One target per habit. Each creates .venv on first use and installs what it needs from the pinned
# lock files (requirements/): the API and CLI alone need no torch; tests, the demo and benchmarks
# need the worker. A stamp per layer keeps it idempotent: a layer reinstalls when its lock changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
API := $(VENV)/.installed-api
WORKER := $(VENV)/.installed-worker
DEV := $(VENV)/.installed-dev

.PHONY: demo test unit integration lint format bench chaos lock clean
.NOTPARALLEL:  # the layers install into one venv, one pip at a time

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The base package (`pip install gantry`), editable, and its pinned tree.
$(API): pyproject.toml requirements/api.lock | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements/api.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

# `gantry[worker]`: torch, scikit-learn, scikit-image, numpy, pillow, torch-fidelity. --no-deps: the lock is
# the whole tree, less what requirements/lock.py leaves out on purpose (torchvision, see there).
$(WORKER): requirements/worker.lock $(API)
	$(BIN)/python -m pip install --quiet --no-deps -r requirements/worker.lock
	touch $@

# `gantry[dev]`: pytest and pytest-xdist, moto, ruff, mypy.
$(DEV): requirements/dev.lock $(API)
	$(BIN)/python -m pip install --quiet -r requirements/dev.lock
	touch $@

demo: $(WORKER)
	$(BIN)/gantry demo

# The tests run on a process per core, at most 4 (pytest-xdist; the chaos suite, a few minutes in one
# process, bounds a run beyond that). A file's tests share a process; each process has its own
# redis-server, PostgreSQL database and S3 server. `make test PYTEST_PROCESSES=0`: all in one process.
PYTEST_PROCESSES ?= auto
PYTEST := $(BIN)/python -m pytest -q -ra -n $(PYTEST_PROCESSES) --maxprocesses 4 --dist loadfile

# Everything: unit, slow learning tests, integration (real Redis, PostgreSQL), GPU (skipped without CUDA).
test: $(WORKER) $(DEV)
	$(PYTEST)

# The fast loop: no test marked slow, no real services, no GPU.
unit: $(WORKER) $(DEV)
	$(PYTEST) -m "not slow" --ignore=tests/integration --ignore=tests/gpu --ignore=tests/chaos

integration: $(WORKER) $(DEV)
	$(PYTEST) tests/integration

# No torch needed: ruff reads the source, mypy checks the torch-free layers.
lint: $(DEV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy gantry/jobs gantry/api

format: $(DEV)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(WORKER)
	$(BIN)/python bench/dcgan_speed.py

# Issue 28's faults at full size against real workers, a private redis-server, PostgreSQL cluster and
# S3 server; prints the table for bench/RESULTS.md. `make test` runs a bounded version (tests/chaos).
chaos: $(WORKER) $(DEV)
	$(BIN)/python bench/chaos.py

# Regenerate requirements/*.lock after a change to pyproject.toml (upgrades nothing else).
lock: | $(BIN)/python
	$(BIN)/python requirements/lock.py

clean:
	rm -rf $(VENV) .gantry .pytest_cache
