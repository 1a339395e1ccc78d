#!/usr/bin/env bash
# Run the test suite: creates .venv and installs spectral-rnn with its test extras if needed.
# Usage: bash scripts/test.sh [pytest arguments]   (e.g. -m slow, -k cli)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "creating .venv with $("$PYTHON" --version)" >&2
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.spectral-rnn-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    if ! .venv/bin/python -c "import torch" 2>/dev/null; then
        .venv/bin/python -m pip install torch==2.13.0 || .venv/bin/python -m pip install "torch>=2.3"
    fi
    .venv/bin/python -m pip install -e ".[test]"
    touch "$stamp"
fi

exec .venv/bin/python -m pytest -q "$@"
