"""Model sizes as variant strings, in the manner of big_vision's ``decode_variant``.

``"S/16"`` names a tower of size ``S`` with 16x16 patches; a text tower is named
without the patch suffix (``"S"``). One table serves both towers.

Sources of the table:

- ``Ti`` .. ``e``: big_vision ``big_vision/models/vit.py`` (``decode_variant``),
  itself from Table 2 of "Scaling Vision Transformers" (arXiv 2106.04560).
- ``So400m``: the shape-optimised ViT of "Getting ViT in Shape" (arXiv
  2305.13035), as in big_vision and the released SigLIP So400m checkpoints
  (width 1152, depth 27, MLP 4304, 16 heads).
- ``mu``, ``nano``, ``micro``: aced's own CPU-sized towers for smoke runs and
  tests (e.g. ``"mu/7"`` on 28x28 images); not from any paper.
"""

# name: (width, depth, mlp_dim, num_heads)
VARIANTS: dict[str, tuple[int, int, int, int]] = {
    "mu": (64, 2, 256, 2),
    "nano": (128, 4, 512, 4),
    "micro": (256, 6, 1024, 4),
    "Ti": (192, 12, 768, 3),
    "S": (384, 12, 1536, 6),
    "M": (512, 12, 2048, 8),
    "B": (768, 12, 3072, 12),
    "L": (1024, 24, 4096, 16),
    "So400m": (1152, 27, 4304, 16),
    "H": (1280, 32, 5120, 16),
    "g": (1408, 40, 6144, 16),
    "G": (1664, 48, 8192, 16),
    "e": (1792, 56, 15360, 16),
}


def decode_variant(variant: str) -> dict[str, int]:
    """Turn a variant string into tower hyper-parameters.

    **Arguments:**

    - `variant`: a size from `VARIANTS`, optionally followed by ``/patch``:
      ``"B"``, ``"B/16"``, ``"So400m/14"``, ``"mu/7"``.

    **Returns:** a dict with ``width``, ``depth``, ``mlp_dim``, ``num_heads`` and,
    when the string has a ``/patch`` suffix, ``patch_size``.
    """
    name, sep, patch = variant.partition("/")
    if name not in VARIANTS:
        raise ValueError(
            f"unknown variant {variant!r}: the size must be one of {sorted(VARIANTS)}, "
            "optionally followed by '/<patch size>' (e.g. 'S/16')"
        )
    width, depth, mlp_dim, num_heads = VARIANTS[name]
    params = {"width": width, "depth": depth, "mlp_dim": mlp_dim, "num_heads": num_heads}
    if sep:
        if not patch.isdigit() or int(patch) <= 0:
            raise ValueError(
                f"variant {variant!r} has patch size {patch!r}; write a positive integer "
                "after the '/', e.g. 'S/16'"
            )
        params["patch_size"] = int(patch)
    return params


def check_positive(**values: object) -> None:
    """Raise a clear error for any config field that is not a positive integer."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name}={value!r} must be a positive integer")
