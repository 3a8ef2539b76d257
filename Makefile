# The two commands of the README, plus helpers. Every target installs what it needs first.
.PHONY: up test deps bench release

deps:
	@scripts/ensure-deps.sh

## Start the whole system on the embedded default deployment (Ctrl-C stops it).
up: deps
	cargo run --bin edgebox -- up $(ARGS)

## Run every test: unit tests and the integration tests that start real daemons.
test:
	@scripts/ensure-deps.sh --test
	cargo test --workspace

release: deps
	cargo build --release --bin edgebox

bench: release
	@for script in benches/*.sh; do echo "== $$script"; bash "$$script"; done
