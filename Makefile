# Manul: the two README commands and the BPF build.
#   make run    install what is missing, build, run the agent on this host
#   make test   install what is missing, build, run the whole test suite
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
CLANG ?= clang
ARCH := x86
BPF_SRC := $(wildcard bpf/*.bpf.c)
BPF_OBJ := $(patsubst bpf/%.bpf.c,build/bpf/%.bpf.o,$(BPF_SRC))
TEST_BPF_SRC := $(wildcard tests/bpf/*.bpf.c)
TEST_BPF_OBJ := $(patsubst tests/bpf/%.bpf.c,build/bpf/tests/%.bpf.o,$(TEST_BPF_SRC))
BPF_HDR := $(wildcard bpf/include/*.h bpf/lib/*.h)
BPF_CFLAGS := -O2 -g -target bpf -D__TARGET_ARCH_$(ARCH) -Wall -Werror \
	-Wno-unused-function -Ibpf/include -Ibpf/lib -mcpu=v3
REGISTRY ?= examples/registry
POLICIES ?= examples/policies

.PHONY: all deps test-deps bpf run test lint unit host kernel bench vmlinux clean

all: bpf

deps:
	@scripts/install-deps

test-deps:
	@scripts/install-deps --test

bpf: deps $(BPF_OBJ) $(TEST_BPF_OBJ)

build/bpf/%.bpf.o: bpf/%.bpf.c $(BPF_HDR)
	@mkdir -p build/bpf
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

# Objects used only by tests (tests/bpf) are built beside, never shipped.
build/bpf/tests/%.bpf.o: tests/bpf/%.bpf.c $(BPF_HDR)
	@mkdir -p build/bpf/tests
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

run: bpf
	$(VENV)/bin/manul run --registry $(REGISTRY) --policies $(POLICIES)

lint: deps
	$(VENV)/bin/ruff check agent compiler tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

unit: deps
	$(VENV)/bin/pytest -q tests/unit

host: bpf
	$(VENV)/bin/pytest -q tests/host

kernel: test-deps bpf
	vagrant/run-kernel-tests

test: test-deps bpf
	$(MAKE) --no-print-directory lint
	$(VENV)/bin/pytest -q tests/unit tests/host
	vagrant/run-kernel-tests

bench: bpf
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# Regenerate the vendored vmlinux.h from this machine's kernel BTF.
vmlinux:
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > bpf/include/vmlinux.h

clean:
	rm -rf build
