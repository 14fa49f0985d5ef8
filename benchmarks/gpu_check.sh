#!/usr/bin/env bash
# Device check in one table (benchmarks/gpu_check.py): Triton kernels against the float64
# reference, scan timings, a DARTS supernet step, model throughput.
#
#   bash benchmarks/gpu_check.sh                   # one H100/H200, real sizes (under 8 minutes)
#   bash benchmarks/gpu_check.sh --smoke           # CPU, Triton interpreter, tiny sizes
#   bash benchmarks/gpu_check.sh --json out.json   # also write the rows as JSON
#
# GPU_CHECK_SMOKE=1 is the same as --smoke; PYTHON picks the interpreter (default python3).
# Exit code 1 when a correctness check fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY="${PYTHON:-python3}"
smoke="${GPU_CHECK_SMOKE:-0}"
for arg in "$@"; do
    if [[ "$arg" == "--smoke" ]]; then smoke=1; fi
done
if [[ "$smoke" == "1" ]]; then
    export GPU_CHECK_SMOKE=1 TRITON_INTERPRET=1  # before anything imports triton
fi

echo "== device"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi -L || echo "nvidia-smi -L failed"
else
    echo "nvidia-smi: not found"
fi
"$PY" -c 'import torch; print("torch", torch.__version__, "| CUDA", torch.version.cuda,
                "| available", torch.cuda.is_available())' || echo "torch: not importable"
"$PY" -c 'import triton; print("triton", triton.__version__)' 2>/dev/null || echo "triton: not importable"

# outside the checkout, so that only an installed scansearch counts
if ! (cd / && "$PY" -c "import scansearch") >/dev/null 2>&1; then
    echo "== installing scansearch (editable, no dependencies)"
    "$PY" -m pip install -q --no-deps --no-build-isolation -e . \
        || "$PY" -m pip install -q --no-deps -e . \
        || echo "warning: pip could not install scansearch; trying anyway" >&2
fi

echo "== gpu_check"
PYTHONUNBUFFERED=1 exec "$PY" benchmarks/gpu_check.py "$@"
