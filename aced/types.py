"""jaxtyping aliases and the axis glossary used across aced.

Axis letters (used in every shape annotation):

- ``B``  super-batch size (examples scored for selection)
- ``b``  sub-batch size (examples trained on), ``b = (1 - f) * B``
- ``n``  any batch of examples (when B / b does not matter)
- ``D``  embedding width of the shared image-text space
- ``W``  a tower's hidden width; ``M`` its MLP width
- ``L``  tokens per caption; ``V`` vocabulary size
- ``P``  patches per image; ``H W C`` image height, width, channels (channels-last)
- ``k``  selected indices; ``c`` a chunk of them

Images are float, channels-last and already normalised; tokens are int32.
"""

import equinox as eqx
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray, Scalar, ScalarLike

Images = Float[Array, "n H W C"]
Tokens = Int[Array, "n L"]
Embeddings = Float[Array, "n D"]
PairMatrix = Float[Array, "n n"]
Indices = Int[Array, " k"]
Key = PRNGKeyArray


class Embedded(eqx.Module):
    """One model's view of a super-batch: what scores, kernels and KD losses read.

    **Fields:**

    - `zimg`, `ztxt`: L2-normalised image and text embeddings, (B, D); row i
      of each forms the positive pair i.
    - `t`: the temperature itself (``exp`` of the stored log-temperature).
    - `b`: the bias.
    """

    zimg: Float[Array, "B D"]
    ztxt: Float[Array, "B D"]
    t: Float[Array, ""]
    b: Float[Array, ""]


def check_views(*views: Embedded, names: tuple[str, ...] = ("learner", "reference")) -> None:
    """Eager checks of views of one super-batch: each (B, D) pair of equal shapes, one B for all.

    `names` label the views in the messages (their widths D may differ).
    """
    for name, view in zip(names, views):
        if view.zimg.shape != view.ztxt.shape:
            raise ValueError(
                f"{name} zimg {view.zimg.shape} and ztxt {view.ztxt.shape} must have the same "
                "shape (B, D)"
            )
    sizes = {view.zimg.shape[0] for view in views}
    if len(sizes) > 1:
        found = " vs ".join(f"B={view.zimg.shape[0]}" for view in views)
        raise ValueError(
            f"{' and '.join(names[: len(views)])} must embed the same super-batch: {found}"
        )


__all__ = [
    "Array",
    "Bool",
    "Embedded",
    "Embeddings",
    "Float",
    "Images",
    "Indices",
    "Int",
    "Key",
    "PairMatrix",
    "PRNGKeyArray",
    "Scalar",
    "ScalarLike",
    "Tokens",
    "check_views",
]
