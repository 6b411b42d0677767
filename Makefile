# Portcullis — the two commands users need are `make run` (the demo) and `make test`.
GO      ?= go
BIN     := bin/portcullis
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: all build run test test-unit vet lint bench clean image containers

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/portcullis

# The petstore demo: a built-in upstream on 127.0.0.1:9100 and the gateway on 127.0.0.1:9080.
run: build
	./$(BIN) demo

# Every test: unit, fuzz seed corpora, and the integration tests of the built binary against
# real upstreams, a real redis-server, a real Keycloak and the real nginx and Caddy in front
# (forward auth; see README, "Tests").
test: vet caddy
	PORTCULLIS_CADDY=$$(test -x $(BENCH_CACHE)/bin/caddy && echo $(BENCH_CACHE)/bin/caddy) \
		$(GO) test -race -count=1 -timeout 60m ./...
	cd bench && $(GO) test -count=1 ./...

# The unit tests alone: no integration tests, nothing that needs Java or Keycloak (-short).
test-unit:
	$(GO) test -short -race -count=1 $$($(GO) list ./... | grep -v /integration)

vet:
	$(GO) vet ./...
	cd bench && $(GO) vet ./...

# gofmt, go vet and staticcheck (pinned) for the module and bench/; CI runs it before `make test`.
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2

lint: vet
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
		if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(STATICCHECK) ./...
	cd bench && $(STATICCHECK) ./...

# `make bench` runs both benchmarks: bench-go (the Go benchmarks of the request path and of
# each provider and limiter) and bench-load (the side-by-side load benchmark against nginx, Caddy
# and the direct upstream; bench/README.md). bench-scale (start-up, RSS, hot reload with many
# consumers) and bench-profile (a CPU profile under load) run on their own.
BENCH_CACHE   ?= $(HOME)/.cache/portcullis-bench
CADDY_VERSION ?= v2.11.9
OAUTH2_PROXY_VERSION ?= v7.15.6
BENCH_FLAGS   ?=

.PHONY: bench-go bench-load bench-scale bench-profile bench-cardinality bench-tools caddy oauth2-proxy

bench: bench-go bench-load

bench-go:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# Caddy, from the Go module proxy (tried once; cached outside the repository): the forward-auth
# tests put it in front of the gateway, and the benchmark measures it. Without it the tests skip
# it (they fail in CI) and the benchmark leaves it out.
caddy:
	@test -x $(BENCH_CACHE)/bin/caddy || test -e $(BENCH_CACHE)/caddy-failed || \
		GOBIN=$(BENCH_CACHE)/bin $(GO) install github.com/caddyserver/caddy/v2/cmd/caddy@$(CADDY_VERSION) || \
		{ mkdir -p $(BENCH_CACHE) && touch $(BENCH_CACHE)/caddy-failed && echo "caddy did not install; its tests and benchmark are skipped"; }

# oauth2-proxy, the same way (tried once, cached): the forward-auth benchmark puts it behind
# nginx's auth_request next to Portcullis. Without it that contestant is skipped.
oauth2-proxy:
	@test -x $(BENCH_CACHE)/bin/oauth2-proxy || test -e $(BENCH_CACHE)/oauth2-proxy-failed || \
		GOBIN=$(BENCH_CACHE)/bin $(GO) install github.com/oauth2-proxy/oauth2-proxy/v7@$(OAUTH2_PROXY_VERSION) || \
		{ mkdir -p $(BENCH_CACHE) && touch $(BENCH_CACHE)/oauth2-proxy-failed && echo "oauth2-proxy did not install; its benchmark is skipped"; }

bench-tools: build caddy oauth2-proxy
	cd bench && $(GO) build -o ../bin/bench-load . && $(GO) build -o ../bin/bench-profgateway ./cmd/profgateway

bench-load: bench-tools
	cd bench && PORTCULLIS_BENCH_CACHE=$(BENCH_CACHE) ../bin/bench-load -mode load $(BENCH_FLAGS)

bench-scale: bench-tools
	cd bench && PORTCULLIS_BENCH_CACHE=$(BENCH_CACHE) ../bin/bench-load -mode scale $(BENCH_FLAGS)

# bench-cardinality: the heap of the request counter with 1M consumers making requests, per-consumer
# series off and on (bench/results/*-cardinality.md).
bench-cardinality:
	PORTCULLIS_CARDINALITY_CONSUMERS=1000000 $(GO) test -timeout 30m -run '^TestConsumerCardinality$$' -v ./gateway

bench-profile: bench-tools
	cd bench && PORTCULLIS_BENCH_CACHE=$(BENCH_CACHE) ../bin/bench-load -mode profile $(BENCH_FLAGS)

# Containers (README, "Containers"). `make image` builds the image of the Containerfile,
# localhost/portcullis:$(VERSION) and :latest, from the static binary (CGO_ENABLED=0) on an empty
# base: no registry needed. ENGINE=docker builds it with Docker. `make containers` (root) sets up
# podman, its Docker-compatible API and the Keycloak image the tests run (scripts/container-engine.sh).
ENGINE ?= podman

image:
	ENGINE=$(ENGINE) VERSION=$(VERSION) bash scripts/build-image.sh localhost/portcullis:$(VERSION) localhost/portcullis:latest

containers:
	bash scripts/container-engine.sh

clean:
	rm -rf bin
