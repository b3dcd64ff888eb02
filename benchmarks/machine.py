"""The machine a benchmark ran on, as its JSON records it: ``describe()``;
``write_result``, which writes that JSON whole or not at all; and ``launch``,
which runs a benchmark script with the memory allocator the ``aced`` command
uses (`aced.launch`).

``platform.processor()`` is empty on Linux, so the CPU model comes from
``/proc/cpuinfo`` where there is one.
"""

import json
import os
import pathlib
import platform

from aced.launch import allocator_in_use, relaunch


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what `platform` knows."""
    cpuinfo = pathlib.Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    return platform.processor() or platform.machine()


def describe() -> str:
    """For example ``x86_64 Intel(R) Xeon(R) Processor @ 2.60GHz, 2 cores, tcmalloc``
    (the allocator since aced's launcher preloads tcmalloc; results before name none)."""
    return f"{platform.machine()} {cpu_model()}, {os.cpu_count()} cores, {allocator_in_use()}"


def launch(module: str) -> None:
    """Call with ``__name__`` before jax is imported: a script run as ``__main__``
    re-executes itself as the ``aced`` command runs, with tcmalloc where installed
    (`aced.launch.relaunch`; ``ACED_ALLOCATOR=system`` for glibc's malloc). A module
    imported by a test or another benchmark is left alone."""
    if module == "__main__":
        relaunch()


def write_result(result: dict, out: str) -> None:
    """Write `result` as JSON to `out` through a temporary file, so that a run stopped
    while writing leaves the previous file (or none), never half of one."""
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, out)
    print(f"wrote {out}")
