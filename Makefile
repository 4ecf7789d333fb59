# Two commands: `make serve` runs the server, `make test` runs the whole suite. Both install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUM := $(shell cksum pyproject.toml | cut -d' ' -f1)
# One stamp per install, named after pyproject.toml's checksum: `serve` installs the server only, `test` the server
# and the test tools (which satisfies `serve` too); a changed pyproject.toml installs again.
SERVER_STAMP := $(VENV)/.installed-server-$(SUM)
TEST_STAMP := $(VENV)/.installed-test-$(SUM)

.PHONY: serve test lint bench bench-jobs install clean wrk oauth-peer

$(SERVER_STAMP): pyproject.toml
	@if [ -f $(TEST_STAMP) ]; then touch $@; else \
		$(PYTHON) -m venv $(VENV) && \
		$(BIN)/python -m pip install --quiet --upgrade pip && \
		$(BIN)/python -m pip install --quiet -e '.[server]' && \
		rm -f $(VENV)/.installed-* && touch $@; fi

$(TEST_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[server,test]'
	rm -f $(VENV)/.installed-* && touch $(TEST_STAMP) $(SERVER_STAMP)

install: $(TEST_STAMP)

serve: $(SERVER_STAMP)
	$(BIN)/strongroom serve

lint: $(TEST_STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

test: lint wrk oauth-peer
	$(BIN)/python -m pytest

# The load generator of bench/ (tests/e2e/test_bench.py runs a short benchmark); from Debian, where we may install.
wrk:
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk) || echo "wrk not installed: tests/e2e/test_bench.py will skip"

# The real OAuth 2.0 authorization server of tests/e2e/test_oauth.py: npm's oidc-provider, pinned by the committed
# package-lock.json; installed again when the lock file changes. Without node/npm the OAuth tests skip, saying why.
OAUTH_PEER := tests/peers/oauth
oauth-peer: $(OAUTH_PEER)/node_modules/.package-lock.json

$(OAUTH_PEER)/node_modules/.package-lock.json: $(OAUTH_PEER)/package-lock.json $(OAUTH_PEER)/package.json
	@if command -v npm >/dev/null; then cd $(OAUTH_PEER) && npm ci --no-audit --no-fund --loglevel=error; \
	else echo "npm not installed: tests/e2e/test_oauth.py will skip"; fi

bench: $(TEST_STAMP) wrk
	$(BIN)/python -m pip install --quiet -e '.[server,test,bench]'
	$(BIN)/python -m bench $(BENCH_ARGS)

# Batch jobs against their baselines (PostgreSQL's COPY, boto3's upload), peak RSS, one worker vs two (bench/jobs.py).
bench-jobs: $(TEST_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[server,test,bench]'
	$(BIN)/python -m bench.jobs $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache $(OAUTH_PEER)/node_modules
