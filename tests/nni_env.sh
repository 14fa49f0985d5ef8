#!/usr/bin/env bash
# NNI's tests in a virtual environment of their own: NNI 3.0 pins filelock<3.12 and
# typeguard<4.1.3, so it never enters the main environment. Usage: bash tests/nni_env.sh
# (the venv goes to $SCANSEARCH_NNI_VENV, default .venv-nni, and is reused when present).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${SCANSEARCH_NNI_VENV:-.venv-nni}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q torch==2.13.0
"$venv/bin/python" -m pip install -q -e '.[test,nni]'
"$venv/bin/python" -m pytest -q tests/searchers/test_nni.py
