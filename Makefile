# migbench: `make demo` sets up everything and runs the demo matrix; `make test` runs the suite.
# Both work as root on a fresh Debian 12 machine; every step is skipped when already done.

SHELL := /bin/bash
PYTHON ?= /usr/bin/python3
VENV := .venv
BIN := $(VENV)/bin
QEMU10 := build/qemu-10.0
# openssh-server and openssh-client (its ssh-keygen) make the SSH test bed; the harness speaks
# SSH through paramiko and needs no ssh binary. redis-server is the lab's broker (README: A lab
# of host pairs); tests/integration/test_lab.py starts its own on loopback. mmdebstrap and
# e2fsprogs build the Debian guest (migbench image build --distro debian).
APT_PACKAGES := qemu-system-x86 qemu-utils busybox-static gcc libc6-dev cpio lz4 zstd xz-utils \
	kmod iproute2 python3-venv python3-pip git ca-certificates chromium chromium-driver \
	openssh-server openssh-client mmdebstrap e2fsprogs redis-server
DEMO_OUT ?= results/demo-$(shell date +%Y%m%d-%H%M%S)
PYTEST_ARGS ?=

SEED_OUT ?= results/seed-$(shell date +%Y%m%d-%H%M%S)
SEED_RATE ?= 200mbit
SEED_HOSTS := /tmp/migbench-testbed/hosts.yaml
# A checkout keeps the caches (guest image, QEMU probes, fio) in build/, where the tests look too;
# an installed migbench uses $XDG_CACHE_HOME/migbench (README: Installing).
export MIGBENCH_CACHE := $(CURDIR)/build

.PHONY: demo test setup deps qemu venv fio image lint bench seed clean

demo: setup
	$(BIN)/migbench run matrices/demo.yaml --out $(DEMO_OUT)
	$(BIN)/migbench show $(DEMO_OUT)

test: setup lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

setup: deps qemu venv fio image

deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
	    | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "installing:" $$missing; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; \
	fi

qemu: $(QEMU10)/usr/bin/qemu-system-x86_64

$(QEMU10)/usr/bin/qemu-system-x86_64: scripts/install-qemu10.sh
	sh scripts/install-qemu10.sh $(QEMU10)

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

fio:
	sh scripts/build-fio.sh build/fio

# The Debian guest too (tests/integration/test_services.py; matrices/services.yaml): about 40 s
# once, from this machine's apt sources; cached in build/image/debian-*.
image: venv fio
	$(BIN)/migbench image build --fio --distro debian

# The talk's findings at small scale (docs/reproducing-the-talk.md): about an hour (the
# compress-bound matrix adds 14 cells x 3 runs). The report gets the default before/after slides.
# The seed matrices run between the test bed's two SSH hosts, over a migration link shaped by tc
# to SEED_RATE (the network is the bottleneck, as in production); the bed is removed afterwards.
# seed-compress-bound runs on the local pair instead: an unshaped link, so that the compress
# threads, not the link, set the pace.
seed: setup
	$(BIN)/migbench testbed up --rate $(SEED_RATE)
	trap '$(BIN)/migbench testbed down' EXIT; set -e; \
	for m in compression xbzrle autoconverge; do \
		$(BIN)/migbench run matrices/seed-$$m.yaml --hosts $(SEED_HOSTS) --out $(SEED_OUT); \
	done; \
	$(BIN)/migbench run matrices/seed-compress-bound.yaml --out $(SEED_OUT); \
	$(BIN)/migbench report $(SEED_OUT) --slides -o reports/$(notdir $(SEED_OUT))
	@echo "report: reports/$(notdir $(SEED_OUT))/index.html"

lint: venv
	$(BIN)/ruff check harness tests benchmarks
	$(BIN)/mypy

bench: setup
	$(BIN)/python -m pytest benchmarks --benchmark-only

clean:
	rm -rf build $(VENV) .pytest_cache .mypy_cache
