"""The XLA flags of the test suite: simulated devices, and code generation that compiles fast.

Compiling is nine tenths of the suite's time (the programs are tiny; measured
per test with a ``jax.monitoring`` listener of backend compile times: 1,008 of
1,117 in-process CPU seconds). XLA:CPU at LLVM ``-O0``, with the classic loop
emitters instead of the MLIR fusion emitters, compiles a train step of the
tiny towers several times faster: ``python benchmarks/compile_time.py``
(``benchmarks/results/compile_time.json``). Both change only
how the same HLO becomes machine code: what rounds where in the last bits,
never the mathematics. aced itself, its benchmarks and its experiments compile
with XLA's defaults; every process a test starts (``aced train``, the
jax.distributed workers) gets these same flags, so that runs compared bit for
bit are compiled alike. ``tests/behaviour.py`` records them in `machine()`.
"""

FAST_COMPILE = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")


def xla_flags(devices: int = 8) -> str:
    """The suite's ``XLA_FLAGS``: fast compilation and `devices` simulated CPU devices."""
    return " ".join([*FAST_COMPILE, f"--xla_force_host_platform_device_count={devices}"])
