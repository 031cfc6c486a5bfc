# Quick start: `make demo` runs the main job on the bundled defaults, `make test` runs the tests.
# Both create (or update) the virtual environment in $(VENV) first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast wheel-smoke clean

demo: $(VENV)/.installed
	$(BIN)/accel-sim eval --model alexnet
	$(BIN)/accel-sim campaign run campaigns/quickstart.toml --report

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest
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
