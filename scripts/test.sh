#!/usr/bin/env bash
# Set up (idempotent), add the test dependencies to the same .venv, lint, check the layers and the types, and run
# the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh text,image,openvino,speech,test
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports  # the layers (pyproject.toml [tool.importlinter]; docs/architecture.md)
.venv/bin/mypy  # the types (pyproject.toml [tool.mypy]: the whole package, strict on the core)
.venv/bin/python -m pytest "$@"
GENFORGE_TEST_MODE=distributed exec .venv/bin/python -m pytest tests/integration "$@"  # API tests again: docs/deploy.md
