"""Images per second of vim_tiny, local_vim_tiny, vmamba_tiny, local_vmamba_tiny and mambaout_tiny.

    python benchmarks/bench_models.py                          # CPU: batch 4, 112x112
    python benchmarks/bench_models.py --device cuda            # GPU: batch 128, 224x224 (VMamba's setting)
    python benchmarks/bench_models.py --batch 8 --img-size 224 --threads 2 --json
"""
from __future__ import annotations

import argparse
import json

import torch

from scansearch.models.bench import BENCH_MODELS, print_table, run_model_bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=None, help="default: 128 on a GPU, 4 on the CPU")
    parser.add_argument("--img-size", type=int, default=None, help="default: 224 on a GPU, 112 on the CPU")
    parser.add_argument("--backend", default=None, help="scan backend (reference, torch, triton); default: by device")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per measurement (default 3)")
    parser.add_argument("--models", nargs="+", default=list(BENCH_MODELS))
    parser.add_argument("--quick", action="store_true", help="one timed step per measurement")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run_model_bench(args.device, args.batch, args.img_size, args.quick, args.models, args.backend, args.repeats)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print_table(rows)


if __name__ == "__main__":
    main()
