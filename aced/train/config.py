"""The training configuration tree: frozen, keyword-only, validated dataclasses.

Every field carries a ``help`` string (shown by ``aced train --help``).
``apply_overrides(config, ["selection.filter_ratio=0.5", ...])`` edits the
tree from ``key=value`` strings with type checking; ``PRESETS`` names the
four methods of the paper (IID, KD, ACID, ACED).
"""

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

METHODS = ("iid", "kd", "acid", "aced")


def _help(text: str, **kwargs: Any) -> Any:
    return field(metadata={"help": text}, **kwargs)


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} must be one of {', '.join(map(repr, choices))}")


def _check_positive(name: str, value: int | float, *, zero_ok: bool = False) -> None:
    if value < 0 or (value == 0 and not zero_ok):
        raise ValueError(f"{name}={value} must be {'>= 0' if zero_ok else '> 0'}")


def _check_literals(config: Any) -> None:
    """Validate every ``Literal[...]`` field of a config dataclass."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        hint = hints[f.name]
        if typing.get_origin(hint) is Literal:
            _check_choice(f.name, getattr(config, f.name), typing.get_args(hint))


@dataclass(frozen=True, kw_only=True)
class SelectionConfig:
    """How the sub-batch is chosen from the super-batch (ACID / ACED only)."""

    score: Literal["learnability", "easy_reference", "hard_learner"] = _help(
        "pair score: learner loss - reference loss, -reference loss, or learner loss",
        default="learnability",
    )
    selection: Literal["joint", "independent"] = _help(
        "JEST joint (chunked, conditional) selection or independent per-example top-k",
        default="joint",
    )
    filter_ratio: float = _help(
        "f: fraction of the super-batch discarded; sub-batch b = (1 - f) * B", default=0.8
    )
    n_chunks: int = _help("chunks the joint selection builds the sub-batch in", default=16)
    scope: Literal["global", "local"] = _help(
        "global: select over the whole super-batch (embeddings all-gathered); "
        "local: each device selects from its own shard",
        default="global",
    )
    implementation: Literal["auto", "dense", "blocked"] = _help(
        "dense B x B score matrix, the blocked Pallas kernel (O(B d) memory), "
        "or auto (blocked above `blocked_threshold`)",
        default="auto",
    )
    blocked_threshold: int = _help("auto switches to blocked above this B", default=8192)
    greedy: bool = _help("take the top chunk instead of sampling (no Gumbel noise)", default=False)
    interpret: bool = _help(
        "run the Pallas kernel in interpret mode (required on CPU)", default=True
    )

    def __post_init__(self) -> None:
        _check_literals(self)
        if not 0.0 <= self.filter_ratio < 1.0:
            raise ValueError(f"filter_ratio={self.filter_ratio} must be in [0, 1)")
        if self.n_chunks < 1:
            raise ValueError(f"n_chunks={self.n_chunks} must be >= 1")


@dataclass(frozen=True, kw_only=True)
class DistillConfig:
    """The explicit distillation term ``kd_weight * KD(teacher, student)`` (KD / ACED)."""

    loss: Literal["softmax", "sigmoid", "feature"] = _help(
        "softmax (open_clip soft CE), sigmoid (pair-wise BCE) or feature matching",
        default="softmax",
    )
    weight: float = _help("lambda: weight of the KD term (0 for IID / ACID)", default=0.0)
    temperature: float = _help("tau dividing student and teacher logits", default=1.0)
    batch: Literal["selected", "iid"] = _help(
        "selected: KD on the curated sub-batch (ACIDistill); iid: on a separate "
        "uniformly drawn sub-batch (IIDistill)",
        default="selected",
    )
    feature_kind: Literal["cosine", "l2"] = _help("distance used by feature KD", default="cosine")

    def __post_init__(self) -> None:
        _check_literals(self)
        _check_positive("distill.weight", self.weight, zero_ok=True)
        _check_positive("distill.temperature", self.temperature)


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """optax AdamW with linear warm-up and cosine decay, and global-norm clipping."""

    learning_rate: float = _help("peak learning rate", default=1e-3)
    warmup_steps: int = _help("linear warm-up steps", default=50)
    decay_steps: int = _help("cosine decay length (0: constant after warm-up)", default=0)
    weight_decay: float = _help("decoupled weight decay", default=1e-4)
    b1: float = _help("Adam beta1", default=0.9)
    b2: float = _help("Adam beta2", default=0.95)
    eps: float = _help("Adam epsilon", default=1e-8)
    grad_clip_norm: float = _help("clip gradients to this global norm (0: off)", default=1.0)

    def __post_init__(self) -> None:
        _check_positive("optim.learning_rate", self.learning_rate)
        _check_positive("optim.warmup_steps", self.warmup_steps, zero_ok=True)
        _check_positive("optim.decay_steps", self.decay_steps, zero_ok=True)
        _check_positive("optim.weight_decay", self.weight_decay, zero_ok=True)
        _check_positive("optim.grad_clip_norm", self.grad_clip_norm, zero_ok=True)


@dataclass(frozen=True, kw_only=True)
class StepConfig:
    """Everything one `train_step` needs to know: the method and its losses."""

    method: Literal["iid", "kd", "acid", "aced"] = _help(
        "iid: random sub-batch; kd: random sub-batch + KD; acid: curated sub-batch; "
        "aced: curated sub-batch + KD",
        default="acid",
    )
    selection: SelectionConfig = _help("sub-batch selection", default_factory=SelectionConfig)
    distill: DistillConfig = _help("distillation term", default_factory=DistillConfig)
    contrastive: Literal["sigmoid", "softmax"] = _help(
        "learner's contrastive loss: SigLIP sigmoid or CLIP softmax", default="sigmoid"
    )
    sharded_loss: Literal["ring", "all_gather"] = _help(
        "how the sigmoid loss crosses devices: ppermute ring or all-gather "
        "(the softmax loss always all-gathers)",
        default="ring",
    )
    reference_embeddings: Literal["online", "cached"] = _help(
        "online: embed the super-batch with the reference every step; cached: "
        "precomputed once per example (the reference is frozen)",
        default="online",
    )
    optim: OptimConfig = _help("optimiser", default_factory=OptimConfig)

    def __post_init__(self) -> None:
        _check_literals(self)
        if self.uses_kd and self.distill.weight == 0:
            raise ValueError(
                f"method={self.method!r} distils: set distill.weight > 0 "
                "(or use method='iid' / 'acid' for no KD term)"
            )
        if not self.uses_kd and self.distill.weight != 0:
            raise ValueError(
                f"method={self.method!r} has no KD term but distill.weight="
                f"{self.distill.weight}: use method='kd' / 'aced', or set distill.weight=0"
            )

    @property
    def uses_selection(self) -> bool:
        return self.method in ("acid", "aced")

    @property
    def uses_kd(self) -> bool:
        return self.method in ("kd", "aced")

    def sub_batch_size(self, super_batch: int) -> int:
        """b = round((1 - f) * B); every method trains on b examples per step."""
        return int(round((1.0 - self.selection.filter_ratio) * super_batch))


def _coerce(name: str, text: str, hint: Any) -> Any:
    """Parse ``text`` as the type ``hint`` of field ``name``, or explain what is expected."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        _check_choice(name, text, choices)
        return text
    if origin in (typing.Union, types.UnionType):
        options = [h for h in typing.get_args(hint) if h is not type(None)]
        if text.lower() in ("none", "null") and len(options) < len(typing.get_args(hint)):
            return None
        return _coerce(name, text, options[0])
    if hint is bool:
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"{name}={text!r} must be a boolean (true / false)")
    if hint in (int, float):
        try:
            value = hint(text) if hint is float else int(text, 0)
        except ValueError:
            raise ValueError(f"{name}={text!r} must be {'an integer' if hint is int else 'a number'}")
        return value
    if hint is str:
        return text
    raise ValueError(f"{name} cannot be set from the command line (type {hint})")


