# The two set-up commands: `make demo` and `make test`. Both build .venv on first use.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint venv clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt setup.py
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	$(PYTHON) -m pytest

demo: $(STAMP)
	$(VENV)/bin/road-seg-replay --out out

clean:
	rm -rf $(VENV) out build install log
