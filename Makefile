# nea: the two commands a newcomer needs are `make run` and `make test`.
# Both set up everything on a fresh Debian machine: a virtualenv with the
# package and its test dependencies, and (for tests) the system packages the
# suite drives for real.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Debian packages the test suite starts for real (redis-server, haproxy, postgresql
# for the history store, and chromium for the status page), or calls as a user would
# (openssl s_client, curl). postgresql's programs land in /usr/lib/postgresql/VERSION/bin,
# off PATH: tests/infra.py looks there.
SYSTEM_PACKAGES := redis-server haproxy postgresql chromium openssl curl
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Test modules to run; `make test TESTS=tests.test_codec` runs one.
TESTS ?= tests
TRIAL_JOBS ?= 2

# The development admin token `make run` creates beside the certificates and passes.
ADMIN_TOKEN_FILE ?= certs/admin-token
# A server fit for docs/loadtest.rst's example: a relay listener on 3444 beside the
# nea one on 3443, room for 100,000 clients, and the open files they need.
LOADTEST_ARGS := --max-clients 110000 \
	--listen relay=ssl:3444:privateKey=certs/server-key.pem:certKey=certs/server.pem \
	--listen ssl:3443:privateKey=certs/server-key.pem:certKey=certs/server.pem

# What `make run-cluster` needs (PostgreSQL, the history store, is used when installed).
CLUSTER_PACKAGES := redis-server haproxy

.PHONY: run run-cluster run-loadtest-server test lint certs venv system-packages cluster-packages clean

run: $(BIN)/.installed certs
	$(BIN)/twistd --nodaemon --pidfile= nea-server --admin-token-file $(ADMIN_TOKEN_FILE) $(ARGS)

# redis-server, two instances and HAProxy on loopback (docs/cluster.rst); Ctrl-C stops them all.
# ARGS go to deploy/run_cluster.py (--help lists them).
run-cluster: $(BIN)/.installed certs cluster-packages
	$(BIN)/python deploy/run_cluster.py $(ARGS)

run-loadtest-server: $(BIN)/.installed certs
	ulimit -n 262144 2>/dev/null || ulimit -n "$$(ulimit -Hn)"; \
	$(BIN)/twistd --nodaemon --pidfile= nea-server --admin-token-file $(ADMIN_TOKEN_FILE) $(LOADTEST_ARGS) $(ARGS)

# Lint first: a new ruff or mypy error fails the tests (and so CI, .ci/run).
test: lint system-packages
	$(BIN)/trial --jobs=$(TRIAL_JOBS) $(TESTS)

# ruff (pyproject.toml's [tool.ruff]) over the code and its tests, and mypy
# (pyproject.toml's [tool.mypy], with the zope interface plugin) over nea/.
lint: $(BIN)/.installed
	$(BIN)/ruff check nea tests bench twisted
	$(BIN)/ruff format --check nea tests bench twisted
	$(BIN)/mypy

certs: $(BIN)/.installed
	$(BIN)/python -m nea.tls.devcerts certs
	$(BIN)/python -m nea.http.devtoken $(ADMIN_TOKEN_FILE)

venv: $(BIN)/.installed

$(BIN)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV) || { $(SUDO) apt-get update && $(SUDO) apt-get install -y python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# Installs those of $(1) that are missing, with apt-get.
define install-missing
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
endef

system-packages:
	$(call install-missing,$(SYSTEM_PACKAGES))

cluster-packages:
	$(call install-missing,$(CLUSTER_PACKAGES))

clean:
	rm -rf $(VENV) _trial_temp* .hypothesis .mypy_cache .ruff_cache build *.egg-info
