# A thin, documented layer over the Python entry points. `make help` lists every target.
# Knobs: PROFILE=tiny|mobilenet  TRAINER=torch|tf  ARTIFACTS=dir  PYTHON=python3.11

PYTHON   ?= python3
VENV     ?= .venv
PY       := $(VENV)/bin/python
PROFILE  ?= tiny
TRAINER  ?= torch
MODEL    ?= $(PROFILE)
STAMP    := $(VENV)/.installed-lock
ARTIFACTS ?= artifacts
# What deploy needs: built on demand, so `make deploy` works on a fresh clone.
CHECKPOINT := $(ARTIFACTS)/checkpoints/$(MODEL)/checkpoint.json
EXPORTED   := $(ARTIFACTS)/models/torch/$(MODEL).mar

export PROFILE TRAINER MODEL ARTIFACTS

.DEFAULT_GOAL := help
.PHONY: help setup protos train export deploy deploy-tf deploy-torch smoke undeploy status predict edge bench-batching demo test lint clean

help: ## List every target with one line each
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-15s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

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

protos: setup ## Generate TorchServe gRPC stubs from the protos inside the installed TorchServe jar
	$(PY) -m serving.torch.protos

$(CHECKPOINT): | $(STAMP)
	$(MAKE) --no-print-directory train

$(EXPORTED): $(CHECKPOINT)
	$(MAKE) --no-print-directory export

edge: setup $(EXPORTED) ## TFLite (float32/16, dynamic and full int8), ExecuTorch and ONNX files, measured
	$(PY) -m edge --model $(MODEL)

deploy-tf: protos $(EXPORTED) ## Start TF Serving (compose image, official binary, or the local drop-in) and smoke it
	$(PY) -m serving deploy --target tf

deploy-torch: protos $(EXPORTED) ## Start the real TorchServe natively (token auth on) and smoke it
	$(PY) -m serving deploy --target torch

deploy: protos $(EXPORTED) ## deploy-tf and deploy-torch
	$(PY) -m serving deploy --target all

smoke: protos ## Predict test images on all four transports and check the argmax against the reference
	$(PY) -m serving smoke --target all

undeploy: ## Stop exactly what deploy started; no port is left listening
	$(PY) -m serving undeploy

status: ## Show what deploy started (server identity, ports, knobs)
	$(PY) -m serving status

predict: protos ## One prediction for humans: make predict TARGET=tf-grpc IMAGE=digit.png
	$(PY) -m serving predict --target $(or $(TARGET),tf-rest) --image $(IMAGE)

bench-batching: setup ## Benchmark: drop-in throughput with server-side batching off vs on (prints the ratio)
	$(PY) -m serving.tf.dropin.bench

demo: setup ## End to end on this machine: train, export (parity gate), edge, deploy both servers, smoke, undeploy
	$(MAKE) --no-print-directory train
	$(MAKE) --no-print-directory export
	$(MAKE) --no-print-directory edge
	$(MAKE) --no-print-directory deploy || { $(MAKE) --no-print-directory undeploy; exit 1; }
	$(MAKE) --no-print-directory undeploy
	@echo "demo: done; artifacts and manifest.json are in artifacts/"

test: setup ## Run the test suite (real TorchServe, real TensorFlow)
	$(PY) -m pytest

lint: setup ## ruff over the whole repository
	$(VENV)/bin/ruff check .

clean: ## Remove artifacts/ (keeps .venv)
	rm -rf artifacts
