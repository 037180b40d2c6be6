# The single entry point: local runs and CI call the same targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
NATIVE := $(VENV)/.spyglass-native
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# rustup's cargo, when it is there, before Debian's
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: help demo test unit integration soak lint deps system-deps stack-up stack-down stack-status schemas dashboards clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(BIN)/spyglass: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt --upgrade pip
	PIP_CONSTRAINT=constraints.txt $(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $@

# the native event decoder (schemas/native, Rust): built by maturin into the venv
$(NATIVE): $(BIN)/spyglass schemas/native/Cargo.toml schemas/native/Cargo.lock schemas/native/pyproject.toml schemas/native/src/lib.rs
	@command -v cargo >/dev/null || { echo "cargo is missing: make system-deps installs it (Debian package cargo)"; exit 1; }
	PIP_CONSTRAINT=constraints.txt $(BIN)/pip install -q -c constraints.txt ./schemas/native
	touch $@

deps: $(BIN)/spyglass system-deps $(NATIVE) ## Python venv + native decoder + system packages + Kafka jars + Alertmanager build (cached in ~/.cache/spyglass)
	$(BIN)/spyglass stack fetch

system-deps: ## Debian packages the local stack and tests need (clickhouse-server, java, maven, cargo, chromium); installs only what is missing
	@missing=""; \
	command -v clickhouse-server >/dev/null || [ -x /usr/sbin/clickhouse-server ] || missing="$$missing clickhouse-server clickhouse-client"; \
	command -v java >/dev/null || missing="$$missing default-jre-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	command -v cargo >/dev/null || missing="$$missing cargo"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "missing Debian packages:$$missing (run: sudo apt-get install$$missing)"; exit 1; fi; \
	fi

demo: $(BIN)/spyglass $(NATIVE) ## the main job end to end: local Kafka, simulated traffic, embedded store, live view
	$(BIN)/spyglass demo

test: deps ## all tests: unit, then integration against a real Kafka broker and ClickHouse server
	$(BIN)/pytest -q

unit: $(BIN)/spyglass $(NATIVE) ## unit tests only (no services)
	$(BIN)/pytest -q tests/unit

integration: deps ## integration tests only
	$(BIN)/pytest -q tests/integration

SOAK_CYCLES ?= 50
soak: deps ## kill -9 a worker at random times SOAK_CYCLES times (default 50) while the simulator produces; the fault tests' accounting at the end
	SPYGLASS_TEST_SOAK_CYCLES=$(SOAK_CYCLES) $(BIN)/pytest -q -s -p no:cacheprovider tests/fault/test_soak.py

lint: $(BIN)/spyglass ## ruff
	$(BIN)/ruff check streams detectors schemas grafana tests

schemas: $(BIN)/spyglass ## regenerate the published JSON Schemas from the contract
	$(BIN)/spyglass schemas export

dashboards: $(BIN)/spyglass ## regenerate grafana/dashboards/*.json and the alert rules from grafana/dashboards_src
	$(BIN)/python -m grafana.dashboards_src

stack-up: deps ## start the local stack (Kafka + ClickHouse server) and wait until ready
	$(BIN)/spyglass stack up
stack-down: $(BIN)/spyglass ## stop the local stack
	$(BIN)/spyglass stack down
stack-status: $(BIN)/spyglass
	$(BIN)/spyglass stack status

clean: ## remove the venv and the local stack's data (not the jar cache)
	-$(BIN)/spyglass stack down
	rm -rf $(VENV) .stack

# Prometheus of docker-compose.yml's version, for tests/integration/test_prometheus.py (which skips without it):
# not part of deps, a cold build takes minutes; cached, so a second run does nothing
PROM_DIR = $${SPYGLASS_CACHE_DIR:-$$HOME/.cache/spyglass}/prometheus-v3.16.0
.PHONY: prometheus
prometheus: ## build Prometheus 3.16.0 into ~/.cache/spyglass (the pipeline-health PromQL test; not in deps)
	@d=$(PROM_DIR); test -x $$d/prometheus && exit 0; tmp=$$(mktemp -d); \
	  GOBIN=$$tmp CGO_ENABLED=0 go install github.com/prometheus/prometheus/cmd/prometheus@v0.316.0 && \
	  mkdir -p $$d && mv $$tmp/prometheus $$d/prometheus; rc=$$?; rm -rf $$tmp; exit $$rc
