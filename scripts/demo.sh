#!/usr/bin/env bash
# Run the demo: creates .venv and installs spectral-rnn if needed, then `spectral-rnn demo`.
# Usage: bash scripts/demo.sh [--seed S]
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/_venv.sh

exec .venv/bin/spectral-rnn demo "$@"
