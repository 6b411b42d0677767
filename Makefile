# Portcullis — the two commands users need are `make run` (the demo) and `make test`.
GO      ?= go
BIN     := bin/portcullis
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: all build run test unit vet bench clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/portcullis

# The petstore demo: a built-in upstream on 127.0.0.1:9100 and the gateway on 127.0.0.1:9080.
run: build
	./$(BIN) demo

# Every test: unit, fuzz seed corpora, and the integration tests of the built binary against
# real upstreams, a real redis-server and a real Keycloak (see README, "Tests").
test: vet
	$(GO) test -race -count=1 -timeout 60m ./...

vet:
	$(GO) vet ./...

# Go benchmarks of the request path and of each provider and limiter.
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

clean:
	rm -rf bin
