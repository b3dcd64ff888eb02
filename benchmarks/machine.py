"""The machine a benchmark ran on, as its JSON records it: ``describe()``; and
``write_result``, which writes that JSON whole or not at all.

``platform.processor()`` is empty on Linux, so the CPU model comes from
``/proc/cpuinfo`` where there is one.
"""

import json
import os
import pathlib
import platform


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
    """For example ``x86_64 Intel(R) Xeon(R) Processor @ 2.60GHz, 2 cores``."""
    return f"{platform.machine()} {cpu_model()}, {os.cpu_count()} cores"


def write_result(result: dict, out: str) -> None:
    """Write `result` as JSON to `out` through a temporary file, so that a run stopped
    while writing leaves the previous file (or none), never half of one."""
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, out)
    print(f"wrote {out}")
