# Quick start: `make demo` runs the main job on the bundled defaults, `make test` runs the tests.
# Both create (or update) the virtual environment in $(VENV) first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast wheel-smoke clean

demo: $(VENV)/.installed
	$(BIN)/accel-sim eval --model alexnet
	$(BIN)/accel-sim campaign run campaigns/quickstart.toml --report

# two test processes of one thread each: on two cores the suite's serial parts (plain-Python
# references, hypothesis, subprocesses) then overlap (4m17 against 5m21 for one process of two
# threads); `make test-fast` runs the parallel kernels with their threads
test: $(VENV)/.installed-test
	NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadfile
	$(MAKE) wheel-smoke

# the tests without those marked slow (whole networks, full test set, subprocess campaigns)
test-fast: $(VENV)/.installed-test
	$(BIN)/python -m pytest -m "not slow"

# build the wheel, install it in a throw-away venv and run it from outside the checkout
wheel-smoke: $(VENV)/.installed
	PYTHON=$(abspath $(BIN)/python) bash tests/wheel_smoke.sh

$(VENV)/.installed: setup.cfg setup.py pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test,dask]'
	touch $@

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis
