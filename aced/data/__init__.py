"""Data: built-in Fashion-MNIST scenes, tokenizers (ours, SentencePiece, Hugging Face
checkpoints'), HF-datasets loaders, batching.

See ``docs/data.md``. The loaders of `aced.data.hf` import Hugging Face
`datasets` on first use only.
"""

from aced.data.batching import (
    BatchIterator,
    ExampleSource,
    IteratorState,
    LoadedExamples,
    SceneSource,
)
from aced.data.captions import COARSE_NAMES, COARSE_OF_CLASS, FAMILIES, position_names
from aced.data.fashion_mnist import (
    CLASS_NAMES,
    NUM_CLASSES,
    load_fashion_mnist,
    load_fashion_mnist_hub,
)
from aced.data.hf_tokenizer import load_hf_tokenizer, load_sentencepiece
from aced.data.images import BadImageError, decode_image, resize_center_crop, to_model_images
from aced.data.scene_layouts import QUALITY, QUALITY_NAMES, SceneConfig, SceneSplit
from aced.data.scene_noise import WebNoise, add_web_noise
from aced.data.scenes import curated_split, eval_split, make_scenes, web_split
from aced.data.tokenize import (
    TextTokenizer,
    build_word_tokenizer,
    builtin_tokenizer,
    canonicalize_text,
    load_tokenizer,
    save_tokenizer,
    text_normalizer,
)

_HF_NAMES = ("ImageTextDataset", "load_csv", "load_imagefolder", "load_parquet", "load_webdataset")


def __getattr__(name: str):
    if name in _HF_NAMES:
        from aced.data import hf

        return getattr(hf, name)
    raise AttributeError(f"module 'aced.data' has no attribute {name!r}")


__all__ = [
    "BadImageError",
    "BatchIterator",
    "CLASS_NAMES",
    "COARSE_NAMES",
    "COARSE_OF_CLASS",
    "ExampleSource",
    "FAMILIES",
    "IteratorState",
    "LoadedExamples",
    "NUM_CLASSES",
    "QUALITY",
    "QUALITY_NAMES",
    "SceneConfig",
    "SceneSource",
    "SceneSplit",
    "TextTokenizer",
    "WebNoise",
    "add_web_noise",
    "build_word_tokenizer",
    "builtin_tokenizer",
    "canonicalize_text",
    "curated_split",
    "decode_image",
    "eval_split",
    "load_fashion_mnist",
    "load_fashion_mnist_hub",
    "load_hf_tokenizer",
    "load_sentencepiece",
    "load_tokenizer",
    "make_scenes",
    "position_names",
    "resize_center_crop",
    "save_tokenizer",
    "text_normalizer",
    "to_model_images",
    "web_split",
    *_HF_NAMES,
]
