# ablate — `make demo` and `make test` set everything up on a fresh Debian machine.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup data demo test test-full bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@

data: ## install Fashion-MNIST (Debian package dataset-fashion-mnist) if missing
	@if [ -d $(FMNIST) ]; then exit 0; fi; \
	if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  echo "installing dataset-fashion-mnist"; \
	  apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; }; \
	elif command -v apt-get >/dev/null && command -v sudo >/dev/null; then \
	  sudo apt-get install -y -q dataset-fashion-mnist; \
	else \
	  echo "Fashion-MNIST is missing: run 'apt-get install -y dataset-fashion-mnist' as root, or"; \
	  echo "put the four idx(.gz) files in a folder and pass data.root=/that/folder"; exit 1; \
	fi

setup: $(STAMP) data ## create .venv, install ablate and its test tools, install the data

demo: setup ## run the embedded study (Fashion-MNIST, CPU, minutes) and print its table
	$(BIN)/ablate run studies/fmnist_refinements.yaml

test: setup ## run the fast test suite
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-full: setup ## run every test, slow ones included
	$(BIN)/python -m pytest -q -m "" $(PYTEST_ARGS)

bench: setup ## run the benchmarks (figures go to benchmarks/RESULTS.md by hand)
	$(BIN)/python benchmarks/bench_harness.py
	$(BIN)/python benchmarks/bench_throughput.py

clean: ## remove the virtualenv and caches (results/ is kept)
	rm -rf $(VENV) .pytest_cache
