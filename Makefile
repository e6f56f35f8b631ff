# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	KERAS_BACKEND=torch $(VENV)/bin/convscope demo

test: $(STAMP)
	KERAS_BACKEND=torch $(PY) -m pytest -q
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy

bench: $(STAMP)
	KERAS_BACKEND=torch $(PY) bench/run_all.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache .mypy_cache
