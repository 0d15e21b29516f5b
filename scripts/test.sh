#!/usr/bin/env bash
# Set up (idempotent), add the test dependencies to the same .venv, lint, and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh text,image,openvino,speech,test
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest "$@"
GENFORGE_TEST_MODE=distributed exec .venv/bin/python -m pytest tests/integration "$@"  # API tests again: docs/deploy.md
