"""The tests marked ``default_codegen`` (bit-for-bit claims across two programs), run in one
pytest subprocess under XLA's default code generation (``tests/xla_flags.py``)."""

import os
import pathlib
import subprocess
import sys

import pytest
from xla_flags import DEFAULT_CODEGEN_ENV, fast_compile

TESTS = pathlib.Path(__file__).parent


@pytest.mark.skipif(not fast_compile(), reason="this process already has the default flags")
def test_bit_for_bit_claims_hold_under_default_code_generation():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | {DEFAULT_CODEGEN_ENV: "1"}
    files = [
        str(p) for p in sorted(TESTS.glob("test_*.py")) if "mark.default_codegen" in p.read_text()
    ]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "0", "-m", "default_codegen", *files],
        cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and " failed" not in done.stdout, done.stdout[-2000:]
