# Sophia: `make up` runs the platform on embedded engines; `make test` runs the whole suite.
# Both install what they need first (uv, then the locked workspace) on a machine with Python 3.11+.

SHELL := /bin/bash
BOOTSTRAP := .sophia/bootstrap
UV := $(shell command -v uv 2>/dev/null || echo $(BOOTSTRAP)/bin/uv)
export UV_PYTHON_DOWNLOADS := never
export UV_LINK_MODE := copy
# Python caches compiled modules (__pycache__, ignored by git); an environment that forbids it makes
# every process compile every import again: 3.4 s instead of 1.5 s to import the API, in each test
# worker and each process a test starts.
unexport PYTHONDONTWRITEBYTECODE
# Each tier also has a wall-clock limit, so a hang outside any test (a session teardown) still ends.
TIER_LIMIT := timeout --kill-after=30 1200
PYTEST := $(TIER_LIMIT) $(UV) run --frozen pytest
FAST := -m "not chaos and not load and not e2e and not browser"

.PHONY: install tools up test test-fast test-e2e test-chaos test-load test-browser lint format bench clean

$(BOOTSTRAP)/bin/uv:
	python3 -m venv $(BOOTSTRAP)
	$(BOOTSTRAP)/bin/pip install --quiet "uv>=0.9"

install: $(UV)
	$(UV) sync --all-packages --frozen

# Debian packages the tests use: wrk drives the HTTP benchmarks (and their smoke runs in the load
# tier); binutils' objdump, as and ld check native code for CPU-specific instructions; qemu-user
# runs the engines on an emulated CPU without AVX-512 (docs/decisions/0001-engines.md); chromium is
# the browser the browser tier drives with Playwright (nothing is downloaded at run time).
TOOLS := wrk:wrk objdump:binutils qemu-x86_64:qemu-user chromium:chromium
tools:
	@missing="$$(for pair in $(TOOLS); do command -v $${pair%%:*} >/dev/null || echo $${pair#*:}; done)"; \
	if [ -n "$$missing" ]; then \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$sudo apt-get update -qq && $$sudo apt-get install -y -qq $$missing; fi

up: install
	$(UV) run --frozen sophia up

lint: install
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy packages/*/src services/*/src apps/*/src
	$(UV) run --frozen lint-imports

format: install
	$(UV) run --frozen ruff check --fix .
	$(UV) run --frozen ruff format .

# Coverage's tracer costs the fast tier a fifth of its time: `make test` measures branch coverage
# (the variable reaches test-fast as its prerequisite), `make test-fast` alone, the inner loop, not.
FAST_COVERAGE :=
test-fast: install tools
	$(PYTEST) $(FAST) -n 2 -q $(FAST_COVERAGE)

test-e2e: install tools
	$(PYTEST) -m e2e --cov --cov-branch --cov-append --cov-report= -q

test-chaos: install
	$(PYTEST) -m chaos -p no:randomly --cov --cov-branch --cov-append --cov-report= -q

test-load: install tools
	$(PYTEST) -m load --cov --cov-branch --cov-append --cov-report= -q

test-browser: install tools
	$(PYTEST) -m browser --cov --cov-branch --cov-append --cov-report= -q

test: FAST_COVERAGE := --cov --cov-branch --cov-report=
test: lint test-fast test-e2e test-chaos test-browser test-load
	$(UV) run --frozen coverage report

# Every benchmark at its default sizes (most of an hour on 2 cores), each saving its result to
# $(BENCH_RESULTS); one that fails leaves $(BENCH_RESULTS)/<name>.failed and the next one runs. Then
# bench/headline.py rewrites the table at the top of docs/benchmarks.md from the results, names the
# failed ones and exits 1 if there were any; a benchmark left out here keeps its old row there, dated.
# ws_servers measures picows as well only where it is installed (`uv run --with picows`).
BENCH_RESULTS := .sophia/bench
bench_run = $(UV) run --frozen python bench/$(1).py --save $(BENCH_RESULTS) \
	|| { date -u +%F > $(BENCH_RESULTS)/$(1).failed; echo "bench/$(1).py FAILED"; }
bench: install tools
	mkdir -p $(BENCH_RESULTS)
	$(call bench_run,ingest)
	$(call bench_run,read)
	$(call bench_run,server)
	$(call bench_run,hot_read)
	$(call bench_run,hit_rate)
	$(call bench_run,stampede)
	$(call bench_run,events)
	$(call bench_run,relay_drain)
	$(call bench_run,embed)
	$(call bench_run,reenrich)
	$(call bench_run,search_recall)
	$(call bench_run,filters)
	$(call bench_run,asgi_calls)
	$(call bench_run,hostile)
	$(call bench_run,ws_servers)
	$(call bench_run,realtime)
	$(call bench_run,analytics)
	$(call bench_run,mcp_gateway)
	$(UV) run --frozen python bench/headline.py --results $(BENCH_RESULTS)

clean:
	rm -rf .sophia/postgres .sophia/valkey .sophia/nats .sophia/logs .coverage*
