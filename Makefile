# rollback-agent. `make demo` and `make test` are all a newcomer needs;
# both fetch the pinned tools they use into ./bin first.

SHELL        := /bin/bash
GO           ?= go
BIN          := $(CURDIR)/bin
IMDS_MOCK    := github.com/aws/amazon-ec2-metadata-mock/cmd/ec2-metadata-mock
IMDS_MOCK_V  := v1.13.0
NFPM         := github.com/goreleaser/nfpm/v2/cmd/nfpm
NFPM_V       := v2.45.2
# nfpm installed by `go install` cannot tell its version: a stamp per pin.
NFPM_STAMP   := $(BIN)/.nfpm-$(NFPM_V)
# The stamp names the pinned version: bumping IMDS_MOCK_V reinstalls.
IMDS_STAMP   := $(BIN)/.ec2-metadata-mock-$(IMDS_MOCK_V)
STATICCHECK  := honnef.co/go/tools/cmd/staticcheck
STATICCHECK_V:= v0.8.2
SC_STAMP     := $(BIN)/.staticcheck-$(STATICCHECK_V)
# Packages go here; DIST=... puts them elsewhere (the package tests do).
DIST         ?= $(CURDIR)/dist
# OS tools the tests drive, as command:Debian-package; `make ostools`
# installs the missing ones with apt-get.
OS_TOOLS     := rpm:rpm dpkg-deb:dpkg systemd-analyze:systemd systemd-sysusers:systemd apt-config:apt shellcheck:shellcheck getfacl:acl setfacl:acl
VERSION      ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT       ?= $(shell git rev-parse --verify --quiet HEAD 2>/dev/null || echo unknown)
PKG          := github.com/rollback-agent/rollback-agent
LDFLAGS      := -s -w -buildid= -X $(PKG)/internal/version.Version=$(VERSION) -X $(PKG)/internal/version.Commit=$(COMMIT)
GOFLAGS_BUILD:= -trimpath -ldflags "$(LDFLAGS)"
# Package version and release from git describe (packaging/version.sh), and
# the commit time for every timestamp in the packages (reproducible builds).
# Recursive: only the package targets pay for them.
PKG_VR        = $(shell packaging/version.sh)
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
# The whole suite, race detector on; CI runs exactly this through `make test`.
TEST_FLAGS   ?= -race -count=1 -timeout 25m

export PATH := $(BIN):$(PATH)

.PHONY: all build test soak demo bench lint tools clean fmt vet ostools pkgbin rpm deb docs aws-acceptance

all: build

## tools: pinned peers and tools into ./bin
tools: $(IMDS_STAMP) $(NFPM_STAMP)

$(IMDS_STAMP):
	@mkdir -p $(BIN)
	GOBIN=$(BIN) $(GO) install $(IMDS_MOCK)@$(IMDS_MOCK_V)
	@rm -f $(BIN)/.ec2-metadata-mock-*; touch $@

$(NFPM_STAMP):
	@mkdir -p $(BIN)
	GOBIN=$(BIN) $(GO) install $(NFPM)@$(NFPM_V)
	@rm -f $(BIN)/.nfpm-* && touch $@

$(SC_STAMP):
	@mkdir -p $(BIN)
	GOBIN=$(BIN) $(GO) install $(STATICCHECK)@$(STATICCHECK_V)
	@rm -f $(BIN)/.staticcheck-* && touch $@

## ostools: the OS tools the tests drive (rpm, dpkg-deb, systemd-analyze, apt-config, shellcheck, getfacl/setfacl), with apt-get when missing
ostools:
	@missing=""; for t in $(OS_TOOLS); do command -v "$${t%%:*}" >/dev/null || missing="$$missing $${t#*:}"; done; \
	if [ -n "$$missing" ]; then \
		command -v apt-get >/dev/null || { echo "missing OS packages:$$missing (install them; apt-get is not here)" >&2; exit 1; }; \
		[ "$$(id -u)" = 0 ] || { echo "missing OS packages:$$missing: run as root, or apt-get install$$missing" >&2; exit 1; }; \
		echo "installing OS packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null \
			|| { echo "apt-get install$$missing failed" >&2; exit 1; }; \
	fi

## build: the binaries into ./bin, as the packages ship them (static, no
## cgo: what `make bench` measures is what users run); agentctl-aws holds
## agentctl's workstation commands and sits beside it
build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(BIN)/rollback-agent ./cmd/agent
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(BIN)/agentctl ./cmd/agentctl
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(BIN)/agentctl-aws ./cmd/agentctl-aws

