# A thin, documented layer over the Python entry points. `make help` lists every target.
# Knobs: PROFILE=tiny|mobilenet  TRAINER=torch|tf  ARTIFACTS=dir  PYTHON=python3.11

PYTHON   ?= python3
VENV     ?= .venv
PY       := $(VENV)/bin/python
PROFILE  ?= tiny
TRAINER  ?= torch
MODEL    ?= $(PROFILE)
STAMP    := $(VENV)/.installed-lock

export PROFILE TRAINER MODEL

.DEFAULT_GOAL := help
.PHONY: help setup train export demo test lint clean

help: ## List every target with one line each
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: $(STAMP) ## Create .venv from requirements.lock (does nothing when it is up to date)

$(STAMP): requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	@touch $@
	@echo "setup: $(VENV) matches requirements.lock"

train: setup ## Train PROFILE (default tiny) with TRAINER (default torch) into artifacts/checkpoints/
	$(PY) -m training train --profile $(PROFILE) --trainer $(TRAINER)

export: setup ## Export SavedModel, TorchServe .mar and TFLite, gated on parity; print the table
	$(PY) -m training export --model $(MODEL)

demo: setup ## End to end on this machine: setup, train, export with the parity gate
	$(MAKE) --no-print-directory train
	$(MAKE) --no-print-directory export
	@echo "demo: done; artifacts and manifest.json are in artifacts/"

test: setup ## Run the test suite (real TorchServe, real TensorFlow)
	$(PY) -m pytest

lint: setup ## ruff over the whole repository
	$(VENV)/bin/ruff check .

clean: ## Remove artifacts/ (keeps .venv)
	rm -rf artifacts
