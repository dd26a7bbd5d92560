# The README's two commands on a fresh clone: `make demo` and `make test` (each creates .venv first).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
GO_PATH := $(PATH):/usr/local/go/bin

.PHONY: demo test screenshot

demo: $(VENV)/.demo
	$(BIN)/tokentrail demo

# Without a Go toolchain the real-Collector tests cannot run: they are skipped, and this says so.
test: $(VENV)/.test
	@if PATH="$(GO_PATH)" command -v go >/dev/null; then \
	  PATH="$(GO_PATH)" deploy/collector/build.sh >/dev/null; skip=0; \
	else \
	  echo "make test: no Go toolchain: the real-Collector tests are skipped (see deploy/collector/build.sh)"; skip=1; \
	fi; \
	PATH="$(CURDIR)/$(BIN):$$PATH" TOKENTRAIL_SKIP_COLLECTOR=$$skip $(BIN)/python -m pytest -q -p no:cacheprovider

# docs/view.png, the README's picture: the demo ledger's HTML view in headless Chromium.
screenshot: $(VENV)/.demo
	mkdir -p .cache
	$(BIN)/tokentrail demo --quiet --ledger .cache/view-demo.db
	$(BIN)/tokentrail view --ledger .cache/view-demo.db --out .cache/view.html --png docs/view.png

$(VENV)/.python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || \
	  { echo "tokentrail needs Python 3.10 or newer ($(PYTHON) is older): make PYTHON=python3.12 ..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	touch $@

$(VENV)/.demo: $(VENV)/.python pyproject.toml
	$(BIN)/python -m pip install -q -e ".[openai]"
	touch $@

$(VENV)/.test: $(VENV)/.python pyproject.toml
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@
