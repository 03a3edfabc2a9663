# podmesh: the two commands are `make run` and `make test` (see README.md).
SHELL := /bin/bash
.DEFAULT_GOAL := help

.PHONY: help setup build release run test test-unit test-e2e test-vm fuzz-build bench image clean

help:
	@echo "make run      install what is missing, then run the demo (needs root)"
	@echo "make test     install what is missing, then run the whole test suite (needs root)"
	@echo "make bench    proxy benchmark against stunnel, haproxy and nginx (needs root)"
	@echo "make image    build the podVM image with mkosi"

setup:
	@bash scripts/setup-host.sh

build:
	cargo build --workspace

# The shipping binaries (guest: podmesh, tsm-sim for the test image; host: the coordinator).
release:
	cargo build --release -p podmesh -p coordinator -p tsm-sim

run: setup release
	@bash scripts/run.sh

test: setup
	@bash scripts/test.sh

bench: setup
	cargo build --release -p podmesh -p podmesh-bench
	@bash tests/bench/run.sh

image: setup release
	@bash image/build.sh

clean:
	cargo clean
	rm -rf build
