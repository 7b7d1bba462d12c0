"""Config dataclasses from plain dicts: checkpoints and YAML hold dicts (weights_only-safe), code wants dataclasses."""

from __future__ import annotations

from dataclasses import fields, is_dataclass


def from_dict(cls, value):
    """A `cls` instance from an instance (returned as is), a dict of its fields (lists become tuples) or None."""
    if value is None or is_dataclass(value):
        return value
    names = {f.name for f in fields(cls)}
    unknown = set(value) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}; valid: {sorted(names)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
