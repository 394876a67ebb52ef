# The two commands a newcomer needs: `make dev` and `make test`. Both create the environment first.
PYTHON ?= python3
UV_VERSION := 0.13.9
VENV := .venv
PY := $(VENV)/bin/python
UV := .run/uv/bin/uv
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
# Every test starts service processes; where PYTHONDONTWRITEBYTECODE is set (CI images often do) each
# would compile its imports again. Installed packages are compiled once by uv, our code before a run.
export UV_COMPILE_BYTECODE := 1

.PHONY: bootstrap dev test fuzz proto proto-check migrate lint up down bench clean

bootstrap: $(VENV)/.synced

$(UV):
	$(PYTHON) -m venv .run/uv
	.run/uv/bin/pip install --quiet "uv==$(UV_VERSION)"

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@

dev: bootstrap
	$(PY) -m tools.dev

test: bootstrap
	$(PY) -m compileall -q libs gateway services web tools proto conftest.py
	$(PY) -m pytest $(PYTEST_ARGS)

# The gateway's OpenAPI fuzzed longer than `make test` does, with fresh random input each run.
FUZZ_MAX_EXAMPLES ?= 100
fuzz: bootstrap
	FUZZ_MAX_EXAMPLES=$(FUZZ_MAX_EXAMPLES) $(PY) -m pytest gateway/tests/test_fuzz.py -k fuzz_as -s $(PYTEST_ARGS)

# Suite against a one-process baseline, one table (issue 3); not a test, never fails on a target.
bench: bootstrap
	$(PY) -m tools.bench

proto: bootstrap
	$(PY) -m tools.proto

proto-check: bootstrap
	$(PY) -m tools.proto --check

migrate: bootstrap
	$(PY) -m libs.common.migrate

tools/buf/node_modules/.bin/buf: tools/buf/package.json
	cd tools/buf && npm install --no-audit --no-fund --silent
	@touch $@

# Deploy files are checked, not just written: promtool (Debian's `prometheus` package; .ci/run installs
# it when it runs as root) for the alert rules and their unit tests, the Kubernetes schemas for the
# manifests (kustomization.yaml is kustomize's, not a resource), shellcheck for the scripts, and caddy
# for the Caddyfile.
PROMTOOL ?= promtool
K8S_MANIFESTS := $(filter-out %/kustomization.yaml,$(wildcard deploy/k8s/*.yaml))
SHELL_SCRIPTS := $(wildcard deploy/scripts/*.sh deploy/nats/*.sh deploy/postgres/initdb/*.sh)

lint: bootstrap tools/buf/node_modules/.bin/buf
	@command -v $(PROMTOOL) >/dev/null 2>&1 || { echo "make lint needs promtool to check deploy/prometheus:" \
	  "install Debian's prometheus package (apt-get install prometheus) or run PROMTOOL=/path/to/promtool make lint" >&2; exit 1; }
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy libs gateway services web tools
	$(VENV)/bin/lint-imports
	cd proto && ../tools/buf/node_modules/.bin/buf lint
	$(PY) -m tools.proto --check
	DOCKER_CONFIG=.run/docker $(VENV)/bin/docker-compose -f docker-compose.yml config -q
	$(VENV)/bin/hadolint deploy/Dockerfile
	$(PROMTOOL) check rules deploy/prometheus/alerts.yml
	$(PROMTOOL) test rules deploy/prometheus/alerts_test.yml
	$(PROMTOOL) check config --syntax-only deploy/prometheus/prometheus.yml
	$(PY) -m tools.dashboard_queries .run/dashboard-queries.yml
	$(PROMTOOL) check rules .run/dashboard-queries.yml
	$(VENV)/bin/kubernetes-validate --strict --quiet $(K8S_MANIFESTS)
	$(PY) -m tools.connection_budget
	$(VENV)/bin/shellcheck $(SHELL_SCRIPTS)
	@mkdir -p .run/caddy
	@XDG_DATA_HOME=.run/caddy XDG_CONFIG_HOME=.run/caddy $(VENV)/bin/caddy validate --adapter caddyfile \
	  --config deploy/caddy/Caddyfile >.run/caddy/validate.log 2>&1 || { cat .run/caddy/validate.log; exit 1; }
	@echo "deploy/caddy/Caddyfile: valid"

up:
	docker compose up --build

down:
	docker compose down

clean:
	rm -rf .run/logs .run/pg .run/nats .run/*.port
