"""Joining a multi-controller run (``jax.distributed``) from the command line.

Every process of the run starts the same ``aced`` command with the same
arguments, plus its own ``--process-id`` (or none of the three options and
``--distributed``, which lets JAX read them from SLURM, Open MPI and the other
cluster environments it recognises). JAX does the coordination, the
collectives (gloo on CPU) and the device mesh; aced only asks it to, with two
guards JAX leaves to the caller:

- a run that cannot gather every process within ``--distributed-timeout``
  seconds stops with an error naming the coordinator and the fix, not with
  JAX's abort (or a silent wait);
- when one process dies, the others stop at their next collective (the
  connection to it closes) or, failing that, when its heartbeat has been
  missing for ``--distributed-heartbeat`` seconds; aced prints what happened and
  what to do, and exits at once rather than waiting in JAX's shutdown barrier.
"""

import argparse
import os
import sys
import threading

from aced.cli_common import EXIT_FAILED


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that make a command one process of a multi-process run."""
    group = parser.add_argument_group("multi-process runs (jax.distributed; docs/distributed.md)")
    group.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address")
    group.add_argument("--num-processes", type=int, metavar="N", help="processes in the run")
    group.add_argument("--process-id", type=int, metavar="I", help="this process, 0 .. N-1")
    group.add_argument(
        "--distributed",
        action="store_true",
        help="join a run whose coordinator, size and ids JAX detects (SLURM, Open MPI, ...)",
    )
    group.add_argument(
        "--distributed-timeout", type=int, default=300, metavar="S",
        help="seconds to wait for every process to join (default 300)",
    )  # fmt: skip
    group.add_argument(
        "--distributed-heartbeat", type=int, default=30, metavar="S",
        help="seconds without a heartbeat after which a process counts as dead (default 30)",
    )  # fmt: skip


def join(args: argparse.Namespace) -> bool:
    """Initialise ``jax.distributed`` when `args` ask for it; returns whether they did.

    Raises `ValueError` for an incomplete set of options. Exits the process
    with status 1 and a message when the run does not gather in time.
    """
    given = {
        "--coordinator": args.coordinator,
        "--num-processes": args.num_processes,
        "--process-id": args.process_id,
    }
    if not args.distributed and all(v is None for v in given.values()):
        return False
    missing = [name for name, value in given.items() if value is None]
    if missing and not args.distributed:
        raise ValueError(
            f"{', '.join(missing)} missing: pass --coordinator, --num-processes and "
            "--process-id together, or --distributed to let JAX detect them"
        )
    if args.num_processes is not None and args.num_processes < 1:
        raise ValueError(f"--num-processes {args.num_processes} must be at least 1")
    if args.process_id is not None and not 0 <= args.process_id < (args.num_processes or 1):
        raise ValueError(f"--process-id {args.process_id} must lie in 0 .. num_processes - 1")
    import jax

    # CPU collectives across processes (gloo); accelerators use their own.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    where = args.coordinator or "the detected coordinator"
    timeout = args.distributed_timeout

    def give_up() -> None:
        _exit(
            f"the multi-process run did not gather within --distributed-timeout {timeout} s "
            f"(coordinator {where}, this process {args.process_id}): start every process "
            "with the same --coordinator and --num-processes and a distinct --process-id, "
            "check that process 0 runs and that its port is reachable from here, or raise "
            "--distributed-timeout"
        )

    watchdog = threading.Timer(timeout, give_up)
    watchdog.daemon = True
    watchdog.start()
    try:
        # JAX's own deadline comes later, so that aced's message is the one shown.
        jax.distributed.initialize(
            coordinator_address=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
            initialization_timeout=timeout + 30,
            heartbeat_timeout_seconds=args.distributed_heartbeat,
        )
    finally:
        watchdog.cancel()
    return True


def _exit(message: str) -> None:
    print(f"aced: error: {message}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(EXIT_FAILED)  # skip JAX's shutdown barrier, which would wait for the lost process


def stop_if_lost(command: str, error: BaseException) -> None:
    """Exit at once, with the way to resume, when `error` ended one process of a
    multi-process run (a collective failed: another process died or the network failed)."""
    import jax

    if not jax.distributed.is_initialized():
        return
    while error is not None and not isinstance(error, jax.errors.JaxRuntimeError):
        error = error.__cause__  # e.g. a CheckpointError raised from the failed barrier
    if error is None:
        return
    from aced.train.checkpoint.layout import first_line

    _exit(
        f"aced {command} stopped on process {jax.process_index()} of {jax.process_count()}: "
        f"{first_line(error)}. Another process of the run has most likely died (see its log) or the "
        "network failed; start the same command again on every process to resume from the "
        "latest complete checkpoint"
    )


def is_main() -> bool:
    """Whether this is the process that prints and writes (process 0, or the only one)."""
    import jax

    return jax.process_index() == 0
