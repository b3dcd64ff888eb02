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

from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray, Scalar, ScalarLike

Images = Float[Array, "n H W C"]
Tokens = Int[Array, "n L"]
Embeddings = Float[Array, "n D"]
PairMatrix = Float[Array, "n n"]
Indices = Int[Array, " k"]
Key = PRNGKeyArray

__all__ = [
    "Array",
    "Bool",
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
]
