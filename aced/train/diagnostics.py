"""Selection diagnostics of a run, computed outside the step on log steps, never fed to it.

- **precision**: the fraction of the selected examples that are clean, and
  the selected fraction of each noise kind, each beside its rate in the whole
  super-batch (``select/precision`` vs ``select/base_rate``,
  ``select/<kind>`` vs ``select/base/<kind>``), from the per-example quality
  codes a source carries (the built-in web split's ``quality``);
- **effective support** of each chunk's sampling (``select/support/<i>``),
  replayed from the indices the step chose on the embeddings it chose them from
  (`aced.selection.chunk_supports` on the step's `aced.train.curation.Curated`:
  the learner as it was before the step, as it scored, at Flexi scoring's image
  size); under local scope the mean over devices.

Their cost (the chunk sums, on log steps only; the embeddings are the step's) is
a measurement, not training, and is not in the run's FLOPs.
"""

from collections.abc import Callable, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from aced.data import QUALITY_NAMES
from aced.selection import (
    Embedded,
    chunk_supports,
    per_example_scores,
    selection_rule,
    selection_terms,
)
from aced.train.config import StepConfig
from aced.train.curation import Curated, _fields
from aced.train.sharding import AXIS


def selection_precision(
    quality: np.ndarray, selected: np.ndarray, names: Sequence[str] = QUALITY_NAMES
) -> dict[str, float]:
    """Precision of a selection against per-example quality codes (code 0 is clean).

    **Arguments:**

    - `quality`: (B,) the super-batch's codes, indices into `names`.
    - `selected`: (b,) positions in the super-batch that were chosen.
    - `names`: the codes' names, ``names[0]`` the clean one.

    **Returns:** ``select/precision`` and ``select/base_rate`` (clean among
    the selected, among all), and for every other kind ``select/<kind>`` and
    ``select/base/<kind>``.
    """
    quality, selected = np.asarray(quality), np.asarray(selected)
    if quality.ndim != 1 or selected.ndim != 1:
        raise ValueError(f"quality and selected must be 1-D; got {quality.shape}, {selected.shape}")
    if selected.size and (selected.min() < 0 or selected.max() >= quality.size):
        raise ValueError(f"selected positions must lie in [0, {quality.size}); got {selected}")
    chosen = quality[selected]
    out = {
        "select/precision": float(np.mean(chosen == 0)),
        "select/base_rate": float(np.mean(quality == 0)),
    }
    for code, name in enumerate(names[1:], start=1):
        out[f"select/{name}"] = float(np.mean(chosen == code))
        out[f"select/base/{name}"] = float(np.mean(quality == code))
    return out


def _supports(learner: Embedded, reference: Embedded, idx, config: StepConfig):
    sel = config.selection
    rule = selection_rule(sel.rule)
    n_select = idx.shape[0]
    if not rule.joint:
        diagonal, sums = per_example_scores(learner, reference, sel.score), None
    else:
        diagonal, sums = selection_terms(
            learner,
            reference,
            sel.score,
            n_select,
            sel.n_chunks,
            blocked=sel.implementation_for(learner.zimg.shape[0]) == "blocked",
            block=sel.block_sizes(),
            interpret=sel.interpret,
        )
    return chunk_supports(diagonal, sums, idx, sel.n_chunks, rule)


def make_support_fn(config: StepConfig, mesh: Mesh) -> Callable | None:
    """``jit``-compiled ``(curated) -> (n_chunks,)`` supports of a step's selection.

    `curated` is the `aced.train.curation.Curated` the step returned
    (`aced.train.train_step_with_selection`): its indices replayed on the very
    views they were drawn from. None when the method selects nothing or its rule
    is not a sample (greedy).
    """
    if not config.uses_selection or selection_rule(config.selection.rule).sampled_from is None:
        return None
    n_dev = mesh.shape[AXIS]

    @jax.jit
    def supports(curated: Curated):
        mine, ref, idx = curated.learner, curated.reference, curated.indices
        if config.selection.scope == "global":
            return _supports(mine, ref, idx, config)

        def local(mine, ref, idx):
            shard = jax.lax.axis_index(AXIS)
            mine, ref = Embedded(*mine), Embedded(*ref)
            return _supports(mine, ref, idx - shard * mine.zimg.shape[0], config)

        spec = (P(AXIS), P(AXIS), P(), P())
        per_device = jax.shard_map(
            local,
            mesh=mesh,
            in_specs=(spec, spec, P(AXIS)),
            out_specs=P(AXIS),
            check_vma=False,
        )(_fields(mine), _fields(ref), idx)
        return per_device.reshape(n_dev, -1).mean(axis=0)

    return supports


def to_host(x) -> np.ndarray:
    """A global array on the host (all processes' rows under ``jax.distributed``)."""
    if jax.process_count() > 1:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def selection_diagnostics(
    supports: Callable | None, curated: Curated, quality: np.ndarray | None
) -> dict[str, float]:
    """The diagnostics of one step: precision (when `quality` is known) and chunk supports.

    `supports` is `make_support_fn`'s function (or None); `curated` what the step
    selected (`aced.train.train_step_with_selection`); `quality` this process's
    rows of the super-batch's codes (gathered here across processes).
    """
    out: dict[str, float] = {}
    if quality is not None:
        out.update(selection_precision(to_host(quality), to_host(curated.indices)))
    if supports is not None:
        values = to_host(supports(curated))
        out.update({f"select/support/{i:02d}": float(v) for i, v in enumerate(values)})
    return out
