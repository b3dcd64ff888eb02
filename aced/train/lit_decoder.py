"""LiT-Decoder: train a text decoder on a frozen aced image tower, then score it.

`train_lit_decoder` loads the image tower of a run or model directory
(`load_encoder`), builds the captioning and question-answering sequences of
the curated split (`aced.eval.lit_tasks`), and trains a `TextDecoder` by
teacher forcing on the tower's patch tokens. The tower is frozen: it is an
argument of the step, its tokens pass through ``stop_gradient`` and only the
decoder is differentiated and updated. Batches are drawn from ``(seed, step)``
alone, so a run stopped at any point and started again with the same command
resumes from its last checkpoint (``<out>/checkpoint/``: the decoder and
optimiser leaves by ``eqx.tree_serialise_leaves``, and the step, written to
``checkpoint.partial/`` and renamed whole) to the same parameters, bit for bit.
At the end it decodes the eval split's tasks (greedy, or beam search) and
writes the scores to ``<out>/lit_decoder.json``.
"""

import dataclasses
import json
import os
import pathlib
import shutil
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from aced.data.images import to_model_images
from aced.data.scene_layouts import SceneConfig
from aced.data.scenes import curated_split, eval_split
from aced.eval.lit_tasks import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    DecoderVocab,
    answer_scores,
    build_examples,
    caption_scores,
)
from aced.models import ViT
from aced.models.decoder import DecoderConfig, TextDecoder, beam_search, greedy_decode
from aced.models.decoder import teacher_forcing_loss as _sequence_loss
from aced.train.config.lit import LitConfig
from aced.train.learners import load_learner

RESULTS_FILE = "lit_decoder.json"
CHECKPOINT = "checkpoint"


def load_encoder(path: str | os.PathLike) -> ViT:
    """The image tower of a run directory, checkpoint or model directory of aced."""
    try:
        model, _, _ = load_learner(path)
    except FileNotFoundError as error:
        raise ValueError(
            f"--encoder {path} holds no image tower: {error}. Pass the run directory of "
            "`aced train` (or its model/ folder, or a checkpoint) whose image tower to decode from"
        ) from None
    return model.image


def check_encoder(encoder: ViT, scenes: SceneConfig) -> None:
    size = encoder.config.image_size
    if (size, size) != scenes.image_size:
        raise ValueError(
            f"the encoder takes {size}x{size} images but the scenes are "
            f"{scenes.image_size[0]}x{scenes.image_size[1]}: use an encoder trained on the "
            "built-in scenes (model.image_size is their side)"
        )


def decoder_config(config: LitConfig, vocab: DecoderVocab, length: int, encoder: ViT):
    return DecoderConfig(
        vocab_size=vocab.size, max_len=length, width=config.width, depth=config.depth,
        mlp_dim=config.mlp_dim, num_heads=config.num_heads,
        encoder_width=encoder.config.width, bos_id=BOS_ID, eos_id=EOS_ID, pad_id=PAD_ID,
    )  # fmt: skip


def patch_tokens(encoder: ViT, images: jax.Array) -> jax.Array:
    """The frozen tower's tokens (n, P, width): no gradient flows back into it."""
    return jax.lax.stop_gradient(jax.vmap(lambda x: encoder(x, tokens=True))(images))


def batch_loss(decoder, encoder: ViT, images, tokens, prompt_len) -> jax.Array:
    """Mean teacher-forcing loss of a batch of sequences on the encoder's patch tokens."""
    memory = patch_tokens(encoder, images)
    return jnp.mean(
        jax.vmap(_sequence_loss, in_axes=(None, 0, 0, 0))(decoder, tokens, memory, prompt_len)
    )


def make_optimizer(config: LitConfig) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, min(config.warmup_steps, config.steps - 1), config.steps
    )
    return optax.adamw(schedule, weight_decay=config.weight_decay)


@eqx.filter_jit
def train_step(decoder, opt_state, encoder, images, tokens, prompt_len, optimizer):
    loss, grads = eqx.filter_value_and_grad(batch_loss)(
        decoder, encoder, images, tokens, prompt_len
    )
    with jax.numpy_dtype_promotion("standard"):
        updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(decoder, eqx.is_array))
    return eqx.apply_updates(decoder, updates), opt_state, loss


def _batch(config: LitConfig, step: int, n: int) -> np.ndarray:
    return np.random.default_rng((config.seed, step)).integers(0, n, config.batch_size)


def save(out: pathlib.Path, decoder, opt_state, step: int, about: dict[str, Any]) -> None:
    """``<out>/checkpoint/`` replaced whole: the leaves, then a record, then one rename."""
    partial, final = out / f"{CHECKPOINT}.partial", out / CHECKPOINT
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    eqx.tree_serialise_leaves(partial / "state.eqx", (decoder, opt_state))
    (partial / "record.json").write_text(json.dumps({"step": step, **about}))
    old = out / f"{CHECKPOINT}.old"
    if final.exists():
        final.rename(old)
    partial.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def restore(out: pathlib.Path, like: tuple, about: dict[str, Any]) -> tuple[tuple, int]:
    """The saved (decoder, opt_state) and step, or `like` and 0 when nothing is saved.

    A save killed between its two renames left only ``checkpoint.old/``: that is read.
    """
    final = out / CHECKPOINT
    if not (final / "record.json").is_file():
        final = out / f"{CHECKPOINT}.old"
        if not (final / "record.json").is_file():
            return like, 0
    record = json.loads((final / "record.json").read_text())
    differ = sorted(k for k in {*about, *record} - {"step"} if record.get(k) != about.get(k))
    if differ:
        raise ValueError(
            f"{out} holds a LiT-Decoder run with other {', '.join(differ)}: pass another "
            "--out, or the same options as that run to resume it"
        )
    return eqx.tree_deserialise_leaves(final / "state.eqx", like), record["step"]


