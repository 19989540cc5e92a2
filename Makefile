# The two commands of README.md: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test install services clean

# Plain HTTP on 127.0.0.1: the console's cookie cannot be Secure there (production keeps it so).
run: install services
	CLARION_CONSOLE_INSECURE_COOKIE=1 $(BIN)/clarion run --demo

test: $(VENV)/.test-installed services
	@bash scripts/install-test-tools.sh
	$(BIN)/python -m pytest

install: $(VENV)/.installed

services:
	@bash scripts/ensure-services.sh

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel

# The Python client (client/, `clarion-client`) too: `clarion send` uses it.
$(VENV)/.installed: $(VENV)/bin/python setup.cfg pyproject.toml client/setup.cfg
	$(BIN)/python -m pip install --quiet -e . -e client
	touch $@

$(VENV)/.test-installed: $(VENV)/.installed setup.cfg client/setup.cfg
	$(BIN)/python -m pip install --quiet -e '.[test]' -e client
	touch $@

clean:
	rm -rf $(VENV) .clarion *.egg-info
