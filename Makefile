# A thin, documented layer over the Python entry points. `make help` lists every target.
# Knobs: PROFILE=tiny|mobilenet  TRAINER=torch|tf  ARTIFACTS=dir  PYTHON=python3.11  PREREQS=check

# Recursively expanded: looked up when used, so a python3.11 that `make prereqs` just installed is found.
PYTHON   ?= $(shell command -v python3.11 2>/dev/null || echo python3)
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
.PHONY: help prereqs setup protos train export deploy deploy-tf deploy-torch smoke undeploy status predict edge bench-batching bench-dropin \
        loadtest tune sweep loadtest-distributed bad-input chaos soak demo test lint clean

help: ## List every target with one line each
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-21s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

prereqs: ## Check Python 3.11, venv, Java 17+, chromium, Compose; install missing ones with apt-get (as root)
	@PYTHON=$(PYTHON) bash scripts/prereqs.sh

setup: prereqs $(STAMP) ## prereqs, then .venv from requirements.lock (does nothing when it is up to date)

$(STAMP): requirements.lock scripts/install_lock.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) scripts/install_lock.py requirements.lock
	@touch $@
	@echo "setup: $(VENV) matches requirements.lock"

train: setup ## Train PROFILE (default tiny) with TRAINER (default torch) into artifacts/checkpoints/
	$(PY) -m training train --profile $(PROFILE) --trainer $(TRAINER)

export: setup ## Export SavedModel, TorchServe .mar and TFLite, gated on parity; print the table
	$(PY) -m export --model $(MODEL)

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

deploy-torch: protos $(EXPORTED) ## Start the real TorchServe (compose image if Docker + Compose v2 answer, else native; token auth on), smoke it
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
	$(PY) -m serving.tf.bench_dropin

bench-dropin: protos ## Benchmark: drop-in gRPC/REST vs in-process and TorchServe, 3 repeats (BENCH_ARGS="--models tiny")
	$(PY) -m loadtests.bench_dropin $(BENCH_ARGS)

loadtest: protos ## Locust against the four deployed targets, 3 repeats each, median [min-max] + summary.json (LOADTEST_ARGS=...)
	$(PY) -m loadtests run $(LOADTEST_ARGS)

tune: protos ## Choose each server's knobs from a small grid, 3 repeats; leaves them deployed (TUNE_ARGS="--repeats 3")
	$(PY) -m loadtests tune $(TUNE_ARGS)

sweep: protos ## With the knobs deployed: saturation, SLO maximum by search, p99 at a common load, 3 repeats (SWEEP_ARGS=...)
	$(PY) -m loadtests sweep $(SWEEP_ARGS)

loadtest-distributed: protos ## make loadtest with a locust master and WORKERS worker processes (default 2)
	$(PY) -m loadtests run --workers $(or $(WORKERS),2) $(LOADTEST_ARGS)

bad-input: protos ## Every malformed request to the four deployed targets; the next good one must pass (reliability.json)
	$(PY) -m reliability matrix

chaos: protos ## Faults under load: kill the TorchServe worker, rollouts, a broken version, restarts, 2x overload (CHAOS_ARGS=...)
	$(PY) -m reliability chaos $(CHAOS_ARGS)

soak: protos ## Minutes of load at 70% of the sweep's SLO maximum; server RSS growth per stack (SOAK_ARGS="--minutes 5")
	$(PY) -m reliability soak $(SOAK_ARGS)

# A demo stage that fails stops the demo with its name and leaves no server running.
define demo_stage
	@echo "demo: == $(1) =="
	@PREREQS_QUIET=1 $(MAKE) --no-print-directory $(1) $(2) || { echo "demo: stopped at '$(1)' (its output is above); stopping servers"; \
		$(MAKE) --no-print-directory undeploy >/dev/null 2>&1; exit 1; }
endef

demo: setup ## Everything on this machine: train, export, edge, deploy, a short sweep, undeploy, report
	$(call demo_stage,train)
	$(call demo_stage,export)
	$(call demo_stage,edge)
	$(call demo_stage,deploy)
	$(call demo_stage,sweep,SWEEP_ARGS="--quick --duration 8 --warmup 2")
	$(call demo_stage,undeploy)
	$(call demo_stage,report)
	@echo "demo: done; the report is $(ARTIFACTS)/report/index.html (and report.md beside it)"

test: setup ## Run the test suite (real TorchServe, real TensorFlow)
	$(PY) -m pytest

lint: setup ## ruff over the whole repository, and the layer rule (import-linter, pyproject.toml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

clean: ## Remove artifacts/ (keeps .venv)
	rm -rf artifacts

# Containers, GPU hosts and scale-out (issue 8)
# Compose v2 (`docker compose`) when the plugin exists, else Debian's docker-compose, which can
# validate the file (compose-config, no engine needed) and remove containers (compose-down) but
# not deploy: compose-up/compose-gpu go through serving.deploy, which needs v2 (`up --wait`) and
# an engine and says so in one line (exit 2) otherwise. `=` so it is only looked up when used.
COMPOSE = $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
# docker-compose.yml reads ARTIFACTS_DIR; an absolute path works wherever ARTIFACTS points.
COMPOSE_ENV = ARTIFACTS_DIR=$(abspath $(ARTIFACTS))

.PHONY: compose-up compose-gpu compose-down compose-config gpu-bench

compose-up: protos $(EXPORTED) ## make deploy with the official CPU images (compose profile cpu), equal limits
	TF_SERVER=compose TS_SERVER=compose $(PY) -m serving deploy

compose-gpu: protos $(EXPORTED) ## make deploy with the official GPU images on one NVIDIA GPU (profile gpu); PROFILE=mobilenet
	COMPOSE_PROFILE=gpu TF_SERVER=compose TS_SERVER=compose $(PY) -m serving deploy

compose-down: setup ## Undeploy, then remove every container docker-compose.yml started (all profiles)
	$(PY) -m serving undeploy
	$(COMPOSE_ENV) $(COMPOSE) --profile cpu --profile gpu --profile loadtest down

compose-config: ## Validate docker-compose.yml and print it resolved (no Docker engine needed)
	$(COMPOSE_ENV) $(COMPOSE) --profile cpu --profile gpu --profile loadtest config

gpu-bench: setup ## In-process ceiling of torch and TF on a GPU, batch 1..256, float32/16/bf16 (PROFILE=mobilenet: the GPU workload)
	$(PY) -m serving.gpu_bench --model $(MODEL)

# Report (issue 6)
.PHONY: report train-both

report: setup ## Build the report (index.html, report.md, tables/*.csv) from results alone (REPORT_ARGS="--baseline RUN")
	$(PY) -m report $(REPORT_ARGS)

train-both: setup ## Train PROFILE with both trainers: checkpoints <profile> (torch) and <profile>-tf (tf) for the report
	$(PY) -m training train --profile $(PROFILE) --trainer torch
	$(PY) -m training train --profile $(PROFILE) --trainer tf --model-name $(PROFILE)-tf
