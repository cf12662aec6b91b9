# Carbide's two everyday commands:
#   make run    start all of Carbide on the embedded store in ./carbide-data
#   make lab    boot a virtual rack of QEMU VMs on it (in another terminal)
#   make test   run every check and test (what CI runs)
# and the ones behind them: tools, generate, check-generated, lint, breaking,
# script-test, go-test, bench, bench-boot, bench-instance, bench-dhcp, os-image.

SHELL := /bin/bash
BIN := $(CURDIR)/bin
export PATH := $(BIN):$(PATH)
MODULES := gen ent backend edge sdk terraform-provider
PKGS := $(addprefix ./,$(addsuffix /...,$(MODULES)))

.PHONY: run lab run-bins test tools generate check-generated lint breaking script-test go-test bench bench-boot bench-instance scout os-image bench-dhcp bench-dns bench-dns-freshness

# carbide-api and the edge daemons under carbide-run (docs/run.md): as root,
# on a lab network in a network namespace of its own; with
# CARBIDE_INTERFACE, on that interface; otherwise the API alone. The OS
# image of scripts/build-os-image, when built, is served beside the
# discovery image.
run: run-bins
	@if [ -d .build/kernel/current/boot ]; then scripts/build-scout; \
	  else echo "make run: no kernel in .build/kernel (scripts/fetch-kernel): the discovery image is not rebuilt"; fi
	@if [ -f .build/os-image/debian-12-amd64.raw.zst ] && [ -d .build/artifacts ]; then \
	  ln -f .build/os-image/debian-12-amd64.raw.zst .build/artifacts/ 2>/dev/null || \
	  cp .build/os-image/debian-12-amd64.raw.zst .build/artifacts/; fi
	$(BIN)/carbide-run

# LAB_MACHINES QEMU VMs (3), each with an ipmi_sim BMC, on the network of a
# running `make run`, booted to Ready with a live view; Ctrl-C stops them.
LAB_MACHINES ?= 3
LAB_ACCEL ?= auto
lab: run-bins
	$(BIN)/carbide-run lab --machines $(LAB_MACHINES) --accel $(LAB_ACCEL)

run-bins:
	@mkdir -p $(BIN)
	go build -o $(BIN)/ ./backend/cmd/carbide-api ./edge/cmd/carbide-dhcp ./edge/cmd/carbide-pxe \
	  ./edge/cmd/carbide-dns ./edge/cmd/carbide-bmc ./edge/cmd/carbide-run ./sdk/cmd/carbide

test: check-generated lint breaking script-test go-test

# Builds the pinned tools (tools/go.mod) into ./bin.
tools:
	@mkdir -p $(BIN)
	GOWORK=off go -C tools build -o $(BIN)/ tool

# Regenerates everything generated: protobuf code in gen/, the ent client,
# and a new PostgreSQL migration when the ent schema changed.
generate: tools
	scripts/generate

check-generated: tools
	scripts/check-generated

lint: tools
	buf lint
	go vet $(PKGS)
	@out=$$(gofmt -l $(MODULES) tools | grep -v '^gen/' | grep -v '^ent/' || true); \
	  if [ -n "$$out" ]; then echo "gofmt -l lists:"; echo "$$out"; exit 1; fi

# buf breaking against the API before this change; in CI's shallow clone it
# fetches the history from origin, and it fails whenever it cannot compare.
breaking: tools
	scripts/breaking

# Tests of the scripts themselves (tools/scripttest, its own module): they run
# scripts/breaking in shallow clones of throwaway git repositories.
script-test: tools
	GOWORK=off go -C tools test -count=1 ./scripttest/

