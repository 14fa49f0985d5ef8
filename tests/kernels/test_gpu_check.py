"""``benchmarks/gpu_check.sh``: the one-command device check, run at its smoke settings on
the CPU (Triton interpreter), and the recording of kernel comparisons it relies on."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from helpers import REPO

PARTS = ("correctness", "scan timing", "supernet step", "models")


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def test_recording_keeps_comparing_after_a_mismatch():
    gpu_check = _gpu_check()
    from scansearch.kernels import testing

    records, original = [], testing._assert_close
    expected = torch.zeros(3, dtype=torch.float64)
    with gpu_check.recording(records):
        testing._assert_close("bad", torch.tensor([0.0, 0.5, 0.0]), expected, 1e-3, 1e-3)
        testing._assert_close("good", torch.zeros(3), expected, 1e-3, 1e-3)
    assert testing._assert_close is original
    with pytest.raises(AssertionError):
        testing._assert_close("bad", torch.ones(3), expected, 1e-3, 1e-3)
    (bad, err_bad, why, *_), (good, err_good, none, *_) = records
    assert (bad, err_bad, good, err_good, none) == ("bad", 0.5, "good", 0.0, None)
    assert why.startswith("bad: ") and "\n" not in why


@pytest.mark.slow  # about 40 s: interpreted kernels, two timed scans, a supernet and two models
@pytest.mark.interpret
def test_gpu_check_smoke_prints_every_part(tmp_path):
    pytest.importorskip("triton")
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    out = tmp_path / "gpu_check.json"
    env = {k: v for k, v in os.environ.items()
           if k not in ("SCANSEARCH_BACKEND", "TRITON_INTERPRET", "GPU_CHECK_JSON", "GPU_CHECK_SMOKE")}
    env.update(PYTHON=sys.executable, OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"))
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--smoke", "--json", str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{proc.stdout[-6000:]}\n{proc.stderr[-4000:]}"
    table = [line.split("  ")[0] for line in proc.stdout.splitlines()]
    for part in PARTS:
        assert part in table, f"no {part} rows:\n{proc.stdout}"
    assert "FAIL" not in proc.stdout and "correctness passed" in proc.stdout
    rows = json.loads(out.read_text())["rows"]
    assert {r["part"] for r in rows} == set(PARTS)
    correctness = [r["check"] for r in rows if r["part"] == "correctness"]
    for op in ("multi_scan fp32", "multi_scan bf16", "multi_scan merge=False fp32", "multi_scan merge=False bf16",
               "selective_scan fp32", "selective_scan bf16"):
        assert f"{op}: out" in correctness and f"{op}: grad u" in correctness, op
    assert any("fused vs materialized" in r["result"] for r in rows)
