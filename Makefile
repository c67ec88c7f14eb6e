# Two entry points for a fresh clone (see README.md):
#   make demo   set up, then run the offline miniature Omni-Diffusion recipe
#   make test   set up, then run lint, type checks, every test and the strict docs build
# Each target does its own set-up; nothing needs to be installed by hand.

# The torch 2.14.1 + torchvision 0.29.1 wheels on this kind of machine are cp311: prefer Python 3.11.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done

.PHONY: setup demo test lint typecheck pytest docs docs-serve bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt scripts/setup.sh
	PYTHON="$(PYTHON)" VENV="$(VENV)" bash scripts/setup.sh
	touch $(STAMP)

demo: setup
	$(PY) examples/mini_omni/run.py

test: setup lint typecheck pytest docs

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check src tests

typecheck: setup
	$(VENV)/bin/mypy

pytest: setup
	$(VENV)/bin/pytest -n 2 --dist loadfile

docs: setup
	DISABLE_MKDOCS_2_WARNING=true NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

docs-serve: setup
	$(VENV)/bin/mkdocs serve

bench: setup
	for f in benchmarks/*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) site .pytest_cache .mypy_cache .ruff_cache
