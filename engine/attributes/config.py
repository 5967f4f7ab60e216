"""Configuration of ``zspace attributes``: every default once, light to import (no torch, no sklearn)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.config import config_from_dict


@dataclass
class AttributesConfig:
    n: int = 2000  # labelled train-split latents the readouts use (a seeded sample; all when fewer)
    seed: int = 0
    folds: int = 5  # cross-validation folds, grouped by identity where identities exist
    random_sets: int = 200  # random sets of non-dominant components the dominant ones are tested against
    min_count: int = 20  # an attribute needs this many positives and negatives among the rows, else skipped
    steps: tuple[float, ...] = (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0)  # traversal steps, in class-mean separations
    shown_starts: int = 5  # held-out test latents in each traversal figure, below the centre
    judged_starts: int = 100  # held-out test latents whose traversals the classifier judges, per attribute
    classifier: bool = True  # train the attribute classifier that judges traversals (and sampler quality)
    device: str = "auto"  # auto | cpu | cuda | cuda:N

    def __post_init__(self):
        self.steps = tuple(float(s) for s in self.steps)
        for name in ("n", "folds", "random_sets", "min_count", "judged_starts"):
            if getattr(self, name) < (2 if name in ("n", "folds") else 1):
                raise ValueError(f"{name} must be >= {2 if name in ('n', 'folds') else 1}, got {getattr(self, name)}")
        if self.shown_starts < 0:
            raise ValueError(f"shown_starts must be >= 0, got {self.shown_starts}")
        if len(self.steps) < 2 or 0.0 not in self.steps:
            raise ValueError(f"steps must hold at least two values including 0, got {self.steps}")

    @classmethod
    def from_dict(cls, d: dict) -> "AttributesConfig":
        return config_from_dict(cls, d, "attributes")


__all__ = ["AttributesConfig"]