## test: vet, then every test with the race detector, against the real peers.
## vet compiles every dependency; with the release build's settings (static,
## -trimpath: see pkgbin) the package tests and the IAM scan then reuse that
## compile instead of building the SDK a second time.
test: tools ostools
	@command -v moto_server >/dev/null || { echo "moto_server not found: moto 5.x must be installed in the machine's Python" >&2; exit 1; }
	@command -v cfn-lint >/dev/null || { echo "cfn-lint not found: cfn-lint 1.x must be installed in the machine's Python" >&2; exit 1; }
	CGO_ENABLED=0 $(GO) vet -trimpath ./...
	$(GO) test $(TEST_FLAGS) ./...

## soak: the reliability tests at length (40 deployments through AWS
## faults, a minute of socket load, the crash matrix, disk full)
soak: tools
	ROLLBACK_AGENT_SOAK=1 $(GO) test -race -count=1 -timeout 30m -v \
		-run 'TestSocketUnderLoad|TestTenDeploymentsThroughAWSFaults|TestCrashMatrix|TestDiskFull' ./internal/e2e

## demo: the whole story against the local test bed
demo: tools build
	$(GO) run ./internal/testbed/cmd/demo -bin $(BIN)

## pkgbin: the release binaries the packages hold, static (no cgo: one
## binary for every distribution's glibc), into $(DIST)/bin
pkgbin:
	@mkdir -p $(DIST)/bin
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(DIST)/bin/rollback-agent ./cmd/agent
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(DIST)/bin/agentctl ./cmd/agentctl
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(DIST)/bin/agentctl-aws ./cmd/agentctl-aws

## rpm, deb: the packages into $(DIST) (nfpm, packaging/rpm/nfpm.yaml)
rpm deb: pkgbin $(NFPM_STAMP)
	BIN_DIR=$(DIST)/bin GOARCH=$$($(GO) env GOARCH) SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) \
	PKG_VERSION=$(word 1,$(PKG_VR)) PKG_RELEASE=$(word 2,$(PKG_VR)) \
		$(BIN)/nfpm package --config packaging/rpm/nfpm.yaml --packager $@ --target $(DIST)/

## docs: regenerate the README's references, docs/cli and the default agent.yaml
docs:
	$(GO) run ./internal/docs/cmd/gendocs

## aws-acceptance: the opt-in run on a real AWS account (scripts/aws-acceptance.sh):
## it prints the cost estimate and refuses without
## ARGS="--yes-create-resources --package dist/rollback-agent-VERSION-RELEASE.x86_64.rpm"
## (make rpm first); everything it creates is deleted on exit
aws-acceptance: build
	scripts/aws-acceptance.sh --agentctl $(BIN)/agentctl $(ARGS)

## bench: benchmarks against baselines measured in the same run
bench: tools build
	$(GO) run ./bench -bin $(BIN)

## lint: gofmt, go vet and staticcheck (pinned, in ./bin); CI runs it
lint: $(SC_STAMP)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	CGO_ENABLED=0 $(GO) vet -trimpath ./...
	CGO_ENABLED=0 $(BIN)/staticcheck ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN) $(DIST)

## fuzz: every fuzz target for FUZZTIME each (default 30s), one after the
## other; crashers land in the package's testdata/fuzz/ (go test writes them),
## and scripts/fuzz-keep.sh keeps the new inputs the fuzzer found there too.
## Plain `go test` (so `make test`) replays all of them. A failing target does
## not stop the others; the target fails at the end, naming them. Go 1.26's
## coordinator may end a clean run with a bare "context deadline exceeded"
## (golang/go#75804): without a new input in testdata/fuzz that is not a
## finding, and is reported and ignored.
FUZZTIME     ?= 30s
FUZZ_TARGETS ?= ./internal/appspec:FuzzParse ./internal/bundle:FuzzUnpackTar ./internal/bundle:FuzzUnpackZip \
                ./internal/config:FuzzParse ./internal/source/release:FuzzVerifyManifest
.PHONY: fuzz
fuzz:
	@set -o pipefail; failed=""; log=$$(mktemp); stamp=$$(mktemp); trap 'rm -f $$log $$stamp' EXIT; \
	for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; corpus=$$pkg/testdata/fuzz/$$fn; \
		before=$$(ls $$corpus 2>/dev/null | wc -l); touch $$stamp; \
		echo "== $$fn ($$pkg) for $(FUZZTIME)"; \
		if ! $(GO) test -run='^$$' -fuzz="^$$fn\$$" -fuzztime=$(FUZZTIME) $$pkg 2>&1 | tee $$log; then \
			if grep -q '^    context deadline exceeded$$' $$log && [ "$$(ls $$corpus 2>/dev/null | wc -l)" = "$$before" ]; then \
				echo "fuzz: $$fn: ignoring a bare deadline error with no new input (golang/go#75804)"; \
			else failed="$$failed $$pkg:$$fn"; fi; \
		fi; \
		GO=$(GO) scripts/fuzz-keep.sh $$pkg $$fn $$stamp || failed="$$failed fuzz-keep:$$fn"; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz: failed:$$failed (inputs in the packages' testdata/fuzz/)" >&2; exit 1; fi
