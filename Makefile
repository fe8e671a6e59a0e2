# One-command entry points: `make demo` and `make test` do everything on a fresh
# Linux machine with Python >= 3.11.
PYTHON ?= python3
VENV   ?= .venv
ORACLE ?= .venv-oracle
BIN    := $(VENV)/bin
IDEXDASK_DATA ?= $(abspath ../shared/data)
export IDEXDASK_DATA

.PHONY: setup demo test test-newest test-gpu test-fast lint bench clean serve browser

setup: $(VENV)/.installed $(VENV)/.compiled $(ORACLE)/.installed browser

# The dashboard's browser tests drive Debian's Chromium through its chromedriver
# (nothing may download a browser); installed when missing (the machine runs as root).
CHROMIUM     ?= /usr/bin/chromium
CHROMEDRIVER ?= /usr/bin/chromedriver
browser:
	@if [ ! -x $(CHROMIUM) ] || [ ! -x $(CHROMEDRIVER) ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# numba's caches of the compiled kernels, filled once (~70 s of one core) instead
# of by every worker's and every test process's first task; again when a
# module changes (numba itself recompiles only what changed).
$(VENV)/.compiled: $(VENV)/.installed $(wildcard idexdask/*.py idexdask/*/*.py)
	$(BIN)/idexdask compile
	touch $@

# The official pipeline (test oracle) lives in its own venv: its pins must not
# hold back our own dependency versions.
$(ORACLE)/.installed:
	$(PYTHON) -m venv $(ORACLE)
	$(ORACLE)/bin/python -m pip install --quiet --upgrade pip
	$(ORACLE)/bin/python -m pip install --quiet 'imap-processing==1.0.40'
	touch $@

# 4 simulated L0 files x 1,000 events (2 Rice-compressed), submitted to the
# embedded cluster, exported to HDF5 and CDF: ~35 s on 2 cores once set up (a
# fresh clone: ~3 minutes with the installs and the kernels' compilation).
DEMO_FILES  ?= 4
DEMO_EVENTS ?= 1000

demo: setup
	$(BIN)/idexdask demo --output demo-output --files $(DEMO_FILES) --events $(DEMO_EVENTS)
	@echo "or: make serve  (the same dashboard at http://127.0.0.1:5006/)"

# The science-review dashboard on the demo store (http://127.0.0.1:5006/).
serve: $(VENV)/.installed
	$(BIN)/idexdask serve demo-output/campaign.zarr --port 5006

# Then the tests marked `numerics` (two implementations compared within a
# justified tolerance) once more with NumPy's SIMD dispatch off and numba
# compiling for a generic x86-64 (tests/numerics.py): an assertion that holds
# only on this CPU's code paths fails here, not on a user's machine.
test: setup $(VENV)/.compiled-generic
	$(BIN)/python -m pytest -n 2 -m "not gpu" tests
	$(BIN)/python -m tests.numerics -n 2 tests

# numba's caches of the generic kernels of that run, kept apart from the main
# ones (numba keys its caches by CPU name): filled once, like .compiled.
$(VENV)/.compiled-generic: $(VENV)/.installed $(wildcard idexdask/*.py idexdask/*/*.py)
	$(BIN)/python -m tests.numerics --compile
	touch $@

# The unit and integration tests against the newest releases of the dependencies
# whose internals idexdask/compat/ uses (zarr, xarray, cdflib, scipy, numba), in a
# venv of their own made anew each time, on the newest CPython of the machine
# (pyenv's, else $(PYTHON)): their newest releases may need a newer Python than
# ours.  An upgrade that breaks a shortcut (or its fallback) fails here first.
NEWEST_VENV     ?= .venv-newest
NEWEST_PACKAGES ?= zarr xarray cdflib scipy numba
PYTHON_NEWEST   ?= $(or $(shell ls -d "$$(pyenv root 2>/dev/null || echo $${PYENV_ROOT:-$$HOME/.pyenv})"/versions/3.* 2>/dev/null \
	| sort -V | tail -n 1 | sed 's|$$|/bin/python3|'),$(PYTHON))

test-newest: $(ORACLE)/.installed
	rm -rf $(NEWEST_VENV)
	$(PYTHON_NEWEST) -m venv $(NEWEST_VENV)
	$(NEWEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(NEWEST_VENV)/bin/python -m pip install --quiet -e '.[dev]'
	$(NEWEST_VENV)/bin/python -m pip install --quiet --upgrade $(NEWEST_PACKAGES)
	@$(NEWEST_VENV)/bin/python -c "import sys, importlib.metadata as m; \
		print('newest:', 'Python', sys.version.split()[0], *(f'{p} {m.version(p)}' \
		for p in '$(NEWEST_PACKAGES) numpy numcodecs'.split()))"
	$(NEWEST_VENV)/bin/idexdask compile
	$(NEWEST_VENV)/bin/python -m pytest -n 2 -m "not gpu" tests/unit tests/integration

# On a machine with an NVIDIA GPU: install the gpu extra and run the CuPy tests.
test-gpu: setup
	$(BIN)/python -m pip install --quiet -e '.[gpu]'
	$(BIN)/python -m pytest -m gpu tests

test-fast: $(VENV)/.installed
	$(BIN)/python -m pytest -n 2 -m "not slow and not oracle and not gpu" tests

# ruff, then the layering contracts of pyproject.toml ([tool.importlinter]; make test
# checks them too, in tests/unit/test_layers.py)
lint: $(VENV)/.installed
	$(BIN)/ruff check idexdask tests bench
	$(BIN)/lint-imports --no-cache

bench: setup
	$(BIN)/python bench/decode.py

clean:
	rm -rf $(VENV) $(ORACLE) $(NEWEST_VENV) demo-output .pytest_cache
