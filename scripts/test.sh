#!/usr/bin/env bash
# Run the test suite: creates .venv and installs spectral-rnn with its test extras if needed.
# Usage: bash scripts/test.sh [pytest arguments]   (e.g. -m slow, -k cli)
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/_venv.sh

exec .venv/bin/python -m pytest -q "$@"
