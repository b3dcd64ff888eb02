"""What the processes of one run (``jax.distributed``) share beyond the step.

Each process reads its own rows of every super-batch (`aced.data.BatchIterator`),
so each has its own iterator position (they differ once a process skips an
unreadable image). A checkpoint records all of them, in process order;
a resume gives each process its own, and refuses another number of
processes, whose row split would differ.
"""

import pathlib
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from aced.data import IteratorState
from aced.train.checkpoint.layout import sync

__all__ = ["any_process", "data_states", "restored_data_state", "sync"]


def data_states(state: IteratorState) -> list[dict[str, int]]:
    """Every process's iterator position, in process order (a collective: all processes call it)."""
    mine = np.array([state.epoch, state.position], np.int64)
    if jax.process_count() == 1:
        return [state.to_dict()]
    every = np.asarray(multihost_utils.process_allgather(mine)).reshape(-1, 2)
    return [IteratorState(int(e), int(p)).to_dict() for e, p in every]


def restored_data_state(meta: dict[str, Any], run_dir: pathlib.Path) -> IteratorState:
    """This process's iterator position from a checkpoint's `meta`.

    Checkpoints written before positions were kept per process hold one
    process's (``data``), which resumes a one-process run only.
    """
    states = meta.get("data_per_process", [meta["data"]])
    if len(states) != jax.process_count():
        raise ValueError(
            f"the checkpoints in {run_dir} were written by {len(states)} process(es), and this "
            f"run has {jax.process_count()}: each process reads its own rows of every batch, so "
            f"resume with {len(states)} process(es) (--num-processes {len(states)}), or start a "
            "new run in another train.out_dir"
        )
    return IteratorState.from_dict(states[jax.process_index()])


def any_process(flag: bool) -> bool:
    """Whether `flag` holds on any process (a collective under several processes), so that
    all stop together when a signal reached only some of them."""
    if jax.process_count() == 1:
        return flag
    return bool(np.asarray(multihost_utils.process_allgather(np.int32(flag))).any())
