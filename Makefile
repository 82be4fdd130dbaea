# Every target sets itself up: a fresh machine needs only python3 (3.11+) and make.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-server.txt requirements-dev.txt | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=
TEST_WORKERS ?= 2
PACKAGE_DIR ?= build/package

.PHONY: setup run local demo test unit bench package image clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-server.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "pip>=23,<26.3"
	$(PY) -m pip install --quiet -r requirements-dev.txt
	rm -f $(VENV)/.installed-*
	touch $@

run: setup  ## API (waitress) + worker on the embedded SQLite default
	$(PY) scripts/serve_all.py --dev-token

local: setup  ## Chalice's dev server (chalice local, reloads on edits) + worker, like `make run`
	$(PY) scripts/serve_local.py

demo: setup  ## the whole service against the A1111 simulator
	$(PY) scripts/serve_all.py --dev-token --with-simulator

test: setup  ## ruff, then every test, in TEST_WORKERS processes (pytest-xdist; 0: in this one)
	$(VENV)/bin/ruff check .
	bash scripts/ensure_chromium.sh
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

unit: setup
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

bench: setup
	$(PY) bench/core.py

package: setup  ## deployable template + code: $(PACKAGE_DIR)/sam.yaml and deployment.zip (see docs/aws.md)
	rm -rf $(PACKAGE_DIR)
	AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} $(VENV)/bin/chalice package --stage prod \
		--merge-template infra/template.yaml $(PACKAGE_DIR)
	$(PY) infra/prune_package.py $(PACKAGE_DIR)
	$(PY) infra/add_bytecode.py $(PACKAGE_DIR)
	$(VENV)/bin/cfn-lint $(PACKAGE_DIR)/sam.yaml

image:  ## the container image (API + worker; see docs/containers.md); needs a Docker engine
	docker build -t a1111-async:latest .

clean:
	rm -rf $(VENV) data .pytest_cache
