"""aced: active data curation as distillation for contrastive image-text pretraining.

Layers (imports point downwards only): ``train`` -> ``eval`` / ``data`` ->
``selection`` -> ``kernels`` -> ``losses`` -> ``models``; ``types`` and ``flops``
sit beside them. See ``README.md`` for the method and the public names.
"""

__version__ = "0.1.0"
