# Two entry points for a fresh clone: `make demo` (the main job) and `make test` (the test suite).
# Both create .venv and install everything on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-slow gpu-wheels clean

setup: $(VENV)/.installed

# torch first, pinned to the CPU wheel available here: a plain `torch` requirement resolved by pip
# would pull several GB of CUDA packages.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: setup
	$(PY) scripts/compress.py --overwrite

test: setup
	$(PY) -m pytest

test-slow: setup
	$(PY) -m pytest -m slow

# The packages the GPU image lacks, as wheels to carry there: then `python3 scripts/gpu_check.py --wheels .whl`.
gpu-wheels: setup
	$(PY) scripts/gpu_check.py --prepare-wheels .whl

clean:
	rm -rf $(VENV) models results
