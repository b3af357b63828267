# Two entry points, each working from a clean clone on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PY := .venv/bin/python
PIP := .venv/bin/pip
STATIC := cnn_widgets/static/activation_browser.js

.PHONY: demo dashboard test fuzz js install chromium lab-quiet bench clean

.stamp-venv: pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	# torch first, pinned: an unpinned torch (asked for by captum) would pull a multi-GB CUDA build
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q torch==2.13.0 -e '.[dev]'
	touch $@

js/node_modules/.package-lock.json: js/package.json js/package-lock.json
	cd js && npm ci --no-audit --no-fund

$(STATIC): js/node_modules/.package-lock.json $(shell find js/src -name '*.js') js/build.mjs cnn_widgets/colormaps.json
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

# `make demo` serves .demo/ (git-ignored), never notebooks/: running cells must not dirty the tracked
# notebook. The copy is refreshed from notebooks/quickstart.ipynb on every run unless you edited it
# (it then differs from .demo/.quickstart.orig, the version it was copied from); delete it to refresh.
DEMO_PORT ?= 8888
FREE_PORT := import socket, sys; b = int(sys.argv[1]); print(next(p for p in range(b, b + 100) if socket.socket().connect_ex(("127.0.0.1", p))))
WAIT_PORT := import socket, sys, time; p = int(sys.argv[1]); sys.exit(not any(socket.socket().connect_ex(("127.0.0.1", p)) == 0 or time.sleep(0.5) for _ in range(240)))

demo: .stamp-venv js lab-quiet
	@mkdir -p .demo
	@if [ ! -f .demo/quickstart.ipynb ] || cmp -s .demo/quickstart.ipynb .demo/.quickstart.orig; then \
	  cp notebooks/quickstart.ipynb .demo/.quickstart.orig && cp notebooks/quickstart.ipynb .demo/quickstart.ipynb; \
	else \
	  echo "make demo: keeping your edited .demo/quickstart.ipynb (delete it to start from notebooks/quickstart.ipynb again)"; \
	fi
	@port=$$($(PY) -c '$(FREE_PORT)' $(DEMO_PORT)) || exit 1; \
	token=$$($(PY) -c 'import secrets; print(secrets.token_hex(16))') || exit 1; \
	echo "make demo: starting JupyterLab on .demo/quickstart.ipynb, a copy of notebooks/quickstart.ipynb"; \
	{ $(PY) -c '$(WAIT_PORT)' $$port && sleep 1 && \
	  printf '\ncnn_widgets demo: http://localhost:%s/lab/tree/quickstart.ipynb?token=%s\n(stop: Ctrl-C twice)\n\n' $$port $$token; } & \
	exec .venv/bin/jupyter lab $(ROOT_FLAG) --ServerApp.root_dir=.demo --port=$$port --ServerApp.port_retries=0 \
	  --IdentityProvider.token=$$token .demo/quickstart.ipynb

# `make dashboard` serves notebooks/dashboard.ipynb (an Explorer on ShapesNet) with Voila, from the same
# kind of git-ignored copy in .demo/ as `make demo` (refreshed unless you edited it), on a free port with
# a token. Voila hides the code cells and starts one kernel per visitor (the kernel of a closed tab is
# stopped after a minute); stop the server with Ctrl-C.
DASHBOARD_PORT ?= 8866

dashboard: .stamp-venv js
	@mkdir -p .demo
	@if [ ! -f .demo/dashboard.ipynb ] || cmp -s .demo/dashboard.ipynb .demo/.dashboard.orig; then \
	  cp notebooks/dashboard.ipynb .demo/.dashboard.orig && cp notebooks/dashboard.ipynb .demo/dashboard.ipynb; \
	else \
	  echo "make dashboard: keeping your edited .demo/dashboard.ipynb (delete it to start from notebooks/dashboard.ipynb again)"; \
	fi
	@port=$$($(PY) -c '$(FREE_PORT)' $(DASHBOARD_PORT)) || exit 1; \
	token=$$($(PY) -c 'import secrets; print(secrets.token_hex(16))') || exit 1; \
	echo "make dashboard: starting Voila on .demo/dashboard.ipynb, a copy of notebooks/dashboard.ipynb"; \
	{ $(PY) -c '$(WAIT_PORT)' $$port && sleep 1 && \
	  printf '\ncnn_widgets dashboard: http://localhost:%s/?token=%s\n(stop: Ctrl-C)\n\n' $$port $$token; } & \
	exec .venv/bin/voila --no-browser --port=$$port --Voila.ip=127.0.0.1 --token=$$token \
	  --MappingKernelManager.cull_interval=10 --MappingKernelManager.cull_idle_timeout=60 \
	  --VoilaConfiguration.extension_denylist=@jupyter-notebook/lab-extension .demo/dashboard.ipynb

test: install
	cd js && node --test test/
	$(PY) -m pytest -q tests

# property-based tests at full strength (the default profile keeps them quick inside `make test`)
fuzz: .stamp-venv js
	$(PY) -m pytest -q tests/test_fuzz.py --hypothesis-profile=fuzz

bench: install
	$(PY) bench/run_all.py

clean:
	rm -rf .venv js/node_modules cnn_widgets/static/*.js cnn_widgets/static/bundle.sha256 .stamp-venv