def decode(decoder, encoder, images, prompts, beam: int) -> jax.Array:
    memory = patch_tokens(encoder, images)
    if beam == 1:
        return jax.vmap(lambda m, p: greedy_decode(decoder, m, prompt=p))(memory, prompts)
    return jax.vmap(lambda m, p: beam_search(decoder, m, beam, prompt=p))(memory, prompts)


_decode = eqx.filter_jit(decode)


def evaluate_decoder(decoder, encoder: ViT, config: LitConfig, scenes: SceneConfig, vocab):
    """Decode every eval-split task and score it: captioning and question answering."""
    split = eval_split(config.eval_scenes, seed=config.data_seed, config=scenes)
    examples = build_examples(split, scenes, vocab, seed=config.data_seed + 1)
    prompts = np.where(
        np.arange(examples.tokens.shape[1]) < examples.prompt_len[:, None], examples.tokens, PAD_ID
    )
    images = to_model_images(split.images, encoder.config.channels)
    texts = []
    size = config.eval_batch_size
    for start in range(0, len(examples), size):
        rows = np.arange(start, min(start + size, len(examples)))
        padded = np.resize(rows, size)  # one shape: one compiled program
        out = np.asarray(_decode(decoder, encoder, jnp.asarray(images[examples.image[padded]]),
                                 jnp.asarray(prompts[padded]), config.beam))  # fmt: skip
        texts += [vocab.decode(out[i], int(examples.prompt_len[r])) for i, r in enumerate(rows)]
    caption = [i for i, t in enumerate(examples.task) if t == "caption"]
    other = [i for i, t in enumerate(examples.task) if t != "caption"]
    scores = {f"caption/{k}": v for k, v in caption_scores([texts[i] for i in caption],
                                                          split.layouts, scenes).items()}  # fmt: skip
    vqa = answer_scores([texts[i] for i in other], [examples.target[i] for i in other],
                        [examples.task[i] for i in other])  # fmt: skip
    scores |= {f"vqa/{k}": v for k, v in vqa.items()}
    samples = [{"task": examples.task[i], "target": examples.target[i], "output": texts[i]}
               for i in range(min(8, len(texts)))]  # fmt: skip
    return scores, samples


def train_lit_decoder(
    encoder_path: str | os.PathLike,
    out: str | os.PathLike,
    config: LitConfig = LitConfig(),
    *,
    vocab: DecoderVocab | None = None,
    scenes: SceneConfig = SceneConfig(),
    progress: bool = True,
) -> dict[str, Any]:
    """Train a decoder on the frozen image tower at `encoder_path`, score it, write the JSON.

    **Returns:** the results: the scores, the settings, samples of the outputs.
    """
    out = pathlib.Path(out)
    encoder = load_encoder(encoder_path)
    check_encoder(encoder, scenes)
    vocab = vocab or DecoderVocab.for_scenes(scenes)
    split = curated_split(config.train_scenes, seed=config.data_seed, config=scenes)
    examples = build_examples(split, scenes, vocab, seed=config.data_seed)
    images = to_model_images(split.images, encoder.config.channels)
    dconfig = decoder_config(config, vocab, examples.tokens.shape[1], encoder)
    decoder = TextDecoder(dconfig, key=jax.random.key(config.seed))
    optimizer = make_optimizer(config)
    opt_state = optimizer.init(eqx.filter(decoder, eqx.is_array))
    about = {
        "encoder": str(encoder_path),
        "config": dataclasses.asdict(config),
        "vocab": list(vocab.words),
    }
    (decoder, opt_state), start = restore(out, (decoder, opt_state), about)
    if start:
        print(f"aced lit-decoder: resuming {out} at step {start}")
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps,
               disable=not progress, desc="lit-decoder")  # fmt: skip
    loss = float("nan")
    for step in bar:
        rows = _batch(config, step, len(examples))
        decoder, opt_state, loss = train_step(
            decoder, opt_state, encoder, jnp.asarray(images[examples.image[rows]]),
            jnp.asarray(examples.tokens[rows]), jnp.asarray(examples.prompt_len[rows]), optimizer,
        )  # fmt: skip
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
            loss = float(loss)
            if not np.isfinite(loss):
                raise RuntimeError(f"the decoder's loss is {loss} at step {step + 1}: "
                                         "lower --learning-rate")  # fmt: skip
            save(out, decoder, opt_state, step + 1, about)
            bar.set_postfix(loss=f"{loss:.3f}")
    scores, samples = evaluate_decoder(decoder, encoder, config, scenes, vocab)
    results = {"scores": scores, "encoder": str(encoder_path), "config": dataclasses.asdict(config),
               "final_loss": float(loss), "samples": samples}  # fmt: skip
    tmp = out / f"{RESULTS_FILE}.tmp"
    tmp.write_text(json.dumps(results, indent=1))
    os.replace(tmp, out / RESULTS_FILE)
    return results


def format_results(scores: dict[str, float]) -> str:
    """The scores as a two-column table."""
    width = max(len(k) for k in scores)
    return "\n".join(f"{k:<{width}}  {v:8.4f}" for k, v in scores.items())
