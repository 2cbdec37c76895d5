# rollback-agent. `make demo` and `make test` are all a newcomer needs;
# both fetch the pinned tools they use into ./bin first.

SHELL        := /bin/bash
GO           ?= go
BIN          := $(CURDIR)/bin
IMDS_MOCK    := github.com/aws/amazon-ec2-metadata-mock/cmd/ec2-metadata-mock
IMDS_MOCK_V  := v1.13.0
VERSION      ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT       ?= $(shell git rev-parse --verify --quiet HEAD 2>/dev/null || echo unknown)
PKG          := github.com/rollback-agent/rollback-agent
LDFLAGS      := -s -w -buildid= -X $(PKG)/internal/version.Version=$(VERSION) -X $(PKG)/internal/version.Commit=$(COMMIT)
GOFLAGS_BUILD:= -trimpath -ldflags "$(LDFLAGS)"
# The whole suite, race detector on; CI runs exactly this through `make test`.
TEST_FLAGS   ?= -race -count=1 -timeout 25m

export PATH := $(BIN):$(PATH)

.PHONY: all build test demo bench lint tools clean fmt vet

all: build

## tools: pinned peers and tools into ./bin
tools: $(BIN)/ec2-metadata-mock

$(BIN)/ec2-metadata-mock:
	@mkdir -p $(BIN)
	GOBIN=$(BIN) $(GO) install $(IMDS_MOCK)@$(IMDS_MOCK_V)

## build: the two binaries into ./bin
build:
	@mkdir -p $(BIN)
	$(GO) build $(GOFLAGS_BUILD) -o $(BIN)/rollback-agent ./cmd/agent
	$(GO) build $(GOFLAGS_BUILD) -o $(BIN)/agentctl ./cmd/agentctl

## test: vet, then every test with the race detector, against the real peers
test: tools
	@command -v moto_server >/dev/null || { echo "moto_server not found: moto 5.x must be installed in the machine's Python" >&2; exit 1; }
	$(GO) vet ./...
	$(GO) test $(TEST_FLAGS) ./...

## demo: the whole story against the local test bed
demo: tools build
	$(GO) run ./internal/testbed/cmd/demo -bin $(BIN)

## bench: benchmarks against baselines measured in the same run
bench: tools build
	$(GO) run ./bench -bin $(BIN)

## lint: gofmt and go vet
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN)
