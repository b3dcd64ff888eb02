"""The one override mechanism of the configuration tree: help, checks, typed edits, JSON.

Every config is a frozen, keyword-only dataclass whose fields carry a
``help`` string (shown by ``aced train --help``); a field that names a
registered choice (a pair score, a selection rule, a KD loss, ...) also
carries its registry, so validation and ``--help`` list whatever is
registered at the time. `updated` edits a tree from typed values,
`apply_overrides` from ``key=value`` strings (the CLI); both apply every
change at once, so their order does not matter. `to_dict` / `from_dict`
turn a tree into JSON and back (checkpoints store it); `from_dict` also
reads run directories written before field renames (`migrate`).
"""

import dataclasses
import types
import typing
from collections.abc import Iterable
from dataclasses import field
from typing import Any, Literal


def help_field(text: str, *, registry: tuple[dict, str] | None = None, **kwargs: Any) -> Any:
    """A dataclass field with its ``--help`` text; `registry` is ``(dict, kind)`` for a named choice."""
    metadata = {"help": text}
    if registry is not None:
        metadata["registry"] = registry
    return field(metadata=metadata, **kwargs)


def check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} must be one of {', '.join(map(repr, choices))}")


def check_positive(name: str, value: int | float, *, zero_ok: bool = False) -> None:
    if value < 0 or (value == 0 and not zero_ok):
        raise ValueError(f"{name}={value} must be {'>= 0' if zero_ok else '> 0'}")


def field_hint(config_type: type, f: dataclasses.Field) -> Any:
    """A field's type; for a registry field, a ``Literal`` of the names registered now."""
    if "registry" in f.metadata:
        return Literal[tuple(f.metadata["registry"][0])]
    return typing.get_type_hints(config_type)[f.name]


def check_fields(config: Any, prefix: str = "") -> None:
    """Validate every ``Literal[...]`` and registry field of a config dataclass."""
    for f in dataclasses.fields(config):
        if "registry" in f.metadata:
            registry, kind = f.metadata["registry"]
            if getattr(config, f.name) not in registry:
                raise ValueError(
                    f"{prefix}{f.name}={getattr(config, f.name)!r} is not a registered {kind}; "
                    f"registered: {', '.join(registry)}"
                )
            continue
        hint = field_hint(type(config), f)
        if typing.get_origin(hint) is Literal:
            check_choice(prefix + f.name, getattr(config, f.name), typing.get_args(hint))


def _coerce(name: str, text: str, hint: Any) -> Any:
    """Parse ``text`` as the type ``hint`` of field ``name``, or explain what is expected."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        check_choice(name, text, choices)
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
            kind = "an integer" if hint is int else "a number"
            raise ValueError(f"{name}={text!r} must be {kind}") from None
        return value
    if hint is str:
        return text
    raise ValueError(f"{name} cannot be set from the command line (type {hint})")


def config_fields(config: Any, prefix: str = "") -> dict[str, tuple[Any, str, Any]]:
    """Flatten a config tree: ``{"a.b": (value, help, type hint)}`` for every leaf field."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out.update(config_fields(value, f"{prefix}{f.name}."))
        else:
            hint = field_hint(type(config), f)
            out[f"{prefix}{f.name}"] = (value, f.metadata.get("help", ""), hint)
    return out


def _check_keys(config: Any, keys: Iterable[str]) -> dict[str, tuple[Any, str, Any]]:
    leaves = config_fields(config)
    for key in keys:
        if key not in leaves:
            close = [k for k in leaves if k.split(".")[-1] == key.split(".")[-1]]
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown config key {key!r}{hint} (`aced train --help` lists them)")
    return leaves


def updated(config: Any, values: dict[str, Any]) -> Any:
    """`config` with the dotted leaves in `values` replaced by typed values, all at once.

    Each config node is rebuilt (and validated) once with every new value in
    place, so ``{"step.method": "iid", "step.distill.weight": 0.0}`` works in
    either order. ``updated(run, {"step.selection.filter_ratio": 0.5})``.
    """
    _check_keys(config, values)
    return _rebuild(config, values, "")


def apply_overrides(config: Any, overrides: list[str]) -> Any:
    """`updated` from ``key=value`` strings (dotted keys, values parsed by the field's type)."""
    pairs = []
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(
                f"override {item!r} must look like key=value, e.g. step.selection.filter_ratio=0.5"
            )
        pairs.append((key, text))
    leaves = _check_keys(config, [key for key, _ in pairs])
    return updated(config, {key: _coerce(key, text, leaves[key][2]) for key, text in pairs})


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


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-serialisable dict of a config tree; inverse of `from_dict`."""
    return dataclasses.asdict(config)


# Fields renamed since run directories were first written: the old layout -> the new.
_OLD_RULES = {
    ("joint", False): "jest",
    ("joint", True): "greedy",
    ("independent", False): "independent",
    ("independent", True): "independent_greedy",
}


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """A `RunConfig` / `StepConfig` dict in the current layout (a copy; the input is unchanged).

    Run directories written before the registries hold
    ``step.selection.selection`` + ``step.selection.greedy`` (now
    ``step.selection.rule``) and ``step.distill.feature_kind`` (now the
    ``feature`` / ``feature_l2`` entries of ``step.distill.loss``).
    """
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    step = data.get("step", data)
    if step is not data:
        step = data["step"] = {k: dict(v) if isinstance(v, dict) else v for k, v in step.items()}
    selection, distill = step.get("selection"), step.get("distill")
    if isinstance(selection, dict) and ("selection" in selection or "greedy" in selection):
        old = (selection.pop("selection", "joint"), bool(selection.pop("greedy", False)))
        selection["rule"] = _OLD_RULES.get(old, old[0])
    if isinstance(distill, dict) and "feature_kind" in distill:
        if distill.pop("feature_kind") == "l2" and distill.get("loss") == "feature":
            distill["loss"] = "feature_l2"
    return data


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a config tree of type `cls` from `to_dict`'s output, validating every field."""
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__} expects a JSON object, got {type(data).__name__}")
    return _from_dict(cls, migrate(data))


def _from_dict(cls: type, data: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; known: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ValueError(f"{cls.__name__}.{name} expects a JSON object, got {value!r}")
            value = _from_dict(hint, value)
        elif not _matches(value, hint):
            raise ValueError(f"{cls.__name__}.{name}={value!r} does not have type {hint}")
        kwargs[name] = value
    return cls(**kwargs)


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return value in typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)
