# Aether's front door. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV_VERSION := 0.13.9
UV ?= $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
export UV_LINK_MODE := copy

.PHONY: help setup dev dev-down dev-status protos protos-check lint typecheck helm-check test test-only bench-events bench-auth bench-chat bench-ai bench-memory bench-charts bench-alerts bench-worker bench-rpc

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(UV):
	python3 -m pip install --user --quiet "uv==$(UV_VERSION)"

setup: $(UV) ## install every dependency and native server from uv.lock (idempotent, quick when done)
	@$(UV) sync --frozen --quiet

dev: setup ## run the whole platform locally (servers + every service); Ctrl-C stops it
	$(UV) run aether-dev up

dev-down: setup ## stop a platform started by `make dev` elsewhere and clean its run state
	$(UV) run aether-dev down

dev-status: setup ## health of each local server
	$(UV) run aether-dev status

protos: setup ## regenerate Python stubs from protos/ into libs/protos/src
	$(UV) run bash libs/protos/generate.sh

protos-check: protos ## fail when the checked-in stubs differ from protos/ (did you forget `make protos`?)
	@if [ -n "$$(git status --porcelain -- libs/protos/src)" ]; then \
	  git status --porcelain -- libs/protos/src; \
	  echo "generated stubs are out of date: run 'make protos' and commit"; exit 1; fi

lint: setup ## ruff (lint + format), buf lint + format
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	cd protos && $(UV) run buf lint && $(UV) run buf format --diff --exit-code

typecheck: setup ## mypy --strict on the shared libraries, every service and all the tests
	$(UV) run mypy libs/common/src libs/devstack/src $(wildcard services/*/src) \
		$(wildcard libs/*/tests) $(wildcard services/*/tests) tests deploy/tests

helm-check: setup ## deployment checks, offline: chart lint/render/validate, skaffold, images, trivy, terraform, chart tests
	bash deploy/helm-check.sh
	HELM=$(CURDIR)/.tools/bin/helm $(UV) run pytest deploy/tests -q

test: setup lint typecheck protos-check helm-check test-only ## set up and run every check and test (what CI runs)

test-only: setup ## only the pytest suites (all of them)
	$(UV) run pytest

bench-events: setup ## outbox -> Kafka -> consumer latency and rate vs raw aiokafka
	$(UV) run python bench/events.py

bench-auth: setup ## logins/s, refreshes/s, gateway /me overhead vs a bare FastAPI app
	$(UV) run python bench/auth.py

bench-chat: setup ## WebSocket chat fan-out: deliveries/s, latency, lost/dup vs a bare Redis->websockets ceiling
	$(UV) run python bench/chat.py

bench-ai: setup ## AI cache hits and streaming through the gateway vs raw llama.cpp; embeddings/s
	$(UV) run python bench/ai.py

bench-memory: setup ## memory search over 100k vectors (Qdrant Edge) vs a bare servicer; gateway p95; index build; RAG step; RSS at 1M
	$(UV) run python bench/memory.py

bench-charts: setup ## charts through the gateway (10-year daily, 1-month 1m, indicators over 100k bars) and bulk import vs bare floors
	$(UV) run python bench/charts.py

bench-alerts: setup ## alerts: 1M price rules through the engine's index vs bare numpy; tick -> socket latency vs bare hops
	$(UV) run python bench/alerts.py

bench-worker: setup ## no-op jobs/s through POST /api/jobs to completion vs a bare FastAPI + aiokafka + asyncpg floor; queue wait
	$(UV) run python bench/worker.py

bench-rpc: setup ## one gRPC call through our server/client helpers vs plain grpc.aio (latency, client CPU)
	$(UV) run python bench/rpc.py
