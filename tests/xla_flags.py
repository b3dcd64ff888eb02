"""The XLA flags of the test suite: simulated devices, and code generation that compiles fast.

Compiling is nine tenths of the suite's time (the programs are tiny; measured
per test with a ``jax.monitoring`` listener of backend compile times: 1,008 of
1,117 in-process CPU seconds). XLA:CPU at LLVM ``-O0``, with the classic loop
emitters instead of the MLIR fusion emitters, compiles a train step of the
tiny towers several times faster: ``python benchmarks/compile_time.py``
(``benchmarks/results/compile_time.json``). Both change only
how the same HLO becomes machine code: what rounds where in the last bits,
never the mathematics, with one exception the suite keeps honest: a claim that
two *different* programs agree bit for bit holds for XLA's default code
generation only (at ``-O0`` the Pallas kernel's interpreted sums and the dense
path's differ in one ulp). Tests of such claims carry the ``default_codegen``
mark: under the fast flags they are skipped in-process, and
``tests/test_default_codegen.py`` runs them all in one pytest subprocess with
``ACED_TESTS_DEFAULT_CODEGEN=1``, i.e. with XLA's defaults. aced itself, its benchmarks and its experiments compile
with XLA's defaults; every process a test starts (``aced train``, the
jax.distributed workers) gets these same flags, so that runs compared bit for
bit are compiled alike. ``tests/behaviour.py`` records them in `machine()`.
"""

import os

# XLA:CPU splits each LLVM module into up to 32 parts and compiles them on a thread
# pool; on 2 cores the split costs more CPU time than it saves (about a tenth of a train
# step's compile), and the machine code it produces is the same, bit for bit
# (`SPLIT`; both measured by ``python benchmarks/compile_time.py``).
SPLIT = "--xla_cpu_parallel_codegen_split_count=1"
FAST_COMPILE = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false", SPLIT)
# Flags of `FAST_COMPILE` that leave every result bit-identical (not part of
# ``behaviour.machine()``, the key of the bit-for-bit record).
ROUNDING_NEUTRAL = (SPLIT,)
DEFAULT_CODEGEN_ENV = "ACED_TESTS_DEFAULT_CODEGEN"


def fast_compile() -> bool:
    """Whether this test process compiles with `FAST_COMPILE` (unless `DEFAULT_CODEGEN_ENV`=1)."""
    return os.environ.get(DEFAULT_CODEGEN_ENV) != "1"


def xla_flags(devices: int = 8) -> str:
    """The suite's ``XLA_FLAGS``: fast compilation (see `fast_compile`) and `devices`
    simulated CPU devices."""
    flags = FAST_COMPILE if fast_compile() else ()
    return " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"])


def with_suite_flags(existing: str, devices: int = 8) -> str:
    """`existing` XLA flags with the suite's (`xla_flags`) in place of any earlier copy of
    them: idempotent, so that a process that inherits the suite's ``XLA_FLAGS`` (an
    xdist worker, started by the session that set them) holds each flag once, as the
    recording of ``tests/data/behaviour.json`` did (``behaviour.machine()`` compares them)."""
    ours = set(FAST_COMPILE)
    kept = [
        f
        for f in existing.split()
        if f not in ours and "xla_force_host_platform_device_count" not in f
    ]
    return " ".join([*kept, xla_flags(devices)])
