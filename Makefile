# lipdub: every command a developer or CI runs. Quick start: `make demo`, then `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEBS := ffmpeg espeak-ng redis-server docker-compose
APT_STAMP := $(VENV)/.debs

.PHONY: install demo lint test bench clean

install: $(STAMP) $(APT_STAMP)

# Debian tools: installed only when one is missing, so a second run is instant.
$(APT_STAMP):
	@missing=""; for c in ffmpeg ffprobe espeak-ng redis-server docker-compose; do command -v $$c >/dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(DEBS) >/dev/null; \
	fi
	@mkdir -p $(VENV) && touch $@

# Python packages: exact pins from requirements.lock (torch==2.13.0 is the local CPU wheel).
$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	@touch $@

demo: install
	$(BIN)/lipdub demo -o out/demo.mp4

# Style and correctness checks first (ruff, then mypy; rules in pyproject.toml): a minute at most, before a
# long pytest run.
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

test: install lint
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python -m bench

# The service without Docker: redis-server, moto's S3 server, the API and one Celery worker per queue,
# as background processes (pids and logs in .stack/). Commands: lipdub/service/processes.py.
STACK_PORTS ?= --api-port 8000 --redis-port 6379 --s3-port 9000

.PHONY: stack stack-stop
stack: install  ## start the local service stack; prints the API URL and a dev API key
	$(BIN)/python -m lipdub.service.stack start --root .stack $(STACK_PORTS)

stack-stop:  ## stop exactly the processes `make stack` started
	$(BIN)/python -m lipdub.service.stack stop --root .stack

clean:
	rm -rf out var .pytest_cache .mypy_cache
