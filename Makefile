# Two entry points, each working from a clean clone on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PY := .venv/bin/python
PIP := .venv/bin/pip
STATIC := cnn_widgets/static/activation_browser.js

.PHONY: demo test test-py test-js js install chromium bench clean

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

chromium:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

install: .stamp-venv js chromium
	.venv/bin/jupyter labextension disable "@jupyterlab/apputils-extension:announcements" >/dev/null 2>&1 || true

# root (containers, CI machines) needs --allow-root
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

demo: install
	.venv/bin/jupyter lab $(ROOT_FLAG) notebooks/quickstart.ipynb

test: install
	cd js && node --test test/
	$(PY) -m pytest -q tests

bench: install
	$(PY) bench/run_all.py

clean:
	rm -rf .venv js/node_modules cnn_widgets/static/*.js .stamp-venv
