# Two entry points, each working from a clean clone on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PY := .venv/bin/python
PIP := .venv/bin/pip
STATIC := cnn_widgets/static/activation_browser.js

.PHONY: demo test js install chromium lab-quiet bench clean

.stamp-venv: pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	# torch first, pinned: an unpinned torch (asked for by captum) would pull a multi-GB CUDA build
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q torch==2.13.0 -e '.[dev]'
	touch $@

js/node_modules/.package-lock.json: js/package.json js/package-lock.json
	cd js && npm ci --no-audit --no-fund

$(STATIC): js/node_modules/.package-lock.json $(shell find js/src -name '*.js') js/build.mjs
	cd js && npm run build

js: $(STATIC)

# root (containers, CI machines) needs --allow-root for Jupyter and no sudo for apt
ROOT := $(filter 0,$(shell id -u))
SUDO := $(if $(ROOT),,sudo)
ROOT_FLAG := $(if $(ROOT),--allow-root,)

chromium:
	@command -v chromium >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium)

lab-quiet: .stamp-venv
	.venv/bin/jupyter labextension disable "@jupyterlab/apputils-extension:announcements" >/dev/null 2>&1 || true

install: .stamp-venv js chromium lab-quiet

demo: .stamp-venv js lab-quiet
	.venv/bin/jupyter lab $(ROOT_FLAG) notebooks/quickstart.ipynb

test: install
	cd js && node --test test/
	$(PY) -m pytest -q tests

bench: install
	$(PY) bench/run_all.py

clean:
	rm -rf .venv js/node_modules cnn_widgets/static/*.js .stamp-venv
