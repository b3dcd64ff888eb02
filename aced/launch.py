"""The ``aced`` command's launcher: it runs aced's process with tcmalloc when it can.

XLA:CPU allocates a program's temporaries afresh on every call. glibc's malloc
serves a buffer above its mmap threshold (128 KiB, rising with use to at most
32 MiB) with fresh pages and gives them back on free, so every step faults
such buffers in again (the stacked residuals of the scanned blocks of a small
CPU model are already tens of MiB); tcmalloc keeps freed memory for reuse. On
the 2 cores of an Intel Xeon aced's steps trained 5 to 11 % more examples a
second with it (``benchmarks/README.md``, "The memory allocator", with the
commands). The allocator decides where buffers live, not what is computed.

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
from collections.abc import Callable, Iterable, Mapping

ALLOCATOR_ENV = "ACED_ALLOCATOR"
# The process id of a re-executed process (an exec keeps it), so that it never
# re-executes again; its children, with other ids, choose for themselves.
RELAUNCHED = "ACED_RELAUNCHED"
# auto: tcmalloc where installed, else the system's; the other two insist.
ALLOCATORS = ("auto", "tcmalloc", "system")
TCMALLOC = "tcmalloc_minimal"
INSTALL_HINT = "apt-get install libtcmalloc-minimal4"
# Allocators a user may have preloaded already (`auto` then leaves LD_PRELOAD alone;
# `system` takes them out), recognised by their libraries' file names.
PRELOADED = ("tcmalloc", "jemalloc", "mimalloc")
# gperftools prints a line for every allocation above this (default 1 GiB); a
# B = 65,536 selection or a large eval makes such allocations by design.
LARGE_ALLOC_REPORT = ("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", str(1 << 40))


def _allocators(paths: Iterable[str]) -> list[str]:
    """The allocators of `PRELOADED` whose libraries `paths` name (by file name), in order."""
    names = [pathlib.PurePath(path).name for path in paths]
    return [a for a in PRELOADED if any(n.startswith(f"lib{a}") for n in names)]


def allocator_env(
    environ: Mapping[str, str],
    platform: str = sys.platform,
    find_library: Callable[[str], str | None] = ctypes.util.find_library,
    pid: int | None = None,
) -> dict[str, str] | None:
    """The environment to re-execute with, or None to run as is.

    **Arguments:**

    - `environ`: the current environment (``ACED_ALLOCATOR``, ``LD_PRELOAD``).
    - `platform`: ``sys.platform``; only ``linux`` preloads.
    - `find_library`: finds tcmalloc's shared library (`ctypes.util.find_library`).
    - `pid`: this process's id (default `os.getpid()`).

    **Returns:** for ``auto`` and ``tcmalloc``, `environ` with tcmalloc added to
    ``LD_PRELOAD`` (None where it is there already, or for ``auto`` where it is
    missing or another allocator is preloaded); for ``system``, `environ` with
    the allocators taken out of ``LD_PRELOAD`` (None where it names none). A
    process already re-executed (`RELAUNCHED` is its id) gets None.

    **Raises:** ValueError for an unknown ``ACED_ALLOCATOR``, or for
    ``ACED_ALLOCATOR=tcmalloc`` where it cannot be preloaded.
    """
    choice = environ.get(ALLOCATOR_ENV, "auto") or "auto"
    if choice not in ALLOCATORS:
        raise ValueError(f"{ALLOCATOR_ENV}={choice!r}: expected one of {', '.join(ALLOCATORS)}")
    pid = os.getpid() if pid is None else pid
    if environ.get(RELAUNCHED) == str(pid):
        return None
    preload = environ.get("LD_PRELOAD", "")
    entries = preload.replace(":", " ").split()
    named = _allocators(entries)
    others = [a for a in named if a != "tcmalloc"]
    if choice == "system":
        if not named:
            return None
        kept = [e for e in entries if not _allocators([e])]
        return {**environ, "LD_PRELOAD": " ".join(kept), RELAUNCHED: str(pid)}
    if "tcmalloc" in named or (others and choice == "auto"):
        return None  # the user's own choice
    if others:
        raise ValueError(
            f"{ALLOCATOR_ENV}=tcmalloc, but LD_PRELOAD already names {others[0]}; "
            f"remove it from LD_PRELOAD or set {ALLOCATOR_ENV}=auto"
        )
    library = find_library(TCMALLOC) if platform == "linux" else None
    if library is None:
        if choice == "tcmalloc" and platform != "linux":
            raise ValueError(
                f"{ALLOCATOR_ENV}=tcmalloc, but aced preloads it on Linux only, not on "
                f"{platform}; set {ALLOCATOR_ENV}=auto or system"
            )
        if choice == "tcmalloc":
            raise ValueError(
                f"{ALLOCATOR_ENV}=tcmalloc, but it is not installed; install it "
                f"({INSTALL_HINT}) or set {ALLOCATOR_ENV}=auto"
            )
        return None
    # After what is preloaded already: an earlier interposer keeps its priority.
    env = {**environ, "LD_PRELOAD": f"{preload} {library}".strip(), RELAUNCHED: str(pid)}
    env.setdefault(*LARGE_ALLOC_REPORT)
    return env


def allocator_in_use(maps: pathlib.Path = pathlib.Path("/proc/self/maps")) -> str:
    """``tcmalloc``, ``jemalloc`` or ``mimalloc`` where this process has its library
    mapped (by file name, in `maps`), else ``system``."""
    text = maps.read_text() if maps.exists() else ""
    found = _allocators(line.split()[-1] for line in text.splitlines() if "/" in line)
    return found[0] if found else "system"


def relaunch() -> None:
    """Re-execute this process where `allocator_env` says so; with
    ``ACED_ALLOCATOR=tcmalloc``, stop with an error where tcmalloc did not load.

    Call it first thing in a program started as a command (the ``aced`` command, a
    benchmark script): it starts that program again from its command line
    (``sys.orig_argv``), so not from a notebook, and not in a script read from
    standard input (which the new process cannot read again).
    """
    try:
        env = allocator_env(os.environ)
    except ValueError as error:
        sys.exit(f"aced: error: {error}")
    if env is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, sys.orig_argv, env)
    if os.environ.get(ALLOCATOR_ENV) == "tcmalloc" and allocator_in_use() != "tcmalloc":
        sys.exit(
            f"aced: error: {ALLOCATOR_ENV}=tcmalloc, but tcmalloc did not load "
            f"(LD_PRELOAD={os.environ.get('LD_PRELOAD', '')!r}; the dynamic loader says why "
            f"above); reinstall it ({INSTALL_HINT}) or set {ALLOCATOR_ENV}=auto"
        )


def main() -> int:
    """The ``aced`` command: `relaunch`, then `aced.cli.main`."""
    relaunch()
    from aced.cli import main as cli_main

    return cli_main()
