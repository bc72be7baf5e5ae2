# wsbridge — make help lists the targets.
GO        ?= go
BIN       ?= bin
# A count, not a duration: a duration-based -fuzztime can end in a spurious
# "context deadline exceeded" failure on go1.26 (go.dev/issue/75804).
FUZZTIME  ?= 300000x
# The admin API's target runs a whole engine and two clients per input: a third
# of the executions takes it as long as the parsers' targets take.
ADMINFUZZTIME ?= 100000x
BENCHTIME ?= 1s
BENCHPKGS ?= ./protocol/ ./engine/ ./bridge/ ./bridge/sign/

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## build bin/wsbridge (static, no cgo) and bin/wsbench
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ ./cmd/...

.PHONY: run
run: ## run the bridge; with no BACKEND it starts the built-in demo echo backend
	$(GO) run ./cmd/wsbridge -log-format console $(if $(BACKEND),-backend $(BACKEND),-demo) $(ARGS)

.PHONY: cluster
cluster: build ## nats-server and three clustered nodes on local ports (ws 7101-7103, admin 7201-7203); Ctrl-C stops all (BACKEND=url, else -demo; DURATION=s)
	BIN=$(BIN) ./deploy/cluster.sh

.PHONY: test
test: ## all tests with the race detector in random order, then the load, allocation and memory tests without it (what CI runs)
	$(GO) test -race -shuffle=on -timeout 15m ./...
	$(GO) test -count=1 -timeout 10m -run 'TestReconnectStorm|TestDrain10k|TestTrimAfterBurst|TestJournalKillRestart10k' -v ./cmd/wsbridge/
	$(GO) test -count=1 -timeout 5m -run 'TestAdaptivePipelining|TestAdaptDecisions' -v ./bench/ ./bridge/
	$(GO) test -count=1 -timeout 5m -run 'Allocs|TestIdleConnMemory|TestStateSizes|TestSizeAfterMillion' -v ./protocol/ ./engine/ ./bridge/...

.PHONY: test-short
test-short: ## quick tests without the race detector
	$(GO) test -short ./...

.PHONY: bench
bench: ## hot-path benchmarks with allocations (BENCHTIME=1s)
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) $(BENCHPKGS)

.PHONY: benchcmp
benchcmp: ## compare benchmarks of the work tree against main with benchstat
	@command -v benchstat >/dev/null || $(GO) install golang.org/x/perf/cmd/benchstat@v0.0.0-20250813145418-2f7363a06fe1
	@tmp=$$(mktemp -d); git worktree add -q --detach $$tmp main && \
	  (cd $$tmp && $(GO) test -run '^$$' -bench . -benchmem -count 6 $(BENCHPKGS) > $$tmp/old.txt) && \
	  $(GO) test -run '^$$' -bench . -benchmem -count 6 $(BENCHPKGS) > $$tmp/new.txt && \
	  benchstat $$tmp/old.txt $$tmp/new.txt; git worktree remove --force $$tmp

.PHONY: density
density: build ## bridge RSS/heap per idle connection and msgs per bridge CPU-second (N=15000 C=200 D=10s)
	$(BIN)/wsbench density -conns $(or $(N),15000) -bridge $(BIN)/wsbridge -tconns $(or $(C),200) -duration $(or $(D),10s)

.PHONY: fuzz
fuzz: ## run every fuzz target for FUZZTIME executions each (crashers land in testdata/); minimizing is capped so a short run ends on time
	$(GO) test -run '^$$' -fuzz '^FuzzDecoder$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 2s ./protocol/
	$(GO) test -run '^$$' -fuzz '^FuzzParseRequest$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 2s ./protocol/
	$(GO) test -run '^$$' -fuzz '^FuzzParseProxy$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 2s ./protocol/
	$(GO) test -run '^$$' -fuzz '^FuzzAcceptsDeflate$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 2s ./protocol/
	$(GO) test -run '^$$' -fuzz '^FuzzDecoderDeflate$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 2s ./protocol/
	$(GO) test -run '^$$' -fuzz '^FuzzInflate$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 2s ./engine/
	$(GO) test -run '^$$' -fuzz '^FuzzRead$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 2s ./bridge/journal/
	$(GO) test -run '^$$' -fuzz '^FuzzVerify$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 2s ./bridge/sign/
	$(GO) test -run '^$$' -fuzz '^FuzzBatchReply$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 2s ./bridge/
	$(GO) test -run '^$$' -fuzz '^FuzzAdmin$$' -fuzztime $(ADMINFUZZTIME) -fuzzminimizetime 2s ./engine/adminapi/

.PHONY: lint
lint: ## gofmt, go vet and shellcheck
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	@if command -v shellcheck >/dev/null; then shellcheck $$(git ls-files '*.sh' sysctl/tune .ci/run); fi

.PHONY: clean
clean: ## remove build output
	rm -rf $(BIN)
