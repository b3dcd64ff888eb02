"""Checkpoint conversion, the library side of ``aced convert``.

``aced convert hf-siglip DIR OUT`` calls `convert_hf_siglip`: a transformers
``SiglipModel`` checkpoint becomes an aced checkpoint (``config.json`` with the
`TwoTowerConfig`, ``model.safetensors`` with path-named float32 arrays, plus
the tokenizer files), which `load_two_tower` reads back without unpickling
anything.
"""

import os
import pathlib

from aced.data.hf_tokenizer import TOKENIZER_FILES
from aced.models.hf_siglip import from_hf_siglip
from aced.models.serialization import load_two_tower, save_two_tower

__all__ = ["convert_hf_siglip", "load_two_tower", "save_two_tower"]


def convert_hf_siglip(
    src_dir: str | os.PathLike, out_dir: str | os.PathLike, *, overwrite: bool = False
) -> pathlib.Path:
    """Convert a transformers ``SiglipModel`` checkpoint into an aced checkpoint.

    **Arguments:**

    - `src_dir`: the transformers checkpoint (``config.json``, safetensors
      weights, tokenizer files).
    - `out_dir`: the aced checkpoint directory to write (atomically).
    - `overwrite`: replace an existing `out_dir` (otherwise an error).

    **Returns:** `out_dir`. ``load_two_tower(out_dir)`` gives the model and
    ``aced.data.load_hf_tokenizer(out_dir)`` its tokenizer.
    """
    src = pathlib.Path(src_dir)
    out = pathlib.Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=True or choose another path")
    model = from_hf_siglip(src)
    tokenizer_files = [src / name for name in TOKENIZER_FILES if (src / name).is_file()]
    return save_two_tower(model, out, overwrite=overwrite, extra_files=tokenizer_files)
