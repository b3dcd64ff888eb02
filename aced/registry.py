"""One small helper for the registries of named method choices (scores, rules, KD losses).

Each registry is a plain ``dict[str, Entry]``; `register` adds an entry from
user code and `lookup` turns an unknown name into an error listing the
registered ones. Nothing falls through to a default.
"""

from typing import TypeVar

Entry = TypeVar("Entry")


def register(
    registry: dict[str, Entry], kind: str, name: str, entry: Entry, *, overwrite: bool = False
) -> Entry:
    """Add `entry` under `name`; re-registering a name needs ``overwrite=True``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a {kind} needs a non-empty name, got {name!r}")
    if name in registry and not overwrite and registry[name] != entry:
        raise ValueError(
            f"{kind} {name!r} is already registered; pass overwrite=True to replace it"
        )
    registry[name] = entry
    return entry


def lookup(registry: dict[str, Entry], kind: str, name: "str | Entry") -> Entry:
    """The entry named `name` (an entry passes through), or a ValueError naming the known ones."""
    if not isinstance(name, str):
        return name
    if name not in registry:
        raise ValueError(f"{kind} {name!r} is unknown; registered: {', '.join(registry)}")
    return registry[name]
