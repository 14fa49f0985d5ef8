"""Search on your own images: an ImageFolder (or CUB-200-2011) folder, see imagefolder_layout.md.

    python examples/search_imagefolder.py ~/data/flowers            # search, then train the result
    python examples/search_imagefolder.py ~/data/flowers --img-size 64 --epochs 10

It calls the command line, which checks the folder first and stops with one line if
something is wrong with it (missing split, empty class, unreadable image):

    scansearch search --space local8 --model local_vim_micro --data ~/data/flowers --img-size 32 --out runs/flowers
    scansearch train runs/flowers/genotype.yaml --data ~/data/flowers --img-size 32 --out runs/flowers/model
    scansearch eval runs/flowers/model --data ~/data/flowers

``local_vim_micro`` has patch size 1, so a 32x32 image is a 32x32 token grid (1,024
tokens): slow on a CPU. For larger images pick a model with a larger patch, e.g.
``--model local_vim_micro --set patch_size=4`` (64x64 images -> 16x16 tokens), or
``--model local_vmamba_micro --space cross4``.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path


def scansearch(*args: str) -> None:
    command = [sys.executable, "-m", "scansearch", *args]
    print("$", " ".join(command[2:]))
    if subprocess.run(command).returncode != 0:
        sys.exit(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="ImageFolder or CUB-200-2011 root")
    parser.add_argument("--img-size", default="32")
    parser.add_argument("--patch-size", default="4")
    parser.add_argument("--epochs", default="6")
    parser.add_argument("--out", default=None, help="run folder (default runs/<folder name>)")
    args = parser.parse_args()
    out = Path(args.out or Path("runs") / Path(args.folder).expanduser().name)
    common = ["--data", args.folder, "--img-size", args.img_size, "--set", f"patch_size={args.patch_size}"]
    scansearch("search", "--space", "local8", "--model", "local_vim_micro", "--epochs", args.epochs,
               "--out", str(out), *common)
    scansearch("train", str(out / "genotype.yaml"), "--out", str(out / "model"), "--epochs", args.epochs, *common)
    scansearch("eval", str(out / "model"), "--data", args.folder)


if __name__ == "__main__":
    main()
