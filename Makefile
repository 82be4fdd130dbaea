# Every target sets itself up: a fresh machine needs only python3 (3.11+) and make.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-server.txt requirements-dev.txt | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: setup run demo test unit bench clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-server.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "pip>=23,<26.3"
	$(PY) -m pip install --quiet -r requirements-dev.txt
	rm -f $(VENV)/.installed-*
	touch $@

run: setup  ## API (waitress) + worker on the embedded SQLite default
	$(PY) scripts/serve_all.py

demo: setup  ## the whole service against the A1111 simulator
	$(PY) scripts/serve_all.py --with-simulator

test: setup  ## every test
	bash scripts/ensure_chromium.sh
	$(PY) -m pytest $(PYTEST_ARGS)

unit: setup
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

bench: setup
	$(PY) bench/core.py

clean:
	rm -rf $(VENV) data .pytest_cache
