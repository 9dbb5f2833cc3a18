# The two set-up commands from the README.  Both install everything first
# (.ci/setup.sh is idempotent and fast when nothing changed).
VENV ?= .venv
PYTEST_ARGS ?=

.PHONY: demo test setup setup-test

demo: setup
	$(VENV)/bin/larsctl submit --cluster local --recipe jobs/demo.yaml --follow

test: setup-test
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

setup:
	.ci/setup.sh demo

setup-test:
	.ci/setup.sh test
