# ddb-relay: every target installs what it needs (into .venv and rustup).
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV        := .venv
PY          ?= python3
ARCHS       ?= arm64 x86_64
LAMBDA_DIR  := target/lambda
CARGO       := cargo

.PHONY: help toolchain venv setup build test unit validate e2e e2e-scale demo lint fmt bench bench-local bench-fanout bench-memory bench-replication bench-coldstart zip \
        local-start local-stop local-reset build-local deploy-local clean

help: ## List the targets.
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

toolchain: ## Install the pinned Rust toolchain (rust-toolchain.toml) with rustfmt and clippy.
	@rustup show active-toolchain >/dev/null

setup: ## Create .venv (cargo-lambda, sam-cli, cfn-lint) and .venv/ministack (idempotent).
	infra/local/setup.sh

venv: setup

build: toolchain ## Build everything (debug).
	$(CARGO) build --workspace --all-targets --locked

test: toolchain ## Every test: unit, handler and property tests, template validation, end-to-end on MiniStack.
	@echo "test: unit from $$(date +%T)"
	$(MAKE) unit
	@echo "test: validate from $$(date +%T)"
	$(MAKE) validate
	@echo "test: e2e from $$(date +%T)"
	$(MAKE) e2e
	@echo "test: done at $$(date +%T)"

unit: toolchain ## Unit, handler and property tests (no emulator).
	$(CARGO) test --workspace --locked

validate: setup ## sam validate --lint and cfn-lint 1.52 on template.yaml.
	infra/validate.sh

e2e: toolchain setup ## End-to-end tests on MiniStack with the real template and binaries.
	infra/local/e2e.sh

e2e-scale: toolchain setup ## The fanned-out seed e2e tests at 200,000 items (scan and export paths, ~15 min).
	RELAY_E2E_ITEMS=$(or $(ITEMS),200000) infra/local/e2e.sh fanned_out --nocapture

demo: toolchain setup ## A whole live migration, locally, narrated (no AWS account).
	infra/local/demo.sh

local-start: setup ## Start MiniStack on 127.0.0.1:4566 (pid and log in .local/).
	infra/local/start.sh

local-stop: ## Stop MiniStack.
	infra/local/stop.sh

local-reset: ## Wipe MiniStack's state.
	infra/local/reset.sh

build-local: toolchain setup ## sam build for the local emulator (x86_64).
	infra/local/build.sh

deploy-local: build-local ## Build and sam deploy template.yaml to MiniStack: make deploy-local STACK=name PARAMS="SourceTableName=... SourceStreamArn=... TargetTableName=..." [TRANSFORM_FILE=t.yaml]
	TRANSFORM_FILE="$(TRANSFORM_FILE)" infra/local/deploy.sh $(or $(STACK),ddb-relay-local) $(PARAMS)

lint: toolchain ## rustfmt check and clippy with warnings as errors.
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt: toolchain ## Format the code.
	$(CARGO) fmt --all

# The forwarder's allocator settings, as template.yaml deploys them: the
# handler bench runs with them (BENCHMARKS.md, round 5).
FORWARDER_TUNABLES = $(shell sed -n 's/^ *GLIBC_TUNABLES: *//p' template.yaml)

bench: toolchain ## Request counts per 1M events, then CPU per event: the real handlers (JSON in), then the inner loops (criterion).
	$(CARGO) bench -p relay-core --bench costs --locked
	GLIBC_TUNABLES="$(FORWARDER_TUNABLES)" $(CARGO) bench -p relay-applier --bench handlers --locked
	$(CARGO) bench -p relay-core --bench pipeline --locked

bench-local: toolchain setup ## Scan-copy and verify items/s against MiniStack's raw scan and write rates.
	infra/local/bench.sh

bench-fanout: toolchain setup ## The scan copy fanned out over 1, 2, 4, 8 copy workers against raw PutItem with as many writers, on MiniStack.
	infra/local/bench-fanout.sh

bench-memory: toolchain setup ## Peak RSS of verify and the tombstone sweep at 1k-200k items on MiniStack (~15 min).
	infra/local/bench-memory.sh

bench-replication: toolchain setup ## End to end on MiniStack: replication changes/s against raw BatchWriteItem, and lag p50/p99 at steady write rates.
	infra/local/bench-replication.sh

bench-coldstart: toolchain setup ## Cold start and peak RSS of the release bootstraps against a local fake Lambda Runtime API (no emulator).
	infra/local/bench-coldstart.sh

zip: toolchain setup ## Lambda bootstrap.zip per function and architecture, under target/lambda/<arch>/<function>/.
	@for arch in $(ARCHS); do \
	  case $$arch in \
	    arm64)  target=aarch64-unknown-linux-gnu; flag=--arm64 ;; \
	    x86_64) target=x86_64-unknown-linux-gnu;  flag=--x86-64 ;; \
	    *) echo "unknown architecture '$$arch' (use arm64 or x86_64)" >&2; exit 2 ;; \
	  esac; \
	  rustup target add $$target >/dev/null; \
	  PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(CARGO) lambda build --release --locked $$flag \
	    --output-format zip --lambda-dir $(LAMBDA_DIR)/$$arch; \
	done
	@ls -l $(LAMBDA_DIR)/*/*/bootstrap.zip

clean: ## Stop MiniStack; remove build outputs, .venv and .local.
	-infra/local/stop.sh
	$(CARGO) clean
	rm -rf $(VENV) .local .aws-sam
