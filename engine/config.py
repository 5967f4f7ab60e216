"""One rule for every component's config dataclass: unknown keys are errors (nanoGPT-style)."""

from __future__ import annotations

from dataclasses import fields


def config_from_dict(cls, d: dict, what: str):
    """``cls(**d)``, refusing keys the dataclass does not have, naming them and what is allowed."""
    known = {f.name for f in fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"unknown {what} config keys {sorted(unknown)}; allowed: {sorted(known)}")
    return cls(**d)