def config_fields(config: Any, prefix: str = "") -> dict[str, tuple[Any, str, Any]]:
    """Flatten a config tree: ``{"a.b": (value, help, type hint)}`` for every leaf field."""
    out = {}
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out.update(config_fields(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = (value, f.metadata.get("help", ""), hints[f.name])
    return out


def apply_overrides(config: Any, overrides: list[str]) -> Any:
    """Return ``config`` with ``key=value`` overrides applied (dotted keys, typed values).

    All overrides are applied at once and each config node is validated once,
    with every new value in place, so the order of the overrides does not
    matter (``method=iid distill.weight=0`` works either way round).
    """
    leaves = config_fields(config)
    values = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must look like key=value, e.g. selection.filter_ratio=0.5")
        if key not in leaves:
            close = [k for k in leaves if k.split(".")[-1] == key.split(".")[-1]]
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown config key {key!r}{hint} (`aced train --help` lists them)")
        values[key] = _coerce(key, text, leaves[key][2])
    return _rebuild(config, values, "")


def _rebuild(config: Any, values: dict[str, Any], prefix: str) -> Any:
    """``config`` with the leaves named in `values` replaced, children before parents."""
    changes = {}
    for f in dataclasses.fields(config):
        key, value = prefix + f.name, getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            if any(k.startswith(key + ".") for k in values):
                changes[f.name] = _rebuild(value, values, key + ".")
        elif key in values:
            changes[f.name] = values[key]
    return dataclasses.replace(config, **changes) if changes else config


def method_preset(method: str, **step_fields: Any) -> StepConfig:
    """A `StepConfig` for one of the paper's methods with its defaults (f = 0.8, lambda = 1)."""
    _check_choice("method", method, METHODS)
    distill = DistillConfig(weight=1.0 if method in ("kd", "aced") else 0.0)
    return StepConfig(method=method, distill=distill, **step_fields)
