"""What curation keeps and rejects: every example's own scores under a learner and a
reference (``aced score``), and a contact sheet of the highest- and lowest-scoring pairs.

For each example i: ``loss/learner`` and ``loss/reference``, its own SigLIP pair
loss ``l_ii = -log sigmoid(t cos(zimg_i, ztxt_i) + b)`` under each model, and
``score/<name>`` for every registered pair score (`aced.selection.PAIR_SCORES`:
learnability = learner loss - reference loss, easy_reference = -reference loss,
hard_learner = learner loss), the diagonal that the independent selection
samples from (`aced.selection.per_example_scores`). Higher scores are
selected first.
"""

import pathlib
import textwrap
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from aced.eval.evaluate import embed_images, embed_texts
from aced.selection import PAIR_SCORES, per_example_scores
from aced.selection.scores import positive_pair_losses
from aced.types import Embedded


def _view(model: Any, tokenizer, images: np.ndarray, captions: list[str], batch: int) -> Embedded:
    channels = model.config.image.channels
    zimg = jnp.asarray(embed_images(model, images, channels, batch))
    ztxt = jnp.asarray(embed_texts(model, tokenizer(captions), batch))
    return Embedded(zimg, ztxt, model.temperature, model.bias)


def score_examples(
    learner: Any,
    learner_tokenizer,
    reference: Any,
    reference_tokenizer,
    images: np.ndarray,
    captions: Sequence[str],
    *,
    batch_size: int = 256,
) -> dict[str, np.ndarray]:
    """Per-example losses and pair scores (module docstring) of uint8 `images` (n, H, W, C)
    at the learner's size and their `captions`; each model reads them through its own
    tokenizer (the reference's images are resized to its size first when it differs)."""
    from aced.data.images import resize_center_crop

    captions = list(captions)
    views = []
    for model, tokenizer in ((learner, learner_tokenizer), (reference, reference_tokenizer)):
        size, channels = model.config.image.image_size, model.config.image.channels
        own = images
        if images.shape[1] != size or images.shape[-1] != channels:
            from PIL import Image

            own = np.stack(
                [resize_center_crop(Image.fromarray(im.squeeze()), size, channels) for im in images]
            )
        views.append(_view(model, tokenizer, own, captions, batch_size))
    out = {
        "loss/learner": np.asarray(positive_pair_losses(views[0])),
        "loss/reference": np.asarray(positive_pair_losses(views[1])),
    }
    for name in PAIR_SCORES:
        out[f"score/{name}"] = np.asarray(per_example_scores(*views, name))
    return out


def contact_sheet(
    images: np.ndarray,
    captions: Sequence[str],
    scores: np.ndarray,
    out: str | pathlib.Path,
    *,
    per_side: int = 8,
    title: str = "score",
) -> pathlib.Path:
    """A PNG of the `per_side` highest- (top row) and lowest-scoring (bottom row)
    image-caption pairs, each with its caption and score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(-scores, kind="stable")
    per_side = min(per_side, len(order) // 2 or 1)
    rows = [("highest", order[:per_side]), ("lowest", order[::-1][:per_side])]
    fig, axes = plt.subplots(2, per_side, figsize=(2.4 * per_side, 6.4), squeeze=False)
    for r, (label, picks) in enumerate(rows):
        for c in range(per_side):
            ax = axes[r][c]
            ax.axis("off")
            if c >= len(picks):
                continue
            i = picks[c]
            ax.imshow(images[i].squeeze(), cmap="gray" if images.shape[-1] == 1 else None)
            caption = "\n".join(textwrap.wrap(str(captions[i]), 24)[:3])
            ax.set_title(f"{label} {title} {scores[i]:.2f}\n{caption}", fontsize=7)
    fig.tight_layout()
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
