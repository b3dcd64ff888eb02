"""Re-record ``tests/data/behaviour.json`` from the code as it is: ``python tests/record_behaviour.py``.

Only for a deliberate change of the arithmetic (see ``tests/behaviour.py``). Runs
with the test session's XLA flags (``xla_flags.py``) and dtype rules (``tests/conftest.py``).
"""

import json
import os
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from xla_flags import with_suite_flags  # noqa: E402

os.environ["XLA_FLAGS"] = with_suite_flags(os.environ.get("XLA_FLAGS", ""))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

from behaviour import cases, machine, run_case, smoke_record  # noqa: E402


def main() -> None:
    path = pathlib.Path(__file__).parent / "data" / "behaviour.json"
    old = json.loads(path.read_text())
    steps = {name: run_case(*case) for name, case in cases().items()}
    with tempfile.TemporaryDirectory() as out:
        smoke = smoke_record(out, old["smoke"])
    path.write_text(
        json.dumps({"machine": machine(), "smoke": smoke, "steps": steps}, indent=1, sort_keys=True)
        + "\n"
    )
    print(f"recorded {len(steps)} cases and the smoke preset in {path} on {machine()}")


if __name__ == "__main__":
    main()