# Every Go test, then the DHCP packet path and the DNS query path under
# the fuzzer, briefly:
# malformed input must never crash the daemon. The tests' whole output
# (with the logs of the servers they start) is kept in .build/go-test.json
# and checked for the secrets they registered (sdk/testsecret): one
# that shows fails the build. The terminal gets what go test prints
# without -v.
go-test: tools
	@mkdir -p .build && rm -f .build/test-secrets
	go build -o $(BIN)/testlog ./sdk/testsecret/cmd/testlog
	set -o pipefail; CARBIDE_TEST_SECRETS=$(CURDIR)/.build/test-secrets \
	  go test -json -count=1 -timeout 20m $(PKGS) 2>&1 | \
	  testlog -log .build/go-test.json -secrets .build/test-secrets
	go test -run '^$$' -fuzz FuzzHandlePacket -fuzztime 5000x ./edge/internal/dhcpd/
	go test -run '^$$' -fuzz FuzzMessageType -fuzztime 5000x ./edge/internal/dhcpd/
	go test -run '^$$' -fuzz FuzzQuery -fuzztime 5000x ./edge/internal/dnsd/

# Benchmarks are measured, never asserted; docs/benchmarks.md has figures.
bench: tools
	go test -run '^$$' -bench . -benchtime 2000x -count 3 -timeout 30m ./backend/internal/apiserver/

# Network boot of a BIOS and a UEFI VM through Carbide and through dnsmasq
# with busybox httpd, BOOTS boots each, one VM at a time (docs/benchmarks.md).
# With QUIET (cores), each boot waits until other processes use fewer, and
# a boot during which they used more is done again.
# Needs root, QEMU and the kernel package (scripts/fetch-kernel).
BOOTS ?= 3
QUIET ?= 0
bench-boot:
	go test -run '^$$' -bench NetworkBoot -benchtime $(BOOTS)x -timeout 120m ./edge/e2e/ -boot.quiet=$(QUIET)

# An instance's life on a VM powered through ipmi_sim, phase by phase
# (docs/benchmarks.md): provisioning, the image write rate, the release.
bench-instance: os-image
	go test -run '^$$' -bench InstanceLifecycle -benchtime 1x -timeout 30m ./edge/e2e/

# The discovery image (docs/scout.md) in .build/artifacts/scout, from the
# kernel package scripts/fetch-kernel unpacked. The tests build their own.
scout:
	scripts/build-scout

# The Debian disk image of the instance tests (docs/os-image.md) in
# .build/os-image; .ci/run builds it. Run as root; it downloads Debian's
# packages through apt.
os-image:
	scripts/build-os-image

# carbide-dhcp (one replica and two) against Kea (memfile and PostgreSQL)
# and dnsmasq under perfdhcp, in network namespaces: a ladder of offered
# rates, an overload step and renewals, with the server stack on CPU 0 and
# perfdhcp on CPU 1, PostgreSQL durable. Run as root; with the defaults it
# takes about 15 minutes. BENCH_* environment variables set its parameters
# (scripts/bench-dhcp --help); tables and raw output go to .build/bench-dhcp/.
bench-dhcp: tools
	scripts/bench-dhcp

# carbide-dns against BIND (named) and Knot (knotd) serving the same
# DNS_MACHINES machines (an A record and a PTR each) loaded into carbide-api
# on PostgreSQL: start-up, memory, q/s at full load and latency at a fixed
# rate, each server on CPU 0 and dnsperf on CPU 1 (docs/benchmarks.md).
# DNS_SERVERS picks the servers. Run as root; about 10 minutes.
DNS_MACHINES ?= 100000
DNS_SERVERS ?= carbide-dns,named,knotd
bench-dns:
	go test -run '^$$' -bench '^BenchmarkDNS$$' -benchtime 1x -timeout 60m ./edge/e2e/ \
	  -dns.machines=$(DNS_MACHINES) -dns.servers=$(DNS_SERVERS)

# How long a change (a rename through the API) takes to reach two
# carbide-dns replicas, over DNS_CHANGES changes (docs/benchmarks.md).
DNS_CHANGES ?= 1000
bench-dns-freshness:
	go test -run '^$$' -bench '^BenchmarkDNSFreshness$$' -benchtime 1x -timeout 30m ./edge/e2e/ -dns.changes=$(DNS_CHANGES)
