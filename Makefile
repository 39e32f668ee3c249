# luumen-agent — the two commands a newcomer needs are `make run` and `make test`.
CARGO ?= cargo

.PHONY: run test deps build lint fmt unit integration clean

## The whole system on this machine: luumen-api on loopback with a fresh data dir, this machine
## registered as a host (local protocol), one agent cycle, and what the API now holds for it.
run: build
	bash examples/run-local.sh

## Everything CI runs: system packages, formatting, lints, unit, doc and integration tests.
test: deps build lint
	$(CARGO) test --workspace --doc
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast; \
	else \
		$(CARGO) test --workspace --no-fail-fast; \
	fi

## System packages the tests need (openssh-server, sudo, cron, dmidecode); no-op when present.
deps:
	bash tests/setup/install-deps.sh

build:
	$(CARGO) build -p luumen-agent -p luumen-api

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean

# make bench / make bench-quick (issue 7)
include bench/Makefile.inc
