"""Analytic forward FLOPs of the model towers, per example.

Two FLOPs per multiply-add; only matrix products are counted (patch
embedding, q/k/v/out projections, attention ``QK^T`` and ``AV``, MLPs, the
MAP pooling head, projection heads). Elementwise work (LayerNorm, softmax,
GELU, residual and bias adds, mean pooling) and embedding look-ups are left
out: for the shapes aced trains they are a few percent at most
(``tests/test_flops.py`` checks the totals against XLA's ``cost_analysis``).

A backward pass costs about twice the forward, so a training step on b
examples is about ``3 * b * forward``.
"""

from aced.models.text import TextConfig
from aced.models.two_tower import TwoTowerConfig
from aced.models.vit import ViTConfig


def attention_flops(num_queries: int, num_inputs: int, width: int) -> int:
    """Multi-head attention of `num_queries` tokens over `num_inputs` tokens.

    ``2*Q*W*W`` (q) + ``2*2*T*W*W`` (k, v) + ``2*Q*T*W`` (QK^T, all heads) +
    ``2*Q*T*W`` (AV) + ``2*Q*W*W`` (output projection).
    """
    projections = 2 * (2 * num_queries + 2 * num_inputs) * width * width
    scores_and_mix = 2 * 2 * num_queries * num_inputs * width
    return projections + scores_and_mix


def mlp_flops(num_tokens: int, width: int, mlp_dim: int) -> int:
    """fc1 and fc2 over `num_tokens` tokens: ``2 * 2 * T * W * M``."""
    return 2 * 2 * num_tokens * width * mlp_dim


def encoder_flops(num_tokens: int, width: int, depth: int, mlp_dim: int) -> int:
    """`depth` self-attention + MLP blocks over `num_tokens` tokens."""
    block = attention_flops(num_tokens, num_tokens, width) + mlp_flops(num_tokens, width, mlp_dim)
    return depth * block


def vit_forward_flops(config: ViTConfig) -> int:
    """Forward FLOPs of one image through a `ViT` built from `config`."""
    c = config
    patches = c.num_patches
    flops = 2 * patches * (c.patch_size * c.patch_size * c.channels) * c.width
    flops += encoder_flops(patches, c.width, c.depth, c.mlp_dim)
    if c.pool == "map":
        flops += attention_flops(1, patches, c.width) + mlp_flops(1, c.width, c.mlp_dim)
    if c.out_dim is not None:
        flops += 2 * c.width * c.out_dim
    return flops


def text_forward_flops(config: TextConfig, num_tokens: int | None = None) -> int:
    """Forward FLOPs of one token row (length `num_tokens`, default `max_len`)."""
    c = config
    length = c.max_len if num_tokens is None else num_tokens
    if not 0 < length <= c.max_len:
        raise ValueError(f"num_tokens={length} must be in [1, max_len={c.max_len}]")
    flops = encoder_flops(length, c.width, c.depth, c.mlp_dim)
    if c.out_dim is not None:
        flops += 2 * c.width * c.out_dim
    return flops


def two_tower_forward_flops(config: TwoTowerConfig, num_tokens: int | None = None) -> int:
    """Forward FLOPs of one image-text pair through both towers (no pair logits)."""
    return vit_forward_flops(config.image) + text_forward_flops(config.text, num_tokens)


def pair_logits_flops(n_rows: int, n_cols: int, width: int) -> int:
    """One ``(n_rows, D) @ (D, n_cols)`` similarity matrix."""
    return 2 * n_rows * n_cols * width


def train_step_flops(
    learner: TwoTowerConfig,
    reference: TwoTowerConfig,
    *,
    super_batch: int,
    sub_batch: int,
    selection: str | None,
    score_models: int = 2,
    n_chunks: int = 1,
    reference_cached: bool = False,
    kd: bool = False,
    kd_separate_batch: bool = False,
    selection_groups: int = 1,
) -> dict[str, int]:
    """Analytic training FLOPs of one step, by part (PAPER.md, "FLOPs").

    **Arguments:**

    - `learner`, `reference`: the two models' configs (the reference is also the teacher).
    - `super_batch`, `sub_batch`: B and b.
    - `selection`: ``None`` (IID / KD: no scoring), ``"dense"`` (B x B score
      matrix), ``"blocked"`` (row and column sums per chunk) or ``"independent"``
      (per-example scores only).
    - `score_models`: 2 for learnability, 1 for easy-reference / hard-learner.
    - `n_chunks`: chunks of the joint selection.
    - `reference_cached`: reference embeddings precomputed (no reference forward).
    - `kd`, `kd_separate_batch`: a KD term; on a second (IID) sub-batch.
    - `selection_groups`: the selection runs separately on this many equal
      shards of the super-batch (``scope="local"``: one per device).

    **Returns:** ``{"scoring_learner", "scoring_reference", "selection",
    "update", "teacher", "losses", "total"}``. The update is forward + backward
    (3x forward) of the learner on b examples (2b with a separate KD batch).
    A teacher forward is free when its embeddings come from scoring or the cache.
    """
    B, b = super_batch, sub_batch
    d_l, d_r = learner.embed_dim, reference.embed_dim
    f_learner = two_tower_forward_flops(learner)
    f_reference = two_tower_forward_flops(reference)
    parts = dict.fromkeys(
        ("scoring_learner", "scoring_reference", "selection", "update", "teacher", "losses"), 0
    )
    if selection is not None:
        parts["scoring_learner"] = B * f_learner
        parts["scoring_reference"] = 0 if reference_cached else B * f_reference
        width, g = max(d_l, d_r), selection_groups
        if selection == "dense":
            parts["selection"] = g * score_models * pair_logits_flops(B // g, B // g, width)
        elif selection == "blocked":
            chunk = b // g // n_chunks
            # rows and columns of the new chunk, for each of the (n_chunks - 1) later chunks
            per_chunk = 2 * pair_logits_flops(B // g, chunk, width)
            parts["selection"] = g * score_models * per_chunk * (n_chunks - 1)
        elif selection != "independent":
            raise ValueError(f"selection={selection!r} must be None, dense, blocked or independent")
    trained = 2 * b if (kd and kd_separate_batch) else b
    parts["update"] = 3 * trained * f_learner
    parts["losses"] = 3 * pair_logits_flops(b, b, d_l)
    if kd:
        if selection is None and not reference_cached:
            parts["teacher"] = b * f_reference
        parts["losses"] += 3 * pair_logits_flops(b, b, d_l) + pair_logits_flops(b, b, d_r)
    parts["total"] = sum(parts.values())
    return parts
