"""Shared test helpers: drive the command line as a user would, in a subprocess."""
import os
import subprocess
import sys

import pytest


def run_cli(*args, cwd=None, env=None, timeout=600):
    """Run `python -m scansearch ARGS` and return the CompletedProcess (text mode)."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "scansearch", *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def cli():
    return run_cli
