"""`LitConfig`: the settings of one ``aced lit-decoder`` run (`aced.train.lit_decoder`)."""

import dataclasses


@dataclasses.dataclass(frozen=True, kw_only=True)
class LitConfig:
    """One LiT-Decoder run: decoder shape, training and evaluation sizes."""

    width: int = 128
    depth: int = 2
    mlp_dim: int = 512
    num_heads: int = 4
    steps: int = 1000
    batch_size: int = 64
    learning_rate: float = 1e-3
    warmup_steps: int = 50
    weight_decay: float = 1e-4
    train_scenes: int = 4096
    eval_scenes: int = 256
    eval_batch_size: int = 128
    beam: int = 1
    checkpoint_every: int = 250
    seed: int = 0
    data_seed: int = 0

    def __post_init__(self):
        for name in ("width", "depth", "mlp_dim", "num_heads", "steps", "batch_size",
                     "train_scenes", "eval_scenes", "eval_batch_size", "beam",
                     "checkpoint_every"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(
                    f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}"
                )
