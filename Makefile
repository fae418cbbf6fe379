# ddb-relay: every target installs what it needs (into .venv and rustup).
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV        := .venv
PY          ?= python3
ARCHS       ?= arm64 x86_64
LAMBDA_DIR  := target/lambda
CARGO       := cargo

.PHONY: help toolchain venv build test lint fmt bench zip clean

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

toolchain: ## Install the pinned Rust toolchain (rust-toolchain.toml) with rustfmt and clippy.
	@rustup show active-toolchain >/dev/null

$(VENV)/.stamp: infra/build/requirements.txt
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r infra/build/requirements.txt
	touch $@

venv: $(VENV)/.stamp ## Create .venv with the pinned build tools (cargo-lambda).

build: toolchain ## Build everything (debug).
	$(CARGO) build --workspace --all-targets --locked

test: toolchain ## Run every test.
	$(CARGO) test --workspace --locked

lint: toolchain ## rustfmt check and clippy with warnings as errors.
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt: toolchain ## Format the code.
	$(CARGO) fmt --all

bench: toolchain ## Request counts per 1M events, then CPU per event (criterion).
	$(CARGO) bench -p relay-core --bench costs --locked
	$(CARGO) bench -p relay-core --bench pipeline --locked

zip: toolchain venv ## Lambda bootstrap.zip per function and architecture, under target/lambda/<arch>/<function>/.
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

clean: ## Remove build outputs and .venv.
	$(CARGO) clean
	rm -rf $(VENV)
