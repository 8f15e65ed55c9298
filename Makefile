# canhazgpu: see README.md. Every target works on a fresh Debian 12 with Go.
GO      ?= go
BIN     := bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
DATE    ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS := -X canhazgpu/internal/version.Version=$(VERSION) \
           -X canhazgpu/internal/version.Commit=$(COMMIT) \
           -X canhazgpu/internal/version.Date=$(DATE)
# go-nvml's cgo preamble warns about functions NVIDIA marked deprecated.
export CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations

PROGRAMS := canhazgpu:./cmd/canhazgpu canhazgpu-prolog:./prolog canhazgpu-epilog:./epilog canhazgpu-healthcheck:./cmd/canhazgpu-healthcheck

# staticcheck, pinned, through the Go module proxy like nfpm.
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: build test testdeps demo bench lint clean deps package web-screenshots

build:
	@mkdir -p $(BIN)
	@for p in $(PROGRAMS); do \
		name=$${p%%:*}; pkg=$${p#*:}; \
		$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/$$name $$pkg || exit 1; \
	done

# deps installs what the tests and the demo run against (root only).
deps:
	@scripts/install-deps.sh

# test runs every test: with CANHAZGPU_REQUIRE_ALL=1 a test whose real
# dependency is missing fails instead of skipping (internal/testreq).
test: testdeps lint
	CANHAZGPU_REQUIRE_ALL=1 $(GO) test -race -count=1 -timeout 30m ./...

# testdeps installs what is missing (as root), then lists at once, before
# the long run, everything the tests still lack.
testdeps:
	@if [ "$$(id -u)" = 0 ]; then scripts/install-deps.sh; fi
	@$(GO) run ./internal/testreq/preflight

demo: deps build
	@scripts/demo.sh

# web-screenshots writes the dashboard's pictures in docs/images/ from the
# browser test's cluster (docs/web.md).
web-screenshots:
	CANHAZGPU_SCREENSHOTS=$(CURDIR)/docs/images $(GO) test -count=1 -run '^TestDashboardInABrowser$$' ./internal/cli/

# Figures and how to read them: docs/benchmarks.md. The SLURM benchmark
# needs root and the SLURM packages (installed by deps).
bench: deps build
	$(GO) test -run '^$$' -bench . -benchtime 2s ./allocator/store/ ./internal/health/ ./internal/pbs/ ./internal/cli/e2e/
	$(GO) test -run '^$$' -bench Web -benchtime 10x -benchmem ./internal/cli/
	$(GO) test -run '^$$' -bench SlurmJob -benchtime 300x ./integration/

# package builds dist/*.deb and dist/*.rpm; see docs/install.md.
package:
	@VERSION="$(VERSION)" COMMIT="$(COMMIT)" DATE="$(DATE)" packaging/package.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

clean:
	rm -rf $(BIN) dist
