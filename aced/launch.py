"""The ``aced`` command's launcher: it runs aced's process with tcmalloc when it can.

XLA:CPU allocates a program's temporaries afresh on every call. glibc's malloc
serves a buffer above its mmap threshold (128 KiB, rising with use to at most
32 MiB) with fresh pages and gives them back on free, so every step faults
such buffers in again (the stacked residuals of the scanned blocks of a small
CPU model are already tens of MiB); tcmalloc keeps freed memory for reuse. On
the 2 cores of an Intel Xeon aced's steps trained 6 to 11 % more examples a
second with it (``benchmarks/README.md``, "The memory allocator", with the
commands). It changes no value: the same programs run on the same numbers.

`relaunch` re-executes the process (``os.execve``, the same arguments) with
``LD_PRELOAD`` naming tcmalloc, before jax is imported; `main` (the ``aced``
command and ``python -m aced``) calls it first, and the benchmarks call it too.
It does nothing off Linux, nor where tcmalloc is not installed (Debian:
``apt-get install libtcmalloc-minimal4``), where ``LD_PRELOAD`` already names an
allocator, or with ``ACED_ALLOCATOR=system``. ``ACED_ALLOCATOR=tcmalloc`` makes a
missing tcmalloc an error instead of a quiet fallback. Only the standard library
is imported here.
"""

import ctypes.util
import os
import pathlib
import sys
from collections.abc import Callable, Mapping

ALLOCATOR_ENV = "ACED_ALLOCATOR"
# auto: tcmalloc where installed, else the system's; the other two insist.
ALLOCATORS = ("auto", "tcmalloc", "system")
TCMALLOC = "tcmalloc_minimal"
INSTALL_HINT = "apt-get install libtcmalloc-minimal4"
# Allocators a user may have preloaded already; aced then leaves LD_PRELOAD alone.
PRELOADED = ("tcmalloc", "jemalloc", "mimalloc")
# gperftools prints a line for every allocation above this (default 1 GiB); a
# B = 65,536 selection or a large eval makes such allocations by design.
LARGE_ALLOC_REPORT = ("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", str(1 << 40))


def allocator_env(
    environ: Mapping[str, str],
    platform: str = sys.platform,
    find_library: Callable[[str], str | None] = ctypes.util.find_library,
) -> dict[str, str] | None:
    """The environment to re-execute with, or None to run as is.

    **Arguments:**

    - `environ`: the current environment (``ACED_ALLOCATOR``, ``LD_PRELOAD``).
    - `platform`: ``sys.platform``; only ``linux`` preloads.
    - `find_library`: finds tcmalloc's shared library (`ctypes.util.find_library`).

    **Returns:** `environ` with tcmalloc added to ``LD_PRELOAD``, or None.

    **Raises:** ValueError for an unknown ``ACED_ALLOCATOR``, or for
    ``ACED_ALLOCATOR=tcmalloc`` where it cannot be preloaded.
    """
    choice = environ.get(ALLOCATOR_ENV, "auto") or "auto"
    if choice not in ALLOCATORS:
        raise ValueError(f"{ALLOCATOR_ENV}={choice!r}: expected one of {', '.join(ALLOCATORS)}")
    preload = environ.get("LD_PRELOAD", "")
    if choice == "system" or any(name in preload for name in PRELOADED):
        return None
    library = find_library(TCMALLOC) if platform == "linux" else None
    if library is None:
        if choice == "tcmalloc":
            where = "off Linux" if platform != "linux" else "it is not installed"
            raise ValueError(
                f"{ALLOCATOR_ENV}=tcmalloc, but {where}; install it ({INSTALL_HINT}) "
                f"or set {ALLOCATOR_ENV}=auto"
            )
        return None
    env = dict(environ)
    # After what is preloaded already: an earlier interposer keeps its priority.
    env["LD_PRELOAD"] = f"{preload} {library}".strip()
    env.setdefault(*LARGE_ALLOC_REPORT)
    return env


def allocator_in_use() -> str:
    """``tcmalloc``, ``jemalloc`` or ``mimalloc`` where this process has one mapped
    (``/proc/self/maps``), else ``system``."""
    maps = pathlib.Path("/proc/self/maps")
    text = maps.read_text() if maps.exists() else ""
    return next((name for name in PRELOADED if name in text), "system")


def relaunch() -> None:
    """Re-execute this process with tcmalloc preloaded where `allocator_env` says so."""
    try:
        env = allocator_env(os.environ)
    except ValueError as error:
        sys.exit(f"aced: error: {error}")
    if env is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, sys.orig_argv, env)


def main() -> int:
    """The ``aced`` command: `relaunch`, then `aced.cli.main`."""
    relaunch()
    from aced.cli import main as cli_main

    return cli_main()
