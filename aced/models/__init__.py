"""Models: ViT image tower, text tower, SigLIP two-tower; they embed, never compute losses."""

from aced.models.hf_siglip import from_hf_siglip
from aced.models.serialization import load_two_tower, model_checksum, save_two_tower
from aced.models.text import TextConfig, TextEncoder
from aced.models.two_tower import TwoTower, TwoTowerConfig
from aced.models.variants import decode_variant
from aced.models.vit import ViT, ViTConfig

__all__ = [
    "TextConfig",
    "TextEncoder",
    "TwoTower",
    "TwoTowerConfig",
    "ViT",
    "ViTConfig",
    "decode_variant",
    "from_hf_siglip",
    "load_two_tower",
    "model_checksum",
    "save_two_tower",
]
