# strata: `make` lists the targets. Needs Go 1.26 (found on PATH or in
# /usr/local/go/bin); targets that mount need root.

SHELL         := /bin/bash
.DEFAULT_GOAL := help
export PATH   := /usr/local/go/bin:$(PATH)

GO      ?= go
GO_MIN  := 1.26
BIN     := bin/strata
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/stratafs/strata/cmd/strata/command.Version=$(VERSION)

# STRATA_REQUIRE_MOUNT=1 turns skipped mount tests into failures.
export STRATA_REQUIRE_MOUNT

.PHONY: help build test e2e stress fuzz demo bench bench-compare bench-backends lint deps check-go

help: ## list the targets
	@echo "usage: make TARGET"
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z0-9-]*:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: check-go ## build bin/strata
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/strata

test: check-go deps ## go vet, then go test -race ./... (STRATA_REQUIRE_MOUNT=1: mount tests must run)
	$(GO) vet ./...
	$(GO) test -race -timeout 25m ./... 2>&1

e2e: build deps ## end-to-end: real containerd + runc, strata serve as proxy snapshotter, kernel and FUSE backends (root)
	bash internal/e2e/setup.sh
	STRATA_E2E=1 STRATA_E2E_PROXY="$(CURDIR)/$(BIN) serve --backend {backend} --root {root} --address {address} --metrics-address {metrics}" \
		$(GO) test -count=1 -v -timeout 5m ./internal/e2e 2>&1

stress: check-go deps ## long checks kept out of make test: crash kills, a million entries, GOMAXPROCS=1 rerun (root)
	STRATA_STRESS=1 $(GO) test -count=1 -timeout 60m -v -run 'TestCrash$$|TestMillionEntries|TestLoadFUSE|TestMetamorphic' ./internal/reliability 2>&1
	GOMAXPROCS=1 $(GO) test -count=1 -timeout 30m ./... 2>&1

fuzz: check-go ## run each fuzz target for FUZZTIME (default 30s)
	@bash .ci/fuzz

demo: build deps ## a guided tour: import an image into a store, inspect, mount, write, diff, commit (root)
	@STRATA=$(BIN) bash internal/demo/demo.sh

bench: check-go ## run every benchmark with -benchmem (no tests)
	$(GO) test -run '^$$' -bench . -benchmem ./...

bench-compare: check-go ## compare benchmarks of REF=<git ref> with the work tree (benchstat)
	@test -n "$(REF)" || { echo "make: bench-compare needs REF=<git ref>" >&2; exit 1; }
	command -v benchstat >/dev/null || $(GO) install golang.org/x/perf/cmd/benchstat@latest
	rm -rf .cache/bench-ref && git worktree add -f --detach .cache/bench-ref $(REF)
	cd .cache/bench-ref && $(GO) test -run '^$$' -bench '$(or $(BENCH),.)' -benchmem -count 6 $(or $(PKGS),./overlay/ ./snapshot/...) > ../bench-old.txt
	$(GO) test -run '^$$' -bench '$(or $(BENCH),.)' -benchmem -count 6 $(or $(PKGS),./overlay/ ./snapshot/...) > .cache/bench-new.txt
	git worktree remove -f .cache/bench-ref
	PATH=$$PATH:$$($(GO) env GOPATH)/bin benchstat .cache/bench-old.txt .cache/bench-new.txt

bench-backends: build deps ## cross-backend harness: native, kernel, strata, fuse-overlayfs (root; QUICK=1 for < 3 min)
	$(GO) run ./bench/cmd/strata-bench $(if $(QUICK),--quick) --out bench/out $(BENCH_FLAGS)

lint: check-go ## gofmt check and go vet; golangci-lint v2 too when installed
	@files=$$(gofmt -l $$(find . -name '*.go' -not -path './.cache/*' -not -path '*/testdata/*')); \
	if [ -n "$$files" ]; then echo "lint: not gofmt'ed:"; echo "$$files"; exit 1; fi
	$(GO) vet ./...
	@if command -v golangci-lint >/dev/null && golangci-lint version 2>&1 | grep -q 'version v\?2\.'; then \
		golangci-lint run ./...; \
	else \
		echo "lint: golangci-lint v2 not installed; skipped (go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@latest)"; \
	fi

deps: ## install the Debian packages in .ci/packages.txt that are missing (root)
	@bash .ci/deps

check-go:
	@command -v $(GO) >/dev/null || { echo "make: Go $(GO_MIN) or newer is needed: install it in /usr/local/go (see go.dev/doc/install)" >&2; exit 1; }
	@$(GO) env GOVERSION | awk -v min=$(GO_MIN) '{ v = $$0; sub(/^go/, "", v); split(v, a, "."); split(min, b, "."); \
		if (a[1] + 0 < b[1] + 0 || (a[1] == b[1] && a[2] + 0 < b[2] + 0)) { print "make: Go " min " or newer is needed, found " $$0 > "/dev/stderr"; exit 1 } }'
