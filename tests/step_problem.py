"""A tiny, deterministic ACED problem shared by the step tests and the multi-process worker."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from aced.models import TwoTower, TwoTowerConfig
from aced.train.config import METHODS, DistillConfig, OptimConfig, SelectionConfig, StepConfig
from aced.train.state import SuperBatch, init_train_state

B, L, V, SIZE = 32, 8, 40, 14
OPTIM = OptimConfig(learning_rate=1e-2, warmup_steps=0, grad_clip_norm=0.0)


def tiny_config(embed_dim: int = 16) -> TwoTowerConfig:
    return TwoTowerConfig.from_variants(
        image_variant="mu/7",
        text_variant="mu",
        embed_dim=embed_dim,
        image_size=SIZE,
        vocab_size=V,
        max_len=L,
        image_overrides={"channels": 1},
    )


def wide_config() -> TwoTowerConfig:
    """Depth-1, width-256 towers for FLOP counts against XLA's: its once-per-scan-body count
    is then the full count, and matmuls dominate as in real towers."""
    wide = {"width": 256, "depth": 1, "mlp_dim": 1024, "num_heads": 4}
    return TwoTowerConfig.from_variants(
        image_variant="mu/7",
        text_variant="mu",
        embed_dim=128,
        image_size=28,
        vocab_size=V,
        max_len=16,
        image_overrides={"channels": 1, **wide},
        text_overrides=wide,
    )


def tiny_models() -> tuple[TwoTower, TwoTower]:
    return TwoTower(tiny_config(), key=jax.random.key(1)), TwoTower(
        tiny_config(), key=jax.random.key(2)
    )


def tiny_batch_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "images": rng.standard_normal((B, SIZE, SIZE, 1)).astype(np.float32),
        "tokens": rng.integers(0, V, (B, L)).astype(np.int32),
        "index": np.arange(B, dtype=np.int32),
    }


def tiny_batch() -> SuperBatch:
    return SuperBatch(**{k: jnp.asarray(v) for k, v in tiny_batch_arrays().items()})


def step_config(method: str, **fields) -> StepConfig:
    """A `StepConfig` of `method` with lambda = 1 when it distils (the tests' starting point)."""
    fields.setdefault("distill", DistillConfig(weight=1.0 if METHODS[method].distils else 0.0))
    return StepConfig(method=method, **fields)


def aced_config(n_chunks: int = 4):
    return step_config(
        "aced", selection=SelectionConfig(filter_ratio=0.5, n_chunks=n_chunks), optim=OPTIM
    )


def sgd_state(learner: TwoTower, config, seed: int = 7):
    """SGD: its update is linear in the gradient, so parameter equality checks the gradient
    itself (Adam's g / (|g| + eps) amplifies rounding in near-zero gradients)."""
    return init_train_state(learner, config, jax.random.key(seed), optimizer=optax.sgd(0.5))
