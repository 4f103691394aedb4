# The syncer's tasks. `make help` lists them.
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS  := -s -w -X github.com/msads-syncer/syncer/internal/cli.Version=$(VERSION) -X github.com/msads-syncer/syncer/internal/cli.Commit=$(COMMIT)
BENCHPKG := ./internal/extract/ ./internal/load/ ./internal/job/
GOLANGCI_VERSION := v2.15.0
HELM := $(GO) run helm.sh/helm/v3/cmd/helm@v3.19.5
GOLANGCI := bin/golangci-lint-$(GOLANGCI_VERSION)

.PHONY: help build test test/short bench demo lint helm fuzz postgres clean

help: ## list the targets
	@grep -E '^[a-zA-Z/_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build the static binary bin/syncer
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/syncer ./cmd/syncer

postgres: ## install PostgreSQL from Debian's packages when initdb is missing
	@./scripts/ensure-postgres.sh test

# scripts/runtests is go test without linking the test binaries again when
# nothing they hold changed (bin/test/), longest package first. The test
# clusters live in /dev/shm when it is a tmpfs with room (PGCLUSTER_RAM,
# package pgcluster).
test: postgres ## vet, then every test with the race detector against one throwaway PostgreSQL that all packages share (or $$TEST_DATABASE_URL)
	$(GO) vet ./...
	PGCLUSTER_RAM=1 $(GO) run ./scripts/withpg $(GO) run ./scripts/runtests -go $(GO) -race -parallel 6 -timeout 20m ./...

test/short: postgres ## every test without the race detector
	$(GO) test -count=1 ./...

bench: postgres ## the benchmarks named by the issues (API fetch vs rate limit; snapshot write vs raw COPY; whole run: overlap, API-bound wall time, peak RSS, calls)
	$(GO) test -p 1 -run '^$$' -bench . -benchtime 1x -timeout 30m $(BENCHPKG)

demo: ## the whole job end to end: API simulator + throwaway PostgreSQL, then the reports (ARGS=--keep keeps the warehouse)
	@./scripts/ensure-postgres.sh demo
	$(GO) run -ldflags "$(LDFLAGS)" ./cmd/syncer demo $(ARGS)

FUZZTIME ?= 15s
fuzz: ## fuzz decoding, whole API answers of every operation, token endpoint answers and config loading ($(FUZZTIME) each)
	@for t in ./internal/extract/:FuzzDecodeResponses ./internal/extract/:FuzzClientResponses ./internal/extract/:FuzzTokenAnswer ./internal/config/:FuzzLoad; do \
	  pkg=$${t%%:*}; fn=$${t#*:}; \
	  echo "== $$fn ($$pkg)"; $(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; done

helm: ## lint the Helm chart and validate what it renders in both modes (and the plain manifests)
	$(HELM) lint deploy/helm/syncer
	$(HELM) lint deploy/helm/syncer --set mode=deployment --set serviceMonitor.enabled=true --set prometheusRule.enabled=true
	$(HELM) template syncer deploy/helm/syncer --set prometheusRule.enabled=true --set cronjob.pushgatewayURL=http://pushgateway:9091 | $(GO) run ./scripts/manifestcheck
	$(HELM) template syncer deploy/helm/syncer --set initCheck.enabled=true | $(GO) run ./scripts/manifestcheck
	$(HELM) template syncer deploy/helm/syncer --set initCheck.enabled=true | grep -q 'args: \["check", "--config", "/etc/syncer/config.yaml"\]'
	$(HELM) template syncer deploy/helm/syncer --set mode=deployment --set serviceMonitor.enabled=true --set prometheusRule.enabled=true | $(GO) run ./scripts/manifestcheck
	$(GO) run ./scripts/manifestcheck deploy/*.yaml

lint: $(GOLANGCI) helm ## gofmt, go vet, golangci-lint (.golangci.yml) and the Helm chart
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...
	$(GOLANGCI) run ./...

$(GOLANGCI): # the pinned linter, built from the Go module proxy into ./bin
	@mkdir -p bin
	GOBIN=$(CURDIR)/bin/.golangci $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_VERSION)
	mv bin/.golangci/golangci-lint $(GOLANGCI) && rmdir bin/.golangci

clean: ## remove build output
	rm -rf bin
